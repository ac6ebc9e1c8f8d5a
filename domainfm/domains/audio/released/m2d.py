"""Released M2D (Masked Modeling Duo) weights, mapped onto
:class:`~domainfm.core.vit.VisionTransformerND`, with M2D's own log-mel.

M2D (Niizumi et al. 2022, arXiv:2210.14648; 2024, arXiv:2404.06095) pre-trains a ViT-B/16 on
80-mel × 608-frame log-mel spectrograms (6.08 s at 16 kHz). Read in nttcslab/m2d:

* ``m2d/runtime_audio.py`` (``get_backbone``): the file is read with ``torch.load``, unwrapped
  from ``checkpoint["model"]`` when present (the full training checkpoint
  ``checkpoint-300.pth`` of ``m2d_vit_base-80x608p16x16-221006-mr7``: ``{"model", "optimizer",
  "epoch", "scaler", "args"}``; the ``_enconly`` files are the flat encoder state dict); the
  sizes come from the folder name (``80x608p16x16``: input 80 × 608, patch 16 × 16, 16 kHz);
  ``norm_stats`` comes from the state dict, ``[-7.1, 4.2]`` when absent (the 2022 models);
  every key the encoder does not have is dropped (``drop_non_model_weights``).
* ``patch_m2d.diff`` → ``m2d/models_mae.py`` (``MaskedAutoencoderViT``, ``M2DViT``,
  ``m2d_vit_base``, ``M2DEncoderViT``): timm ``Block`` names, ``qkv_bias=True``, LayerNorm eps
  1e-6, ``patch_embed.proj`` ``(768, 1, 16, 16)`` with bias, ``cls_token`` ``(1, 1, 768)``,
  ``pos_embed`` ``(1, 1 + 5 * 38, 768)`` (fixed 2D sin-cos in MAE's layout, class row zero,
  stored), ``norm.*``; pretraining-only parts: ``mask_token`` ``(1, 1, 512)``,
  ``decoder_embed.*``, ``decoder_pos_embed``, ``decoder_blocks.N.*`` (8 blocks of 512),
  ``decoder_norm.*``, ``decoder_pred.*`` ``(768, 512)`` and the EMA target encoder
  ``target_blocks.N.*`` / ``target_norm.*`` (dropped by name), and ``norm_stats`` (checked
  against the contract, then dropped).
* ``get_to_melspec`` / ``to_feature`` / ``normalize_batch``: nnAudio log-mel (see
  :class:`~domainfm.domains.audio.release_frontends.SlaneyLogMelFrontend`) normalized
  ``(x - mean) / std`` with ``norm_stats``.

The stored ``pos_embed`` table is loaded as a learned table for the 5 × 38 grid (MAE's sin-cos
puts the time coordinate in the first half of the channels, the opposite of our own sin-cos,
so the release's table is used as stored); for other lengths our backbone resamples it
(bicubic) where M2D's runtime cuts long inputs into 608-frame chunks and truncates the table
for a shorter last chunk: feed 608-frame segments for M2D's numbers. M2D's scene embedding
concatenates the 5 frequency rows of patch tokens (3840-d) per time step and averages over
time; our ``forward`` averages all patch tokens (768-d); ``forward_intermediates`` gives the
``(B, 768, 5, T')`` map to stack them.

Example::

    >>> model, report = load_released("m2d-vit-b-80x608", "checkpoint-300.pth")
    >>> x = RELEASED.get("m2d-vit-b-80x608").contract.normalize(wave)[:, None, :, :608]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.release_frontends import SlaneyLogMelFrontend
from domainfm.domains.audio.released.audiomae import AUDIOMAE_VIT_B
from domainfm.pretrained.registry import released_checkpoint

M2D_NORM_STATS = (-7.1, 4.2)
"""``norm_stats`` of the 2022 M2D models (the runtime's default when a file has none)."""

M2D_VIT_B_80X608: dict[str, Any] = {**AUDIOMAE_VIT_B, "grid_size": [5, 38]}
"""``vit_nd`` kwargs of M2D ViT-B/16 on 80 × 608 log-mel: AudioMAE's ViT-B/16 over (mel,
time) (a timm ViT, 1 channel, mean of the patch tokens) on a 5 × 38 grid."""

M2D_INPUT = AudioContract.of(
    SlaneyLogMelFrontend(mean=M2D_NORM_STATS[0], std=M2D_NORM_STATS[1]),
    frames=608,
    extra={
        "norm_stats": list(M2D_NORM_STATS),
        "training_segment_seconds": 6.08,
        "pooling": "M2D: per time step the 5 frequency tokens concatenated, mean over time",
    },
)
_PRETRAINING = (
    "mask_token",
    "decoder_*",
    "target_blocks.*",
    "target_norm.*",
    "norm_stats",
)


@released_checkpoint(
    name="m2d-vit-b-80x608",
    architecture="vit_nd",
    kwargs=M2D_VIT_B_80X608,
    source_layout="M2D checkpoint {'model': state_dict, 'optimizer', 'epoch', 'scaler', 'args'} "
    "or the flat encoder-only state dict: cls_token, pos_embed (1, 191, 768), "
    "patch_embed.proj.*, blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*, norm.*, "
    "optional norm_stats (2,); mask_token, decoder_*, target_blocks.*, target_norm.* dropped",
    input=M2D_INPUT,
    license="NTT license (nttcslab/m2d LICENSE.pdf): check its terms before use",
    reference="https://github.com/nttcslab/m2d/releases/download/v0.1.0/"
    "m2d_vit_base-80x608p16x16-221006-mr7.zip (checkpoint-300.pth)",
    drop=_PRETRAINING,
)
def m2d_keys(content: Any) -> dict[str, Tensor]:
    """The state dict of an M2D file (``content["model"]`` or ``content``), every key passed
    through; a stored ``norm_stats`` other than the contract's is refused."""
    if not isinstance(content, Mapping):
        raise TypeError(f"expected a dict, found {type(content).__name__}")
    state = content.get("model", content)
    if not isinstance(state, Mapping) or not any(k.startswith("blocks.") for k in state):
        keys = list(state)[:6] if isinstance(state, Mapping) else type(state).__name__
        raise KeyError(f"no 'blocks.*' keys of an M2D ViT (found {keys})")
    stats = state.get("norm_stats")
    if isinstance(stats, Tensor) and not stats.is_meta:
        values = [float(v) for v in stats.flatten()]
        if len(values) != 2 or not all(
            math.isclose(a, b, rel_tol=1e-5) for a, b in zip(values, M2D_NORM_STATS, strict=True)
        ):
            raise KeyError(
                f"norm_stats {values} differ from this release's {list(M2D_NORM_STATS)}: "
                "another M2D model (its input normalization differs)"
            )
    return dict(state)
