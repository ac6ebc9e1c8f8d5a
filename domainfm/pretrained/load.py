"""``load_backbone``: rebuild a backbone from a domainfm export (or training checkpoint).

Accepted inputs:

* an export folder with ``config.json`` + ``model.safetensors`` (from ``domainfm export``);
* a ``config.json`` path inside such a folder;
* a Lightning ``.ckpt`` written by a domainfm module (read with ``weights_only=True``).

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
from domainfm.pretrained.channels import NewChannelInit, adapt_input_channels
from domainfm.pretrained.export import (
    CONFIG_NAME,
    FORMAT,
    WEIGHTS_NAME,
    backbone_config,
    read_training_checkpoint,
)
from domainfm.pretrained.report import LoadReport, Resampler, load_state_dict_with_report


def _read_export(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    folder = path.parent if path.name == CONFIG_NAME else path
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for needed in (config_path, weights_path):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} not found: {folder} is not a domainfm export")
    config = read_json_document(config_path, FORMAT, what="domainfm backbone config")
    if not isinstance(config.get("architecture"), str) or not isinstance(
        config.get("kwargs"), dict
    ):
        raise ValueError(f"{config_path} names no backbone (an 'architecture' and its 'kwargs')")
    state, _ = load_safetensors(weights_path)
    return config, state, str(weights_path)


def read_backbone_source(path_or_dir: str | Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    """``(config, state_dict, source)`` from an export folder, its config.json, or a ``.ckpt``."""
    path = Path(path_or_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file() and path.suffix == ".ckpt":
        meta, state = read_training_checkpoint(path)
        return backbone_config(meta), state, str(path)
    return _read_export(path)


def pos_embed_resampler(old_kwargs: Mapping[str, Any], model: nn.Module) -> Resampler:
    """Resample a learned ``pos_embed`` from the checkpoint's grid to the model's grid."""

    def resample(key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key != "pos_embed" or old_kwargs.get("grid_size") is None:
            return None
        dims = int(old_kwargs["spatial_dims"])
        old_grid = to_ntuple(old_kwargs["grid_size"], dims, name="grid_size")
        new_grid = tuple(getattr(model, "grid_size", ()))
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
    kwargs = {**config["kwargs"], **(model_kwargs or {})}
    adapted: list[tuple[str, str]] = []
    if channels is not None:
        kwargs["in_chans"] = len(channels)
    model = build_backbone(config["architecture"], kwargs, source=source)
    if channels is not None:
        state, adapted = map_input_channels(
            state,
            model,
            recorded=config.get("input", {}) or {},
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
