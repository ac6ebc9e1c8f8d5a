"""Released AudioMAE weights (Huang et al. 2022, "Masked Autoencoders that Listen",
arXiv:2207.06405): the ViT-B/16 encoder pretrained on AudioSet-2M, mapped onto
:class:`~domainfm.core.vit.VisionTransformerND` over ``(B, 1, 128 mel, 1024 frames)``.

Verified against facebookresearch/AudioMAE (read, not run):

* ``README.md`` "Checkpoints": "ViT-B, AS-2M pretrained" (``pretrained.pth``, Google Drive)
  and "pretrained+finetuned" (``finetuned.pth``).
* ``main_pretrain.py`` + ``submit_pretrain_audioset2M.sh``: ``models_mae.
  mae_vit_base_patch16`` with ``in_chans=1``, ``audio_exp=True``, ``img_size=(1024, 128)``
  (time × mel), ``--decoder_mode 1``, ``norm_pix_loss``, mask ratio 0.8; saved by
  ``util/misc.save_model`` as ``{"model": state_dict, "optimizer", "epoch", "scaler",
  "args"}`` — the weights are ``checkpoint["model"]``.
* ``models_mae.py::MaskedAutoencoderViT``: encoder keys are timm ViT keys —
  ``cls_token`` (1, 1, 768), ``pos_embed`` (1, 513, 768) (a **fixed** 2D sin-cos table,
  ``requires_grad=False``, stored in the file: loaded here, resampled with a report for
  another grid), ``patch_embed.proj.{weight (768, 1, 16, 16), bias}`` (``util/patch_embed.
  PatchEmbed_org``, a plain conv), ``blocks.0-11.{norm1, attn.qkv, attn.proj, norm2,
  mlp.fc1, mlp.fc2}.*`` (qkv bias, LayerNorm eps 1e-6), ``norm.*``. The class token gets
  ``pos_embed[:, :1]`` (zeros) added, as ours. Decoder: ``decoder_embed`` (512, 768),
  ``mask_token`` (1, 1, 512), ``decoder_pos_embed`` (1, 513, 512), ``decoder_norm``,
  ``decoder_pred`` (256, 512) and, with ``decoder_mode=1``, **16** ``decoder_blocks`` of
  ``timm_patch/swin_transformer.SwinTransformerBlock`` (window 4×4 over the 64×8 grid,
  shift (2, 0) on odd blocks; keys ``attn.{tau, qkv, proj, meta_mlp.fc1, meta_mlp.fc2}``,
  ``norm1``, ``mlp.fc1``, ``mlp.fc2``, ``norm2``; a Swin-v2 log-spaced continuous position
  bias).
* ``dataset.py``: Kaldi fbank of the waveform minus its mean (``htk_compat``, 128 mel,
  Hanning, 25 ms / 10 ms, no energy, no dither), padded with zeros / cut to 1024 frames,
  then ``(x - mean) / (2 std)`` with AudioSet's ``-4.2677393`` / ``4.5689974``
  (``main_pretrain.py`` ``norm_stats``): exactly
  :class:`~domainfm.domains.audio.frontends.KaldiFbankFrontend`'s defaults.

**Orientation.** AudioMAE feeds ``(B, 1, 1024 time, 128 mel)``: the patch conv runs over
(time, mel) and tokens are ordered time-major on a 64 × 8 grid. Our audio backbones take the
front end's ``(B, 1, mel, time)`` (grid axes ``("f", "t")``, time last, as HEAR and SED read
token columns). The map therefore transposes the patch kernel's two spatial axes and
reorders the position table's rows from (t, f) to (f, t). Attention is permutation
equivariant, so the tokens are AudioMAE's, reordered (the tests check it against timm's
``VisionTransformer`` on the transposed input).

**Pooling.** In pretraining with ``decoder_mode=1`` the decoder drops the class token, so it
gets no training signal; AudioMAE's fine-tuning pools the mean of the patch tokens
(``models_vit.py``, ``global_pool=True``). ``global_pool="avg"`` here (over normed tokens).

**Not registered:**

* the pretext head: AudioMAE's AS-2M decoder is 16 shifted-window Swin-v2 blocks with
  continuous position bias, not :class:`~domainfm.core.objectives.mae.MAE`'s global-attention
  timm blocks, so it cannot be mapped onto our MAE; the decoder (``decoder_*``,
  ``mask_token``) is dropped by name and continued pretraining starts a fresh decoder.
* ``finetuned.pth``: ``models_vit.VisionTransformer(global_pool=True)`` deletes ``norm`` and
  applies ``fc_norm`` to the mean of the *un-normalized* tokens, which is not our encoder
  with its head dropped (``fc_norm`` is no ``norm``), so it is not an encoder-only release.

License: CC BY-NC 4.0 (the repository's LICENSE, which covers the released weights).
"""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from torch import Tensor

