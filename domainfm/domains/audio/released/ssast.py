"""Released SSAST weights (Gong et al. 2022, "SSAST: Self-Supervised Audio Spectrogram
Transformer", arXiv:2110.09784): DeiT encoders with class and distillation tokens over a
``(B, 1, 128 mel, 1024 frames)`` Kaldi fbank, mapped onto
:class:`~domainfm.domains.audio.distilled_vit.DistilledVisionTransformerND`.

Verified against YuanGongND/ssast (read, not run):

* ``src/models/ast_models.py::ASTModel`` (``pretrain_stage=True``): ``self.v`` is timm
  0.4.5's ``vit_deit_{tiny,small}_distilled_patch16_224`` / ``vit_deit_base_distilled_
  patch16_384`` (``cls_token_num = 2``; widths 192/384/768 with 3/6/12 heads, 12 blocks,
  qkv bias, LayerNorm eps 1e-6, classifier ``head`` and ``head_dist`` (1000, D) kept from
  the timm model); ``v.patch_embed.proj`` is replaced by a 1-channel
  ``Conv2d(kernel=(fshape, tshape), stride=kernel)``: (16, 16) for *Patch* models,
  (128, 2) for *Frame* models; ``v.pos_embed`` is a **learned** ``(1, 2 + N, D)`` table added
  to ``[cls, dist, patches]`` (prefix rows first). Pretraining-only parts: ``cpredlayer``
  and ``gpredlayer`` (``Linear(D, D), ReLU, Linear(D, 256)``), ``mask_embed`` (1, 1, D), and
  the scalar ``p_input_fdim`` (128) / ``p_input_tdim`` (1024) parameters recording the
  pretraining input size. ``forward`` turns the ``(B, T, F)`` input into ``(B, 1, F, T)``
  before the patch conv, so tokens are ordered (f, t) — our front end's orientation, no
  reordering needed.
* ``src/traintest_mask.py``: the model is wrapped in ``nn.DataParallel`` and saved with
  ``torch.save(audio_model.state_dict(), ...)``: a flat state dict whose keys all start
  with ``module.`` (``ASTModel`` refuses a file without it when fine-tuning).
* ``src/pretrain/run_mask_{patch,frame}{,_tiny}.sh``: 128 mel bins, ``target_length``
  1024, AudioSet mean/std ``-4.2677393`` / ``4.5689974``, 400 masked patches, base and tiny
  sizes; ``src/dataloader.py``: Kaldi fbank of the mean-removed waveform (``htk_compat``,
  Hanning, 10 ms shift, no energy, no dither), zero-padded / cut to 1024 frames, then
  ``(x - mean) / (2 std)``: :class:`~domainfm.domains.audio.frontends.KaldiFbankFrontend`'s
  defaults.
* ``pretrained_model/README.md`` / ``README.md``: SSAST-{Base,Small,Tiny}-Patch-400,
  SSAST-{Base,Tiny}-Frame-400 (AudioSet-2M + LibriSpeech), Dropbox links below.

The tiny/small/base and patch/frame files differ in shapes, so each is one entry; the 250
masked-patch variants and the ablation files have the base layouts and load with the base
entries.

**Pooling.** The pretraining losses read the patch outputs only, and SSAST's fine-tuning
default is their mean (``ft_avgtok``): ``global_pool="avg"``.

**Pretext head: none.** SSAST masks BEiT-style inside the encoder (``mask_embed`` replaces
masked patch embeddings, all tokens are encoded) and predicts from the encoder outputs with
two MLP heads; :class:`~domainfm.core.objectives.mae.MAE` encodes visible tokens only and
predicts through a Transformer decoder. The heads do not map onto it, even with
``infonce_weight``; they are dropped by name, and continued pretraining starts a fresh
decoder.

License: BSD-3-Clause (the repository's LICENSE).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from domainfm.domains.audio import distilled_vit  # noqa: F401 - registers vit_nd_distilled
from domainfm.domains.audio.released.audiomae import AUDIOSET_FBANK_INPUT
from domainfm.pretrained.registry import released_checkpoint

SIZES: dict[str, tuple[int, int]] = {"tiny": (192, 3), "small": (384, 6), "base": (768, 12)}
"""``(embed_dim, num_heads)`` of the DeiT sizes SSAST uses (12 blocks each)."""

PATCHES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "patch": ((16, 16), (8, 64)),
    "frame": ((128, 2), (1, 512)),
}
"""``(patch_size, grid_size)`` over (128 mel, 1024 frames) of the patch and frame models."""

DROP = ("cpredlayer.*", "gpredlayer.*", "mask_embed", "p_input_fdim", "p_input_tdim")
DROP_CLASSIFIER = ("head.*", "head_dist.*")
_DROPBOX = {
    "base-patch": "https://www.dropbox.com/s/ewrzpco95n9jdz6/SSAST-Base-Patch-400.pth",
    "base-frame": "https://www.dropbox.com/s/nx6nl4d4bl71sm8/SSAST-Base-Frame-400.pth",
    "small-patch": "https://www.dropbox.com/s/i24w446rl9pkf05/SSAST-Small-Patch-400.pth",
    "tiny-patch": "https://www.dropbox.com/s/fkbtf78y94113wz/SSAST-Tiny-Patch-400.pth",
    "tiny-frame": "https://www.dropbox.com/s/rx7g60ruzawffzv/SSAST-Tiny-Frame-400.pth",
}


def ssast_kwargs(size: str, kind: str) -> dict[str, Any]:
    """``vit_nd_distilled`` kwargs of SSAST-``size``-``kind`` (e.g. ``"base"``, ``"patch"``)."""
    dim, heads = SIZES[size]
    patch, grid = PATCHES[kind]
    return {
        "in_chans": 1,
        "spatial_dims": 2,
        "patch_size": list(patch),
        "embed_dim": dim,
        "depth": 12,
        "num_heads": heads,
        "mlp_ratio": 4.0,
        "qkv_bias": True,
        "pos_embed": "learned",
        "grid_size": list(grid),
        "global_pool": "avg",
        "axes": ["f", "t"],
        "norm_eps": 1e-6,
    }


def ssast_keys(content: Any) -> dict[str, Tensor]:
    """A DataParallel ``ASTModel`` state dict → ``vit_nd_distilled`` keys: ``module.v.<key>``
    → ``<key>``; other ``module.<key>`` (the pretext heads) → ``<key>``, left for the
    registry's drop patterns; keys without ``module.`` pass through unchanged (reported)."""
    if not isinstance(content, Mapping):
        raise TypeError(f"expected a state dict, found {type(content).__name__}")
    if not any(str(k).startswith("module.v.") for k in content):
        raise KeyError(
            f"no 'module.v.*' keys (not a DataParallel SSAST ASTModel state dict); found "
            f"{list(content)[:4]}"
        )
    out: dict[str, Tensor] = {}
    for key, value in content.items():
        name = str(key).removeprefix("module.")
        out[name.removeprefix("v.")] = value
    return out


