"""``load_backbone``: rebuild a backbone from a domainfm export (or training checkpoint).

Accepted inputs:

* an export folder with ``config.json`` + ``model.safetensors`` (from ``domainfm export``);
* a ``config.json`` path inside such a folder;
* a Lightning ``.ckpt`` written by a domainfm module (read with ``weights_only=True``);
* a local Hugging Face cache folder of such an export: the snapshot folder, or the
  ``models--ORG--NAME`` folder (its ``refs/main`` snapshot; :mod:`domainfm.pretrained.hf_cache`),
  offline.

The model is built from the recorded architecture and kwargs (``model_kwargs`` overrides
some of them, e.g. a new ``grid_size``); learned positional tables are resampled to the new
grid and reported. Every key is accounted for in a :class:`~domainfm.pretrained.report.LoadReport`;
anything missing, unexpected or mismatched raises unless allowed.

Example::

    >>> model, report = load_backbone("exports/ct_mae")
    >>> print(report)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from domainfm.core.backbone import build_backbone
from domainfm.core.checkpoint_io import load_safetensors, read_json_document
from domainfm.core.grid import to_ntuple
from domainfm.core.pos_embed import resample_pos_embed
from domainfm.core.size_guard import check_allocation
from domainfm.pretrained.channels import NewChannelInit, adapt_input_channels
from domainfm.pretrained.export import (
    CONFIG_NAME,
    FORMAT,
    WEIGHTS_NAME,
    backbone_config,
    read_training_checkpoint,
)
from domainfm.pretrained.hf_cache import resolve_snapshot
from domainfm.pretrained.report import (
    CheckpointMismatchError,
    LoadReport,
    Resampler,
    load_state_dict_with_report,
)


def read_weights_guarded(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file, its size checked by the size guard first (it is
    read whole)."""
    check_allocation(path.stat().st_size, what="reading these weights", source=path)
    return load_safetensors(path)[0]


def _read_export(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    folder = path.parent if path.name == CONFIG_NAME else path
    if folder.is_file():
        raise ValueError(
            f"{path}: not a domainfm export folder, its {CONFIG_NAME} or a .ckpt checkpoint"
        )
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for needed in (config_path, weights_path):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} not found: {folder} is not a domainfm export")
    try:
        config = read_json_document(config_path, FORMAT, what="domainfm backbone config")
    except UnicodeDecodeError as err:
        raise ValueError(f"{config_path}: unreadable domainfm backbone config ({err})") from err
    if not isinstance(config.get("architecture"), str) or not isinstance(
        config.get("kwargs"), dict
    ):
        raise ValueError(f"{config_path} names no backbone (an 'architecture' and its 'kwargs')")
    return config, read_weights_guarded(weights_path), str(weights_path)


def backbone_config_path(path_or_dir: str | Path) -> Path:
    """The file whose recorded config builds the backbone: a ``.ckpt`` itself, otherwise the
    export's ``config.json``."""
    path = Path(path_or_dir)
    if path.suffix == ".ckpt" or path.name == CONFIG_NAME:
        return path
    return resolve_snapshot(path) / CONFIG_NAME


