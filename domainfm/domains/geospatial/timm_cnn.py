"""Any timm CNN (ResNet, ConvNeXt, RegNet, EfficientNet, ...) with any number of input bands
behind the backbone contract.

An adapter, not a fork: the network is ``timm.create_model(model_name, pretrained=False,
in_chans=N, features_only=True, out_indices=...)`` held as ``encoder`` (nothing is ever
downloaded), so this backbone's keys are the timm feature extractor's own keys under the
prefix ``encoder.``. For a ResNet these are exactly the keys of a plain
``timm.create_model("resnet50")`` (and of torchvision's ``resnet50``, and of the TorchGeo /
SSL4EO-S12 Sentinel-2 ResNets) without the classifier ``fc.*``; :func:`timm_to_backbone_keys`
does that rename for any timm CNN (it also undoes the ``stages.0`` → ``stages_0`` flattening
timm's feature wrapper applies to ``nn.Sequential`` children, e.g. in a ConvNeXt).
The ResNet is He et al. 2016, "Deep residual learning for image recognition"
(arXiv:1512.03385).

Shapes (``S`` selected stages, stage ``i`` with ``C_i`` channels and total stride ``s_i``;
for ``resnet50`` ``C = (64, 256, 512, 1024, 2048)``, ``s = (2, 4, 8, 16, 32)``)::

    x                          (B, in_chans, H, W), H and W divisible by s_{S-1}
    forward_intermediates(x)   S maps (B, C_i, H / s_i, W / s_i), shallow→deep
    forward_tokens(x)          tokens (B, N, C_{S-1}) of the last map, N = H W / s_{S-1}**2
    forward(x)                 (B, C_{S-1}) global average of the last map (any H, W)

``feature_channels`` / ``feature_strides`` make :class:`~domainfm.tasks.finetune_module.
FinetuneModule` put its U-Net decoder over every map (``task="segmentation"``).

**Not MAE-efficient**: a convolution needs the whole image, so ``forward_tokens(x,
keep_idx)`` encodes every pixel and only then gathers the kept tokens of the last map. The
result is what a masked-token objective expects, but nothing is saved and the visible tokens
have seen the masked area through their receptive field unless the input itself is masked.

**Band count**: ``in_chans`` is any positive number. Weights trained with another band count
need their first convolution changed:

* by **band name** (a 13-band Sentinel-2 checkpoint into a model of 4 of those bands):
  :func:`domainfm.pretrained.channels.adapt_input_channels`, or ``load_backbone(...,
  channels=[...])`` for a domainfm export — each band keeps its own kernel slice;
* by **count only** (RGB ImageNet weights into a 4-channel input, no names known): timm's
  ``timm.models.adapt_input_conv(in_chans, weight)``, which repeats and rescales the kernel
  (what ``timm.create_model(..., pretrained=True, in_chans=N)`` does)::

      >>> from timm.models import adapt_input_conv
      >>> state["conv1.weight"] = adapt_input_conv(4, state["conv1.weight"])  # (64, 4, 7, 7)

Example::

    >>> cnn = TimmCNN(model_name="resnet18", in_chans=13)
    >>> [tuple(m.shape[1:]) for m in cnn.forward_intermediates(torch.randn(1, 13, 64, 64))]
    [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]
    >>> cnn(torch.randn(2, 13, 64, 64)).shape
    torch.Size([2, 512])
    >>> plain = timm.create_model("resnet18", in_chans=13)
    >>> load_state_dict_with_report(cnn, timm_to_backbone_keys(plain.state_dict(), cnn)).check()
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import timm
import torch
from einops import rearrange
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import TokenGrid
from domainfm.core.multiscale import MultiScaleBackbone

PREFIX = "encoder."
"""Key prefix of the timm feature extractor inside :class:`TimmCNN`."""


@BACKBONES.register("timm_cnn")
class TimmCNN(MultiScaleBackbone):
    """A timm CNN feature extractor as a domainfm multi-scale backbone.

    Args:
        in_chans: input channels (bands), any positive number.
        model_name: a timm model name (``timm.list_models()``) whose ``features_only`` mode
            gives NCHW maps: ResNet/ResNeXt, ConvNeXt, RegNet, EfficientNet, ...
        out_indices: the stages returned (timm's ``out_indices``); ``None``: timm's default,
            every stage (``(0, 1, 2, 3, 4)`` for a ResNet: the stem at stride 2, then
            ``layer1..4``). The last selected stage is the token map.
        timm_kwargs: further ``timm.create_model`` keyword arguments (JSON values, e.g.
            ``{"drop_path_rate": 0.1}`` or ``{"output_stride": 16}``).

    Raises:
        ValueError: unknown ``model_name``, ``in_chans < 1``, or a model timm cannot build
            with these arguments.
    """

    spatial_dims = 2

    def __init__(
        self,
        *,
        in_chans: int,
        model_name: str = "resnet50",
        out_indices: Sequence[int] | None = None,
        timm_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if in_chans < 1:
            raise ValueError(f"in_chans must be >= 1, got in_chans={in_chans}")
        if not timm.is_model(model_name):
            raise ValueError(
                f"model_name={model_name!r} is not a timm model (see timm.list_models())"
            )
        self.encoder = _create_features(model_name, in_chans, out_indices, timm_kwargs)
        info: Any = self.encoder.feature_info  # timm FeatureInfo
        self.model_name = model_name
        self.in_chans = in_chans
        self.timm_kwargs: dict[str, Any] = dict(timm_kwargs or {})
        self.feature_channels: tuple[int, ...] = tuple(int(c) for c in info.channels())
        self.feature_strides: tuple[int, ...] = tuple(int(s) for s in info.reduction())
        self.embed_dim = self.feature_channels[-1]
        self.patch_size = (self.feature_strides[-1],) * 2

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        """The selected stages' maps; ``norm`` is ignored (a CNN stage has no separate final
        norm)."""
        maps: list[Tensor] = self.encoder(x)
        return maps

    def stage_modules(self) -> list[nn.Module]:
        """The modules timm's ``feature_info`` names for the selected stages (``stages.0``
        is ``stages_0`` in the flattened feature extractor)."""
        info: Any = self.encoder.feature_info  # timm FeatureInfo
        names: list[str] = info.module_name()
        flat = {name for name, _ in self.encoder.named_modules()}
        return [
            self.encoder.get_submodule(name if name in flat else name.replace(".", "_"))
            for name in names
        ]

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Last-map tokens ``(B, N, D)`` and their grid; with ``keep_idx`` ``(B, K)`` the
        kept tokens ``(B, K, D)``, gathered after encoding the whole image (see the module
        docstring: a CNN is not MAE-efficient)."""
        grid = self.token_grid(x.shape[2:])
        last = self.forward_intermediates(x, indices=1)[0]  # (B, D, h, w)
        tokens = rearrange(last, "b d h w -> b (h w) d")
        if keep_idx is None:
            return tokens, grid
        if keep_idx.ndim != 2 or keep_idx.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"keep_idx must be (B, K) with B={tokens.shape[0]}, got {tuple(keep_idx.shape)}"
            )
        n = grid.num_tokens
        if keep_idx.numel() and not 0 <= int(keep_idx.min()) <= int(keep_idx.max()) < n:
            raise ValueError(f"keep_idx must index tokens 0..{n - 1}")
        index = keep_idx.long()[..., None].expand(-1, -1, tokens.shape[-1])  # (B, K, D)
        return tokens.gather(1, index), grid

    def forward(self, x: Tensor) -> Tensor:
        """Global average of the last map ``(B, D)``; any ``H, W`` (no divisibility needed)."""
        last: Tensor = self.encoder(x)[-1]  # (B, D, h, w)
        return last.mean(dim=(2, 3))


