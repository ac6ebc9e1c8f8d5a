"""``load_backbone``: rebuild a backbone from a domainfm export, training checkpoint or a
released weights file.

Accepted inputs:

* an export folder with ``config.json`` + ``model.safetensors`` (from ``domainfm export``);
* a ``config.json`` path inside such a folder;
* a Lightning ``.ckpt`` written by a domainfm module (read with ``weights_only=True``);
* a local Hugging Face cache folder of such an export: the snapshot folder, or the
  ``models--ORG--NAME`` folder (its ``refs/main`` snapshot; :mod:`domainfm.pretrained.hf_cache`),
  offline;
* a released weights file as published (``.pt`` / ``.pth`` / ``.bin`` / ``.safetensors``, or
  a ``.ckpt`` without domainfm metadata): the release is identified by the file's key layout
  (:mod:`domainfm.pretrained.release_file`) and loaded with
  :func:`~domainfm.pretrained.registry.load_released`; a file several releases fit exactly
  is loaded only when they all load it the same way, otherwise ``released=NAME`` names it;
  a file no release fits is refused naming the closest layouts.

The model is built from the recorded architecture and kwargs (``model_kwargs`` overrides
some of them, e.g. a new ``grid_size``); learned positional tables are resampled to the new
grid and reported. Every key is accounted for in a :class:`~domainfm.pretrained.report.LoadReport`;
anything missing, unexpected or mismatched raises unless allowed. The report also says what
the weights are and expect: ``report.released`` (the release, ``None`` for an export),
``report.candidates`` (every release the file fits exactly) and ``report.input`` (the input
contract as JSON: the release's, or the export's; ``None`` when none is recorded).

Example::

    >>> model, report = load_backbone("exports/ct_mae")
    >>> model, report = load_backbone("AudioNTT2020-BYOLA-64x96d512.pth")
    >>> report.released, report.input["frontend"]["architecture"]
    ('byola-audiontt2020-d512', 'log_mel')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from domainfm.core.backbone import build_backbone
from domainfm.core.checkpoint_io import load_safetensors, read_json_document
from domainfm.core.size_guard import check_allocation
from domainfm.pretrained.adapt import map_input_channels, pos_embed_resampler
from domainfm.pretrained.channels import NewChannelInit
from domainfm.pretrained.export import (
    CONFIG_NAME,
    FORMAT,
    WEIGHTS_NAME,
    backbone_config,
    read_training_checkpoint,
)
from domainfm.pretrained.hf_cache import resolve_snapshot, weights_in_folder
from domainfm.pretrained.registry import RELEASED, load_released
from domainfm.pretrained.release_file import identify_for_loading, read_release_content
from domainfm.pretrained.report import (
    CheckpointMismatchError,
    LoadReport,
    load_state_dict_with_report,
)

__all__ = [
    "backbone_config_path",
    "inspect_backbone",
    "load_backbone",
    "map_input_channels",
    "pos_embed_resampler",
    "read_backbone_source",
    "read_weights_guarded",
]


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


def load_backbone(
    path_or_dir: str | Path,
    allow_missing: Iterable[str] = (),
    *,
    model_kwargs: Mapping[str, Any] | None = None,
    channels: Sequence[str] | None = None,
    new_channel_init: NewChannelInit = "zeros",
    released: str | None = None,
) -> tuple[nn.Module, LoadReport]:
    """Rebuild and load a backbone; returns ``(model, report)``.

    Args:
        path_or_dir: export folder, its ``config.json``, a domainfm ``.ckpt``, a Hugging
            Face cache folder of an export, or a released weights file (identified by its
            layout, see the module docstring).
        allow_missing: fnmatch patterns of model keys allowed to stay initialized.
        model_kwargs: constructor kwargs overriding the recorded ones (e.g. ``grid_size``;
            for a release file given with ``released``, e.g. a smaller depth).
        channels: input channel (band) names of the new model when they differ from the
            checkpoint's (``config["input"]["bands"]`` or ``["channels"]``): the model gets
            ``in_chans=len(channels)`` and its input layer is mapped by name
            (:func:`~domainfm.pretrained.channels.adapt_input_channels`), reported as adapted.
        new_channel_init: how channels the checkpoint lacks start: ``"zeros"`` or ``"mean"``.
        released: the registered release ``path_or_dir`` is a local file of; skips the
            identification by layout (needed when several releases with different input
            contracts or weights fit the file, or for a release file of another size).

    Returns:
        The model and its load report; ``report.released``, ``report.candidates`` and
        ``report.input`` say which release the weights are (if any) and what input they
        expect.

    Raises:
        CheckpointMismatchError: with the report table, if the load is not clean.
        UnsafeCheckpointError: if a ``.ckpt`` or torch file would execute code when unpickled.
        ValueError: naming the file: no registered release fits a released file exactly
            (with the closest layouts), or several fit it and load it differently.
    """
    options: dict[str, Any] = {
        "allow_missing": allow_missing,
        "model_kwargs": model_kwargs,
        "channels": channels,
        "new_channel_init": new_channel_init,
    }
    path_or_dir = weights_in_folder(path_or_dir)  # a release's own repository snapshot
    if released is not None:
        return _load_release(released, path_or_dir, (released,), **options)
    content = read_release_content(path_or_dir)
    if content is not None:
        found = identify_for_loading(content, source=str(path_or_dir))
        del content  # the load reads the file itself
        return _load_release(found.entry.name, path_or_dir, found.candidates, **options)
    config, state, source = read_backbone_source(path_or_dir)
    return _build_and_load(
        config, state, source, config_path=backbone_config_path(path_or_dir), **options
    )


def _load_release(
    name: str,
    path: str | Path,
    candidates: Sequence[str],
    *,
    allow_missing: Iterable[str] = (),
    model_kwargs: Mapping[str, Any] | None = None,
    channels: Sequence[str] | None = None,
    new_channel_init: NewChannelInit = "zeros",
) -> tuple[nn.Module, LoadReport]:
    """:func:`~domainfm.pretrained.registry.load_released`, with the release, the releases
    the file could be and the release's input contract in the report."""
    model, report = load_released(
        name,
        path,
        model_kwargs=model_kwargs,
        allow_missing=allow_missing,
        channels=channels,
        new_channel_init=new_channel_init,
    )
    report.released = name
    report.candidates = list(candidates)
    report.input = dict(RELEASED.get(name).input)
    return model, report


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
    recorded = config.get("input")
    if channels is not None:
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
    report.input = dict(recorded) if isinstance(recorded, Mapping) and recorded else None
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