def read_backbone_source(path_or_dir: str | Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    """``(config, state_dict, source)`` from an export folder, its config.json, or a ``.ckpt``.

    Raises:
        FileNotFoundError, ValueError: naming the file (not an export or checkpoint, unreadable
            or malformed config, weights that are no safetensors file).
        AllocationTooLarge: the weights file is larger than the size guard's limit.
        UnsafeCheckpointError: a ``.ckpt`` would execute code when unpickled.
    """
    path = Path(path_or_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    path = resolve_snapshot(path)
    if path.is_file() and path.suffix == ".ckpt":
        meta, state = read_training_checkpoint(path)
        return backbone_config(meta), state, str(path)
    return _read_export(path)


def pos_embed_resampler(old_kwargs: Mapping[str, Any], model: nn.Module) -> Resampler:
    """Resample a learned ``pos_embed`` from the checkpoint's grid to the model's grid."""

    def resample(key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key != "pos_embed" or old_kwargs.get("grid_size") is None:
            return None
        new_grid = tuple(getattr(model, "grid_size", ()))
        dims = int(old_kwargs.get("spatial_dims", len(new_grid)))
        old_grid = to_ntuple(old_kwargs["grid_size"], dims, name="grid_size")
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        if len(new_grid) != dims:
            return None
        return resample_pos_embed(value, new_grid, old_grid, num_prefix_tokens=prefix)

    return resample


def map_input_channels(
    state: Mapping[str, Tensor],
    model: nn.Module,
    *,
    recorded: Mapping[str, Any],
    channels: Sequence[str],
    new_channel_init: NewChannelInit,
    source: str,
) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """``state`` with its input layer remapped from the recorded channel names
    (``recorded["bands"]`` or ``["channels"]``) to ``channels`` for ``model``, and the
    adaptations (:func:`~domainfm.pretrained.channels.adapt_input_channels`)."""
    names = recorded.get("bands") or recorded.get("channels")
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{source} does not record its input channel names (input.bands / "
            "input.channels), so channels cannot be mapped by name"
        )
    return adapt_input_channels(
        state,
        model.state_dict(),
        source=list(names),
        target=list(channels),
        new_channel_init=new_channel_init,
    )


def load_backbone(
    path_or_dir: str | Path,
    allow_missing: Iterable[str] = (),
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    channels: Sequence[str] | None = None,
    new_channel_init: NewChannelInit = "zeros",
) -> tuple[nn.Module, LoadReport]:
    """Rebuild and load a backbone; returns ``(model, report)``.

    Args:
        path_or_dir: export folder, its ``config.json``, or a domainfm ``.ckpt``.
        allow_missing: fnmatch patterns of model keys allowed to stay initialized.
        model_kwargs: constructor kwargs overriding the recorded ones (e.g. ``grid_size``).
        channels: input channel (band) names of the new model when they differ from the
            checkpoint's (``config["input"]["bands"]`` or ``["channels"]``): the model gets
            ``in_chans=len(channels)`` and its input layer is mapped by name
            (:func:`~domainfm.pretrained.channels.adapt_input_channels`), reported as adapted.
        new_channel_init: how channels the checkpoint lacks start: ``"zeros"`` or ``"mean"``.

    Raises:
        CheckpointMismatchError: with the report table, if the load is not clean.
        UnsafeCheckpointError: if a ``.ckpt`` would execute code when unpickled.
    """
    config, state, source = read_backbone_source(path_or_dir)
    return _build_and_load(
        config,
        state,
        source,
        config_path=backbone_config_path(path_or_dir),
        allow_missing=allow_missing,
        model_kwargs=model_kwargs,
        channels=channels,
        new_channel_init=new_channel_init,
    )


def _build_and_load(
    config: Mapping[str, Any],
    state: dict[str, Tensor],
    source: str,
    *,
    config_path: Path,
    allow_missing: Iterable[str] = (),
    model_kwargs: Mapping[str, Any] | None = None,
    channels: Sequence[str] | None = None,
    new_channel_init: NewChannelInit = "zeros",
) -> tuple[nn.Module, LoadReport]:
    """:func:`load_backbone` on what :func:`read_backbone_source` read; the model is built
    (size-guarded) from the config at ``config_path``."""
    kwargs = {**config["kwargs"], **(model_kwargs or {})}
    adapted: list[tuple[str, str]] = []
    if channels is not None:
        kwargs["in_chans"] = len(channels)
    model = build_backbone(config["architecture"], kwargs, source=str(config_path))
    if channels is not None:
        recorded = config.get("input")
        state, adapted = map_input_channels(
            state,
            model,
            recorded=recorded if isinstance(recorded, Mapping) else {},
            channels=channels,
            new_channel_init=new_channel_init,
            source=source,
        )
    report = load_state_dict_with_report(
        model, state, source=source, resample=pos_embed_resampler(config["kwargs"], model)
    )
    report.adapted = adapted
    report.check(allow_missing)
    return model, report


def inspect_backbone(path_or_dir: str | Path) -> tuple[dict[str, Any], LoadReport]:
    """The config and the load report of an export or checkpoint, clean or not (what
    ``domainfm inspect`` prints; ``report.ok`` says whether the load was clean).

    Raises:
        The errors of :func:`load_backbone` except :class:`CheckpointMismatchError`.
    """
    config, state, source = read_backbone_source(path_or_dir)
    try:
        _, report = _build_and_load(
            config, state, source, config_path=backbone_config_path(path_or_dir)
        )
    except CheckpointMismatchError as err:
        report = err.report
    return config, report
