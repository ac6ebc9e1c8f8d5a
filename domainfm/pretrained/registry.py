"""Registry of released checkpoints: architecture, source key layout, key mapping, input
contract and license of each. Files are always local paths; nothing is downloaded.

An entry is declared by decorating its key-mapping function (source state dict → our
backbone's keys)::

    @released_checkpoint(
        name="timm-vit-small-patch16-224",
        architecture="vit_nd",
        kwargs={...},                     # our backbone's constructor kwargs
        source_layout="timm VisionTransformer state dict (...)",
        input={"channels": ["R", "G", "B"], "normalization": {...}},
        license="Apache-2.0",
    )
    def _map_timm_vit(state): ...

    model, report = load_released("timm-vit-small-patch16-224", "/models/vit_s16.safetensors")

Domain plugins register their releases (Swin UNETR, SSL4EO, BYOL-A, ...) the same way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from domainfm.core.backbone import build_backbone
from domainfm.core.checkpoint_io import load_safetensors, safe_torch_load
from domainfm.core.contract import InputContract, contract_from_dict
from domainfm.core.plugins import discover_plugins
from domainfm.core.registry import Registry
from domainfm.core.size_guard import check_allocation
from domainfm.pretrained.adapt import map_input_channels, pos_embed_resampler
from domainfm.pretrained.channels import NewChannelInit
from domainfm.pretrained.report import LoadReport, load_state_dict_with_report

KeyMap = Callable[[Mapping[str, Any]], dict[str, Tensor]]


@dataclass(frozen=True)
class PretextHead:
    """The pretext part a release ships besides its encoder (an MAE decoder), mapped onto one
    of our objectives so that pretraining can continue from the release.

    Attributes:
        objective: objective registry name (``OBJECTIVES``), e.g. ``"mae"``.
        kwargs: the objective's constructor kwargs for these weights (decoder sizes, ...).
        map_keys: turns the loaded file content into the objective's state dict (the same
            content :attr:`ReleasedCheckpoint.map_keys` reads).
        drop: fnmatch patterns of mapped keys the objective does not have by design (a fixed
            sin-cos table it recomputes), reported as dropped.
    """

    objective: str
    kwargs: Mapping[str, Any]
    map_keys: KeyMap
    drop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """One released checkpoint's description.

    Attributes:
        name: registry name.
        architecture: backbone registry name (``BACKBONES``).
        kwargs: constructor kwargs of our backbone for these weights.
        source_layout: the key layout of the released file, in words.
        map_keys: turns the loaded file content into our backbone's state dict.
        input: the expected input contract as JSON (``InputContract.to_dict()``: channels or
            bands, normalization, spacing, rate, …); :attr:`contract` is the typed form.
        license: the weights' license.
        reference: where the weights are published (documentation only, never fetched).
        allow_missing: model keys the release does not provide by design.
        drop: fnmatch patterns of keys of :attr:`map_keys`' output that belong to parts our
            backbone does not have by design (pretraining heads, decoders, a key encoder):
            left out before loading and listed in the report's ``dropped``. A key map
            passes every other key through, so anything unforeseen is reported unexpected.
        pretext: the release's own pretext head (decoder) mapped onto our objective, for
            releases that ship one; ``None`` otherwise (continued pretraining starts the head
            fresh, reported as such).
    """

    name: str
    architecture: str
    kwargs: Mapping[str, Any]
    source_layout: str
    map_keys: KeyMap
    input: Mapping[str, Any]
    license: str
    reference: str = ""
    allow_missing: tuple[str, ...] = field(default=())
    drop: tuple[str, ...] = field(default=())
    pretext: PretextHead | None = None

    @property
    def contract(self) -> InputContract:
        """The typed input contract (the domain's class, rebuilt from :attr:`input`)."""
        return contract_from_dict(self.input, source=f"released checkpoint {self.name!r}")


RELEASED: Registry[ReleasedCheckpoint] = Registry("released checkpoint")


def released_checkpoint(
    *,
    name: str,
    architecture: str,
    kwargs: Mapping[str, Any],
    source_layout: str,
    input: InputContract | Mapping[str, Any],
    license: str,
    reference: str = "",
    allow_missing: Iterable[str] = (),
    drop: Iterable[str] = (),
    pretext: PretextHead | None = None,
) -> Callable[[KeyMap], KeyMap]:
    """Decorator registering a key-mapping function as the released checkpoint ``name``."""

    def decorator(fn: KeyMap) -> KeyMap:
        entry = ReleasedCheckpoint(
            name=name,
            architecture=architecture,
            kwargs=dict(kwargs),
            source_layout=source_layout,
            map_keys=fn,
            input=input.to_dict() if isinstance(input, InputContract) else dict(input),
            license=license,
            reference=reference,
            allow_missing=tuple(allow_missing),
            drop=tuple(drop),
            pretext=pretext,
        )
        RELEASED.register(name)(entry)
        return fn

    return decorator


def read_weights_file(path: str | Path) -> Any:
    """Content of a local weights file: safetensors, or a torch file read with
    ``weights_only=True``."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist (released weights are never downloaded)")
    check_allocation(p.stat().st_size, what="reading these weights", source=p)
    if p.suffix == ".safetensors":
        return load_safetensors(p)[0]
    return safe_torch_load(p)


def split_dropped(
    state: Mapping[str, Tensor], patterns: Iterable[str]
) -> tuple[dict[str, Tensor], list[str]]:
    """``(kept, dropped keys)``: the keys of ``state`` matching any fnmatch pattern are
    dropped (sorted, for the report)."""
    pats = tuple(patterns)
    kept: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        if any(fnmatch.fnmatchcase(key, p) for p in pats):
            dropped.append(key)
        else:
            kept[key] = value
    return kept, sorted(dropped)


def mapped_release_state(
    entry: ReleasedCheckpoint, content: Any, *, path: str | Path
) -> tuple[dict[str, Tensor], list[str]]:
    """``(state for our backbone, dropped keys)`` of a release file's content.

    Raises:
        ValueError: naming the file when its content is not the release's layout.
    """
    try:
        state = entry.map_keys(content)
    except (KeyError, TypeError, AttributeError) as err:
        raise ValueError(
            f"{path} does not have the key layout of {entry.name!r} ({entry.source_layout}): {err}"
        ) from err
    return split_dropped(state, entry.drop)


def load_released(
    name: str,
    path: str | Path,
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    allow_missing: Iterable[str] = (),
    channels: Sequence[str] | None = None,
    new_channel_init: NewChannelInit = "zeros",
) -> tuple[nn.Module, LoadReport]:
    """Build the registered architecture and load a local copy of the release into it.

    Args:
        name: the registered release.
        path: the local weights file.
        model_kwargs: constructor kwargs overriding the release's.
        allow_missing: fnmatch patterns of model keys allowed to stay initialized.
        channels: input channel (band) names of the model when they differ from the
            release's (its ``input["bands"]`` or ``["channels"]``): the model gets
            ``in_chans=len(channels)`` and its input layer is mapped by name, reported in
            ``report.adapted`` (e.g. a 13-band Sentinel-2 release into a 4-band model).
        new_channel_init: how channels the release lacks start: ``"zeros"`` or ``"mean"``.

    Raises:
        CheckpointMismatchError: with the report table, unless every key maps cleanly.
    """
    if name not in RELEASED:
        discover_plugins()  # domain plugins register their releases on import
    entry = RELEASED.get(name)
    state, dropped = mapped_release_state(entry, read_weights_file(path), path=path)
    kwargs = {**entry.kwargs, **(model_kwargs or {})}
    if channels is not None:
        kwargs["in_chans"] = len(channels)
    source = f"{path} as {name}"
    model = build_backbone(entry.architecture, kwargs, source=source)
    adapted: list[tuple[str, str]] = []
    if channels is not None:
        state, adapted = map_input_channels(
            state,
            model,
            recorded=entry.input,
            channels=channels,
            new_channel_init=new_channel_init,
            source=source,
        )
    report = load_state_dict_with_report(
        model, state, source=source, resample=pos_embed_resampler(entry.kwargs, model)
    )
    report.adapted = adapted
    report.dropped = dropped
    report.check((*entry.allow_missing, *allow_missing))
    return model, report


_IMAGENET = {
    "type": "mean_std",
    "scale": 1 / 255,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}


@released_checkpoint(
    name="timm-vit-small-patch16-224",
    architecture="vit_nd",
    kwargs={
        "in_chans": 3,
        "spatial_dims": 2,
        "patch_size": 16,
        "embed_dim": 384,
        "depth": 12,
        "num_heads": 6,
        "pos_embed": "learned",
        "grid_size": 14,
    },
    source_layout="timm VisionTransformer state dict: cls_token, pos_embed (1, 197, 384), "
    "patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*, "
    "head.* (classifier, dropped)",
    input={
        "kind": "raster",
        "bands": ["R", "G", "B"],
        "channels": ["R", "G", "B"],
        "image_size": [224, 224],
        "normalization": _IMAGENET,
    },
    license="Apache-2.0 (timm); check the weights' own model card",
    reference="https://huggingface.co/timm/vit_small_patch16_224.augreg_in21k_ft_in1k",
    drop=("head.*", "fc_norm.*"),
)
def _map_timm_vit(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """timm ViT keys are ours already; the classifier (``head.*``, and ``fc_norm.*`` of
    average-pooled variants) is dropped by name (``drop``)."""
    inner = state.get("state_dict", state.get("model", state))
    return dict(inner)
