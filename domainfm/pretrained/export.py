"""Export a training checkpoint to a self-describing backbone folder.

``export_checkpoint(CKPT, OUT_DIR)`` reads a Lightning ``.ckpt`` written by
:class:`~domainfm.tasks.pretrain_module.PretrainModule` (never unpickling code) and writes:

* ``model.safetensors`` — the backbone's state dict;
* ``config.json`` — architecture and constructor kwargs, domain, input contract (channels or
  band names, spacing / resolution / sample rate, normalization), patch size, provenance and
  the training recipe.

:func:`domainfm.load_backbone` rebuilds the model from ``config.json`` alone.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import torch

from domainfm._version import __version__
from domainfm.core.checkpoint_io import atomic_write_json, safe_torch_load, save_safetensors

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
    """
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict')")
    meta = ckpt.get(CKPT_KEY)
    if not isinstance(meta, dict) or "backbone" not in meta:
        raise ValueError(
            f"{path} has no '{CKPT_KEY}' metadata describing its backbone; it was not written by "
            "a domainfm PretrainModule/FinetuneModule"
        )
    state = {
        k[len(BACKBONE_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if k.startswith(BACKBONE_PREFIX)
    }
    if not state:
        raise ValueError(f"{path} has no '{BACKBONE_PREFIX}*' weights")
    meta = dict(meta)
    meta.setdefault("provenance", {})
    meta["provenance"] = {
        **meta["provenance"],
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
    }


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``model.safetensors`` + ``config.json`` for the backbone in ``ckpt_path``.

    Returns:
        The output folder.
    """
    meta, state = read_training_checkpoint(ckpt_path)
    out = Path(out_dir)
    config = backbone_config(meta)
    save_safetensors(out / WEIGHTS_NAME, state, metadata={"format": FORMAT})
    atomic_write_json(out / CONFIG_NAME, config)
    return out
