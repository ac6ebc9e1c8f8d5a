"""AdamW parameter groups: no weight decay on biases/norms/tokens, optional layer-wise LR decay.

Layer-wise LR decay (BEiT, Bao et al. 2022, arXiv:2106.08254; used by MAE fine-tuning):
parameters of transformer block ``i`` of a ``depth``-block backbone get the learning rate
scaled by ``decay ** (depth + 1 - (i + 1))``; the patch embedding, tokens and positions count
as layer 0, everything after the blocks (and any head) as layer ``depth + 1`` (scale 1).
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBED = ("patch_embed", "cls_token", "pos_embed", "mask_token")


def _layer_id(name: str, depth: int, backbone_prefix: str) -> int:
    if not name.startswith(backbone_prefix):
        return depth + 1
    local = name[len(backbone_prefix) :]
    if local.startswith(_EMBED):
        return 0
    match = _BLOCK.search(local)
    return int(match.group(1)) + 1 if match else depth + 1


def _no_decay(name: str, ndim: int) -> bool:
    return ndim < 2 or name.endswith(("token", "pos_embed")) or ".norm" in name


def param_groups(
    module: nn.Module,
    *,
    weight_decay: float,
    layer_decay: float | None = None,
    backbone_prefix: str = "backbone.",
    depth: int | None = None,
) -> list[dict[str, Any]]:
    """Parameter groups with ``weight_decay`` and an ``lr_scale`` per group.

    Args:
        module: the module whose trainable parameters are grouped.
        weight_decay: decay for weight matrices (0 for 1-D params and tokens).
        layer_decay: per-layer LR decay factor in (0, 1]; ``None`` for none.
        backbone_prefix: name prefix of the backbone's parameters.
        depth: number of blocks (required with ``layer_decay``).
    """
    if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got layer_decay={layer_decay}")
    if layer_decay is not None and depth is None:
        raise ValueError("layer_decay needs depth (the backbone's number of blocks)")
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        layer = _layer_id(name, depth or 0, backbone_prefix) if layer_decay is not None else 0
        scale = layer_decay ** ((depth or 0) + 1 - layer) if layer_decay is not None else 1.0
        no_decay = _no_decay(name, param.ndim)
        group = groups.setdefault(
            (layer, no_decay),
            {"params": [], "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale},
        )
        group["params"].append(param)
    return list(groups.values())