for _size, _kind in (
    ("tiny", "patch"),
    ("tiny", "frame"),
    ("small", "patch"),
    ("base", "patch"),
    ("base", "frame"),
):
    _kw = ssast_kwargs(_size, _kind)
    _patch = "x".join(str(p) for p in _kw["patch_size"])
    released_checkpoint(
        name=f"ssast-{_size}-{_kind}-400",
        architecture="vit_nd_distilled",
        kwargs=_kw,
        source_layout=f"SSAST-{_size.title()}-{_kind.title()}-400.pth: DataParallel ASTModel "
        f"state dict: module.v.{{cls_token, dist_token, pos_embed (1, 514, {_kw['embed_dim']}), "
        f"patch_embed.proj.weight ({_kw['embed_dim']}, 1, {_patch.replace('x', ', ')}), "
        "blocks.0-11.*, norm.*, head.*, head_dist.*}, module.{cpredlayer, gpredlayer}.*, "
        "module.mask_embed, module.p_input_{fdim,tdim}; heads dropped",
        input=AUDIOSET_FBANK_INPUT,
        license="BSD-3-Clause (YuanGongND/ssast LICENSE)",
        reference=f"{_DROPBOX[f'{_size}-{_kind}']} (YuanGongND/ssast README, Pretrained Models)",
        drop=DROP + DROP_CLASSIFIER,
    )(ssast_keys)
