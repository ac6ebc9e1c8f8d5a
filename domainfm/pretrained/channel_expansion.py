"""Start a multispectral model from RGB weights: channel expansion of the input layer.

SoftCon (Wang, Albrecht & Zhu 2024, arXiv:2405.20462, Sec. "continual pretraining") builds
its 13-band Sentinel-2 models from RGB vision models (DINOv2 ViTs, ImageNet ResNet-50): the
weights are kept, and only the input layer's kernel ``(D, 3, *k)`` — the ViT's patch
projection, the CNN's first convolution — grows to the target bands ``(D, C, *k)``:

* the RGB slices go to the bands that see those colours: R → ``B04``, G → ``B03``,
  B → ``B02`` on Sentinel-2 (``rgb_bands``);
* every other band starts from the **mean RGB kernel** (``fill="mean"``) or from zeros
  (``fill="zeros"``: the expanded model then gives the RGB model's features on the RGB bands);
* with ``rescale`` (default) the whole kernel is multiplied by ``3 / C``, so an input equal
  in every band gives the RGB model's response (with ``"mean"``: ``sum_c w'_c = sum_rgb w``),
  the rescaling timm's ``adapt_input_conv`` applies.

The official repository (github.com/zhu-xlab/softcon, checked at b687e46) ships the
pretrained encoders but no pretraining code, so the fill and the rescaling are options, with
the defaults above.

Every expanded tensor is written into the load report (``report.adapted``, e.g.
``"channels B02<-B, B03<-G, B04<-R; new B01, B05, ... (mean of RGB); scaled by 3/13"``), and
the load is strict: anything else missing, unexpected or mismatched raises.

Two entry points:

* :func:`load_rgb_expanded` loads RGB weights into a built multispectral backbone;
* :class:`RGBExpandedBackbone` builds one for a ``domainfm fit`` config (a jsonargparse
  class from :func:`rgb_expanded_backbone`): the backbone it returns is the registered
  architecture itself, so checkpoints and exports keep that architecture's key layout::

      backbone:
        class_path: domainfm.pretrained.channel_expansion.RGBExpandedBackbone
        init_args:
          weights: /models/dinov2_vits14_rgb.pth      # a state dict in timm_vit's layout
          architecture: timm_vit
          kwargs: {img_size: 224, patch_size: 14, embed_dim: 384, depth: 12, num_heads: 6,
                   init_values: 1.0e-5}
          expansion:
            bands: [B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12]
          drop: [mask_token, head.*]

The RGB weights are a domainfm export or checkpoint of a 3-channel model, or a weights file
(``.pt``/``.pth``/``.bin``/``.safetensors``) holding a flat state dict in the backbone's own
key layout (e.g. timm's ``vit_small_patch14_dinov2`` for ``timm_vit``).

Shapes::

    expand_rgb_weight(weight (D, 3, *k), expansion)   ->   (D, len(expansion.bands), *k)

Example::

    >>> s2 = RGBExpansion(bands=SENTINEL2_L1C_BANDS)
    >>> w13 = expand_rgb_weight(rgb_vit.patch_embed.proj.weight, s2)
    >>> report = load_rgb_expanded(vit13, "exports/rgb_vit", s2)
    >>> report.adapted
    [('patch_embed.proj.weight', 'channels B02<-B, B03<-G, B04<-R; new B01, ... (mean of RGB);
      scaled by 3/13')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from jsonargparse import class_from_function
from torch import Tensor, nn

from domainfm.core.backbone import build_backbone
from domainfm.core.state_nesting import flat_state
from domainfm.pretrained.channels import adapt_input_channels
from domainfm.pretrained.load import read_backbone_source
from domainfm.pretrained.registry import split_dropped
from domainfm.pretrained.release_file import read_release_content
from domainfm.pretrained.report import LoadReport, load_state_dict_with_report

ExpansionFill = Literal["mean", "zeros"]
SENTINEL2_RGB: tuple[str, str, str] = ("B04", "B03", "B02")
"""The Sentinel-2 bands of R, G and B."""
RGB_NAMES = ("R", "G", "B")


@dataclass(frozen=True)
class RGBExpansion:
    """How an RGB input layer grows to ``bands`` (see the module docstring).

    Args:
        bands: the multispectral model's input bands, in order.
        rgb_bands: the bands R, G and B go to.
        fill: how the other bands start: ``"mean"`` of the RGB kernels or ``"zeros"``.
        rescale: multiply the expanded kernel by ``3 / len(bands)``.

    Raises:
        ValueError: ``rgb_bands`` is not 3 distinct names, ``bands`` is empty or repeats, or
            ``fill`` is unknown.
    """

    bands: Sequence[str]
    rgb_bands: Sequence[str] = SENTINEL2_RGB
    fill: ExpansionFill = "mean"
    rescale: bool = True

    def __post_init__(self) -> None:
        if len(self.rgb_bands) != 3 or len(set(self.rgb_bands)) != 3:
            raise ValueError(f"rgb_bands must name the bands of R, G, B, got {self.rgb_bands}")
        if not self.bands or len(set(self.bands)) != len(self.bands):
            raise ValueError(f"bands must be distinct names, got {list(self.bands)}")
        if self.fill not in ("mean", "zeros"):
            raise ValueError(f"fill must be 'mean' or 'zeros', got {self.fill!r}")

    def describe(self) -> str:
        """The load report's line, e.g. ``channels B04<-R, ...; new B01 (mean of RGB); scaled
        by 3/13``."""
        rgb = list(self.rgb_bands)
        mapped = ", ".join(f"{b}<-{RGB_NAMES[rgb.index(b)]}" for b in self.bands if b in rgb)
        new = [b for b in self.bands if b not in rgb]
        detail = f"channels {mapped or 'none'}"
        if new:
            what = "mean of RGB" if self.fill == "mean" else "zeros"
            detail += f"; new {', '.join(new)} ({what})"
        return detail + (f"; scaled by 3/{len(self.bands)}" if self.rescale else "")

    def expand_state(
        self, state: Mapping[str, Tensor], model_state: Mapping[str, Tensor]
    ) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
        """``state`` with every RGB input-layer tensor expanded: a tensor with 3 slices on
        axis 1 whose model tensor has ``len(bands)`` there, every other axis equal (the
        selection and mapping of :func:`~domainfm.pretrained.channels.adapt_input_channels`,
        R, G, B named ``rgb_bands``; then the rescaling).

        Returns:
            The new state dict and ``(key, description)`` per expanded tensor.

        Raises:
            ValueError: no tensor to expand.
        """
        try:
            out, adapted = adapt_input_channels(
                state,
                model_state,
                source=list(self.rgb_bands),
                target=list(self.bands),
                new_channel_init=self.fill,
            )
        except ValueError as err:
            raise ValueError(
                f"{err} (an RGB model's weights into a {len(self.bands)}-band model)"
            ) from err
        scale = 3.0 / len(self.bands) if self.rescale else 1.0
        for key, _ in adapted:
            out[key] = out[key] * scale
        return out, [(key, self.describe()) for key, _ in adapted]


def expand_rgb_weight(weight: Tensor, expansion: RGBExpansion) -> Tensor:
    """An RGB input kernel ``(D, 3, *k)`` expanded to ``(D, len(bands), *k)``.

    Raises:
        ValueError: ``weight`` has no 3 input channels.
    """
    if weight.ndim < 2 or weight.shape[1] != 3:
        raise ValueError(f"an RGB input kernel is (D, 3, ...), got {tuple(weight.shape)}")
    shape = (weight.shape[0], len(expansion.bands), *weight.shape[2:])
    target = {"weight": torch.empty(shape, device="meta")}  # the shape only
    return expansion.expand_state({"weight": weight}, target)[0]["weight"]


def read_rgb_state(weights: str | Path) -> tuple[dict[str, Tensor], str]:
    """The state dict and source name of RGB weights: a domainfm export or checkpoint, or a
    weights file holding a flat state dict (see the module docstring)."""
    content = read_release_content(weights)
    if content is None:
        _, state, source = read_backbone_source(weights)
        return state, source
    return dict(flat_state(content)), str(weights)


def load_rgb_expanded(
    backbone: nn.Module,
    weights: str | Path,
    expansion: RGBExpansion,
    *,
    drop: Iterable[str] = (),
    allow_missing: Iterable[str] = (),
) -> LoadReport:
    """Load RGB ``weights`` into the multispectral ``backbone`` (``in_chans=len(bands)``),
    its input layer expanded (:meth:`RGBExpansion.expand_state`), strictly.

    Args:
        backbone: the model to fill.
        weights: the RGB weights (module docstring).
        expansion: the bands and how the input layer grows to them.
        drop: fnmatch patterns of weight keys the backbone lacks by design (e.g. ``head.*``),
            listed in the report as dropped.
        allow_missing: fnmatch patterns of backbone keys allowed to stay initialized.

    Returns:
        The load report, the expanded tensors in ``report.adapted``.

    Raises:
        CheckpointMismatchError: with the report table, if the load is not clean.
        ValueError: nothing to expand (see :meth:`RGBExpansion.expand_state`).
    """
    state, source = read_rgb_state(weights)
    state, dropped = split_dropped(state, drop)
    state, adapted = expansion.expand_state(state, backbone.state_dict())
    report = load_state_dict_with_report(backbone, state, source=source)
    report.adapted = adapted
    report.dropped = dropped
    return report.check(allow_missing)


def rgb_expanded_backbone(
    *,
    weights: str,
    architecture: str,
    kwargs: Mapping[str, Any],
    expansion: RGBExpansion,
    drop: Sequence[str] = (),
    allow_missing: Sequence[str] = (),
) -> nn.Module:
    """The registered backbone ``architecture`` built with ``kwargs`` and
    ``in_chans=len(expansion.bands)``, started from the RGB ``weights``
    (:func:`load_rgb_expanded`; the report's summary and expansion are printed).

    Raises:
        CheckpointMismatchError: with the report table, if the load is not clean.
    """
    in_chans = len(expansion.bands)
    model = build_backbone(architecture, {**kwargs, "in_chans": in_chans}, source=weights)
    report = load_rgb_expanded(model, weights, expansion, drop=drop, allow_missing=allow_missing)
    print(f"RGBExpandedBackbone: {report.summary()}")
    for key, detail in report.adapted:
        print(f"RGBExpandedBackbone: adapted {key}: {detail}")
    return model


RGBExpandedBackbone = class_from_function(rgb_expanded_backbone, name="RGBExpandedBackbone")
""":func:`rgb_expanded_backbone` as a class, for the ``backbone`` of a ``domainfm fit``
config (jsonargparse instantiates it by calling the function)."""
