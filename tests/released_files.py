"""Shared pieces of the release tests (``tests/**/released/test_*.py``): a helper, not a test
module (test modules load it by path; they never import each other).

* :func:`timm_block_shapes`, :func:`vit_encoder_shapes`, :func:`mae_decoder_shapes` — key
  names and shapes of timm-style ViT encoders and MAE decoders (``models_mae``), from which a
  test writes a release's file in its own nesting;
* :func:`full_size_report` — a release's full-size file content mapped through its key map and
  compared with the full-size backbone built on the meta device (nothing allocated).

A test module loads this file by path (``tests/pretrained/test_identify.py`` loads the test
modules by path too, where no ``tests`` package is importable)::

    released_files = SimpleNamespace(**run_path(str(TESTS / "released_files.py")))
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from domainfm.core.backbone import build_backbone
from domainfm.pretrained.registry import RELEASED, mapped_release_state
from domainfm.pretrained.report import LoadReport, compare_state_dict

Shapes = dict[str, tuple[int, ...]]


def timm_block_shapes(prefix: str, dim: int, hidden: int | None = None) -> Shapes:
    """timm ``Block(dim, heads, qkv_bias=True)`` keys under ``prefix`` (e.g. ``"blocks.0."``)
    and shapes; ``hidden``: the MLP width (``4 * dim`` by default)."""
    hidden = 4 * dim if hidden is None else hidden
    shapes: Shapes = {
        "norm1.weight": (dim,),
        "norm1.bias": (dim,),
        "attn.qkv.weight": (3 * dim, dim),
        "attn.qkv.bias": (3 * dim,),
        "attn.proj.weight": (dim, dim),
        "attn.proj.bias": (dim,),
        "norm2.weight": (dim,),
        "norm2.bias": (dim,),
        "mlp.fc1.weight": (hidden, dim),
        "mlp.fc1.bias": (hidden,),
        "mlp.fc2.weight": (dim, hidden),
        "mlp.fc2.bias": (dim,),
    }
    return {prefix + k: v for k, v in shapes.items()}


def vit_encoder_shapes(
    dim: int, depth: int, positions: int, patch_weight: tuple[int, ...]
) -> Shapes:
    """A timm-style ViT encoder (``models_mae.MaskedAutoencoderViT``'s): class token, a
    ``(1, positions, dim)`` table (class row included), the patch projection whose weight is
    ``(dim, *patch_weight)``, ``depth`` timm blocks and the final norm."""
    shapes: Shapes = {
        "cls_token": (1, 1, dim),
        "pos_embed": (1, positions, dim),
        "patch_embed.proj.weight": (dim, *patch_weight),
        "patch_embed.proj.bias": (dim,),
        "norm.weight": (dim,),
        "norm.bias": (dim,),
    }
    for i in range(depth):
        shapes.update(timm_block_shapes(f"blocks.{i}.", dim))
    return shapes


def mae_decoder_shapes(dim: int, decoder_dim: int, positions: int, pixels: int) -> Shapes:
    """``models_mae``'s decoder parts around its blocks: the ``dim`` → ``decoder_dim``
    embedding, mask token, ``(1, positions, decoder_dim)`` table, norm and the prediction of
    ``pixels`` values per patch."""
    return {
        "decoder_embed.weight": (decoder_dim, dim),
        "decoder_embed.bias": (decoder_dim,),
        "mask_token": (1, 1, decoder_dim),
        "decoder_pos_embed": (1, positions, decoder_dim),
        "decoder_norm.weight": (decoder_dim,),
        "decoder_norm.bias": (decoder_dim,),
        "decoder_pred.weight": (pixels, decoder_dim),
        "decoder_pred.bias": (pixels,),
    }


def full_size_report(
    name: str, content: Any, path: str
) -> tuple[nn.Module, dict[str, Tensor], list[str], LoadReport]:
    """Release ``name``'s file ``content`` (as read from ``path``) mapped by its key map, and
    the comparison with its full-size backbone built on the meta device: ``(model, mapped
    state, dropped keys, report)``."""
    entry = RELEASED.get(name)
    mapped, dropped = mapped_release_state(entry, content, path=path)
    with torch.device("meta"):
        model = build_backbone(entry.architecture, entry.kwargs)
    return model, mapped, dropped, compare_state_dict(model, mapped)
