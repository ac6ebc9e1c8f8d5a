"""Export a training checkpoint to a self-describing backbone folder.

``export_checkpoint(CKPT, OUT_DIR)`` reads a Lightning ``.ckpt`` written by
:class:`~domainfm.tasks.pretrain_module.PretrainModule` (never unpickling code) and writes:

* ``model.safetensors`` — the backbone's state dict;
* ``config.json`` — architecture and constructor kwargs, domain, input contract (channels or
  band names, spacing / resolution / sample rate, normalization), patch size, provenance and
  the training recipe;
* ``README.md`` — a Hugging Face model card (:mod:`domainfm.pretrained.model_card`) with the
  input contract, provenance, licence and intended use, so the folder is a model repository
  as is. A ``README.md`` that is not a domainfm card is never replaced (the card is then
  skipped with a warning).

:func:`domainfm.load_backbone` rebuilds the model from ``config.json`` alone.
"""

from __future__ import annotations

import datetime as dt
import warnings
from pathlib import Path
from typing import Any

import torch

from domainfm._version import __version__
from domainfm.core.checkpoint_io import (
    atomic_write,
    atomic_write_json,
    check_writable_folder,
    safe_torch_load,
    save_safetensors,
)
from domainfm.core.size_guard import check_allocation
from domainfm.pretrained.model_card import MODEL_CARD_NAME, model_card

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "domainfm.backbone"
FORMAT_VERSION = 1
CKPT_KEY = "domainfm"
BACKBONE_PREFIX = "backbone."


def read_training_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The ``domainfm`` metadata and backbone state dict of a Lightning checkpoint.

    Raises:
        ValueError: naming the file when it has no domainfm metadata or no backbone weights.
        AllocationTooLarge: when the file is larger than the size guard's limit (it is read
            whole).
    """
    check_allocation(Path(path).stat().st_size, what="reading this checkpoint", source=path)
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    meta = ckpt.get(CKPT_KEY)
    backbone = meta.get("backbone") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or not isinstance(backbone, dict):
        raise ValueError(
            f"{path} has no '{CKPT_KEY}' metadata describing its backbone; it was not written by "
            "a domainfm PretrainModule/FinetuneModule"
        )
    if not isinstance(backbone.get("architecture"), str) or not isinstance(
        backbone.get("kwargs"), dict
    ):
        raise ValueError(
            f"{path}: its '{CKPT_KEY}' metadata names no backbone (an 'architecture' and its "
            "'kwargs')"
        )
    state = {
        k[len(BACKBONE_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if isinstance(k, str) and k.startswith(BACKBONE_PREFIX)
    }
    if not state:
        raise ValueError(f"{path} has no '{BACKBONE_PREFIX}*' weights")
    odd = [
        k for k, v in state.items() if not isinstance(v, torch.Tensor) or v.layout != torch.strided
    ]  # a sparse tensor's invariants are not checked on load: refused, not used
    if odd:
        raise ValueError(f"{path}: backbone weight {BACKBONE_PREFIX}{odd[0]} is not a dense tensor")
    meta = dict(meta)
    provenance = meta.get("provenance")
    meta["provenance"] = {
        **(provenance if isinstance(provenance, dict) else {}),
        "source_checkpoint": str(path),
        "global_step": ckpt.get("global_step"),
        "epoch": ckpt.get("epoch"),
    }
    return meta, state


def backbone_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``config.json`` content for a backbone described by checkpoint metadata."""
    backbone = meta["backbone"]
    kwargs = backbone["kwargs"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": backbone["architecture"],
        "kwargs": kwargs,
        "domain": meta.get("domain"),
        "patch_size": kwargs.get("patch_size"),
        "input": meta.get("input", {}),
        "provenance": {
            **meta.get("provenance", {}),
            "exported_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "domainfm_version": __version__,
            "torch_version": torch.__version__,
        },
        "recipe": meta.get("recipe", {}),
        **({"license": meta["license"]} if isinstance(meta.get("license"), str) else {}),
    }


def check_export_folder(
    out_dir: str | Path, *, source: str | Path | None, overwrite: bool = False
) -> Path:
    """Refuse, before any work, an export folder that cannot or must not be written.

    Refused (a ``ValueError`` naming the path): ``out_dir`` is ``source`` or an existing file;
    it already holds an export's ``model.safetensors`` or ``config.json`` (unless
    ``overwrite``); a parent is a file, or the nearest existing folder is not writable.

    Returns:
        ``out_dir`` as a ``Path``.
    """
    out = Path(out_dir)
    if source is not None and out.exists() and Path(source).exists() and out.samefile(source):
        raise ValueError(f"{out}: the output folder is the checkpoint {source}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: the output exists and is not a folder; give a folder path")
    held = [name for name in (WEIGHTS_NAME, CONFIG_NAME) if (out / name).exists()]
    if held and not overwrite:
        raise ValueError(
            f"{out}: the folder already holds an export ({', '.join(held)}); give another "
            "folder, or --overwrite to replace it"
        )
    check_writable_folder(out / WEIGHTS_NAME)  # out itself may not exist yet
    return out


def export_checkpoint(
    ckpt_path: str | Path, out_dir: str | Path, *, overwrite: bool = True
) -> Path:
    """Write ``model.safetensors`` + ``config.json`` for the backbone in ``ckpt_path``.

    Args:
        ckpt_path: a Lightning ``.ckpt`` written by a domainfm module.
        out_dir: the export folder (created).
        overwrite: replace an export already in ``out_dir``; ``False`` refuses it before
            reading the checkpoint (:func:`check_export_folder`, what ``domainfm export``
            does without ``--overwrite``).

    Returns:
        The output folder.
    """
    out = check_export_folder(out_dir, source=ckpt_path, overwrite=overwrite)
    meta, state = read_training_checkpoint(ckpt_path)
    return _write_export(out, state, backbone_config(meta))


def export_backbone(
    model: torch.nn.Module,
    out_dir: str | Path,
    *,
    meta: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write an in-memory backbone as an export folder (what :func:`export_checkpoint` writes
    for a checkpoint): ``meta`` holds ``backbone`` (``architecture``, ``kwargs``) and,
    optionally, ``domain``, ``input``, ``provenance``, ``recipe`` and ``license``.

    Returns:
        The output folder.
    """
    out = check_export_folder(out_dir, source=None, overwrite=overwrite)
    config = backbone_config(meta)
    return _write_export(out, model.state_dict(), config)


def _write_export(out: Path, state: dict[str, torch.Tensor], config: dict[str, Any]) -> Path:
    save_safetensors(out / WEIGHTS_NAME, state, metadata={"format": FORMAT})
    atomic_write_json(out / CONFIG_NAME, config)
    write_model_card(out, config)
    return out


def write_model_card(out: Path, config: dict[str, Any]) -> Path | None:
    """Write the model card ``README.md`` into the export folder ``out``; a ``README.md``
    there that domainfm did not write is kept (warning) and ``None`` returned."""
    card = out / MODEL_CARD_NAME
    if card.exists():
        head = card.read_text(encoding="utf-8", errors="replace")[:200]
        if "library_name: domainfm" not in head:
            warnings.warn(
                f"{card} exists and is not a domainfm model card: kept, no card written",
                stacklevel=2,
            )
            return None
    text = model_card(config)
    return atomic_write(card, lambda tmp: tmp.write_text(text, encoding="utf-8"))