from domainfm.core.registry import init_config
from domainfm.core.state_nesting import nested_state
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.frontends import KaldiFbankFrontend
from domainfm.pretrained.registry import released_checkpoint

MEL_PATCHES = 8
"""Patches along the 128 mel bins (16 each)."""

AUDIOMAE_VIT_B: dict[str, Any] = {
    "in_chans": 1,
    "spatial_dims": 2,
    "patch_size": 16,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "class_token": True,
    "pos_embed": "learned",
    "grid_size": [MEL_PATCHES, 64],
    "global_pool": "avg",
    "axes": ["f", "t"],
    "norm_eps": 1e-6,
}
"""``vit_nd`` kwargs of AudioMAE ViT-B/16 over (128 mel, 1024 frames)."""

AUDIOSET_FBANK_INPUT = AudioContract(
    sample_rate=16000,
    frontend=init_config(KaldiFbankFrontend()),  # 128 mel, 25/10 ms, AudioSet mean/std
    frames=1024,
    extra={
        "model_input": "(B, 1, 128 mel, 1024 frames): the front end's (B, F, T) with a "
        "channel axis",
        "padding": "clips shorter than 1024 frames are zero-padded in the raw fbank "
        "(before normalization), longer ones cut",
        "pooling": "mean of patch tokens",
    },
)
"""Input contract of AudioMAE's AudioSet pretraining: 16 kHz Kaldi fbank, 128 mel bins,
``(x + 4.2677393) / (2 * 4.5689974)``, 1024 frames (10.24 s)."""

_DROP = ("decoder_*", "mask_token")


def audiomae_encoder_keys(content: Any) -> dict[str, Tensor]:
    """``checkpoint["model"]`` of AudioMAE → ``vit_nd`` keys over (mel, time): the patch
    kernel transposed, the position rows reordered (t, f) → (f, t); every other key passes
    through (the decoder is dropped by the registry's patterns)."""
    state = dict(nested_state(content, "model"))
    for key in ("patch_embed.proj.weight", "pos_embed"):
        if key not in state:
            raise KeyError(f"no {key!r}: not an AudioMAE ViT state dict")
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"].transpose(-1, -2)
    pos = state["pos_embed"]
    rows = pos.shape[1] - 1
    if pos.ndim != 3 or rows % MEL_PATCHES:
        raise KeyError(
            f"pos_embed {tuple(pos.shape)} is not (1, 1 + T * {MEL_PATCHES}, D) of a 128-mel "
            "AudioMAE"
        )
    table = rearrange(pos[:, 1:], "b (t f) d -> b (f t) d", f=MEL_PATCHES)
    state["pos_embed"] = torch.cat([pos[:, :1], table], dim=1)
    return state


released_checkpoint(
    name="audiomae-vit-b-as2m-pretrained",
    architecture="vit_nd",
    kwargs=AUDIOMAE_VIT_B,
    source_layout="AudioMAE pretrained.pth: {'model': {cls_token, pos_embed (1, 513, 768) "
    "fixed sin-cos, patch_embed.proj.weight (768, 1, 16, 16) over (time, mel), blocks.0-11.*, "
    "norm.*, decoder_embed, mask_token, decoder_pos_embed, decoder_blocks.0-15.* (Swin), "
    "decoder_norm, decoder_pred (256, 512)}, ...}; decoder dropped",
    input=AUDIOSET_FBANK_INPUT,
    license="CC-BY-NC-4.0 (facebookresearch/AudioMAE LICENSE)",
    reference="https://github.com/facebookresearch/AudioMAE#checkpoints "
    "(ViT-B, AS-2M pretrained: pretrained.pth)",
    drop=_DROP,
)(audiomae_encoder_keys)