def _create_features(
    model_name: str,
    in_chans: int,
    out_indices: Sequence[int] | None,
    timm_kwargs: Mapping[str, Any] | None,
    *,
    features_only: bool = True,
) -> nn.Module:
    kwargs: dict[str, Any] = dict(timm_kwargs or {})
    if features_only:
        kwargs["features_only"] = True
        if out_indices is not None:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
    try:
        model: nn.Module = timm.create_model(
            model_name, pretrained=False, in_chans=in_chans, **kwargs
        )
    except Exception as err:  # timm raises RuntimeError/TypeError/AssertionError alike
        raise ValueError(
            f"timm cannot build model_name={model_name!r} with in_chans={in_chans}, "
            f"out_indices={out_indices}, timm_kwargs={dict(timm_kwargs or {})}: {err}"
        ) from err
    return model


def timm_to_backbone_keys(state: Mapping[str, Tensor], backbone: TimmCNN) -> dict[str, Tensor]:
    """A plain timm state dict of ``backbone.model_name`` → :class:`TimmCNN` keys.

    Each key the feature extractor has is renamed to ``encoder.<its key>`` (undoing timm's
    ``stages.0`` → ``stages_0`` flattening of ``nn.Sequential`` children). Keys of the plain
    timm model that the feature extractor does not contain — the classifier (``fc.*``,
    ``head.*``, ``classifier.*``), a final norm or conv head, stages after the last of
    ``out_indices`` — are dropped. Any other key is kept as it is, so a strict load
    (:func:`~domainfm.pretrained.report.load_state_dict_with_report`) names it as
    unexpected; a missing key stays missing and is reported too.

    ``backbone`` only lends its key names, so one built on the meta device will do
    (``with torch.device("meta"): TimmCNN(...)``), as the released-checkpoint mappings do.
    """
    plain_keys = _plain_keys(
        backbone.model_name, backbone.in_chans, json.dumps(backbone.timm_kwargs, sort_keys=True)
    )
    rename: dict[str, str] = {}  # plain key -> our key
    for key in backbone.state_dict():
        own = key.removeprefix(PREFIX)
        source = _plain_name(own, plain_keys)
        if source is not None:
            rename[source] = key
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in rename:
            out[rename[key]] = value
        elif key not in plain_keys:
            out[key] = value  # not a key of this timm model: left for the report to name
    return out


@lru_cache(maxsize=32)
def _plain_keys(model_name: str, in_chans: int, timm_kwargs_json: str) -> frozenset[str]:
    """The state-dict keys of the plain timm model (built once per configuration on the meta
    device: key names only, nothing allocated or initialized)."""
    with torch.device("meta"):
        plain = _create_features(
            model_name, in_chans, None, json.loads(timm_kwargs_json), features_only=False
        )
    return frozenset(plain.state_dict())


def _plain_name(key: str, plain_keys: frozenset[str]) -> str | None:
    """The plain-model key of a feature-extractor key (``stages_0.x`` → ``stages.0.x``)."""
    if key in plain_keys:
        return key
    head, _, rest = key.partition(".")
    for i, char in enumerate(head):
        if char == "_":
            candidate = f"{head[:i]}.{head[i + 1 :]}.{rest}"
            if candidate in plain_keys:
                return candidate
    return None
