"""Released Swin UNETR weights: their real key layouts, mapped onto
:class:`~domainfm.domains.medical3d.swin_legacy.SwinViT3DLegacy` (MONAI's Swin encoder with
the patch merging of MONAI < 1.5, which every one of them was trained with; see below).

Each entry is a key-mapping function registered with
:func:`~domainfm.pretrained.registry.released_checkpoint`; files are local, read with
``weights_only=True``, and every key is reported (never a non-strict load): parts beyond the
encoder (SSL heads, decoders) are dropped by name (each entry's ``drop``, listed in
``report.dropped``). The layouts:

* ``model_swinvit.pt`` (Tang et al. 2022 self-supervised encoder, 5k CT): saved from DDP as
  ``{"state_dict": {"module.patch_embed.proj.weight", "module.layers1.0.blocks.0.mlp.fc1.weight",
  "module.layers1.0.downsample.reduction.weight", ...}}``. MONAI's ``SwinUNETR.load_from``
  (``monai/networks/nets/swin_unetr.py``) copies exactly these encoder keys by name and reads
  nothing else, so it never shows what else the file holds. The file holds more:
  ``module.norm.weight`` / ``module.norm.bias`` (the final LayerNorm of the original Swin
  encoder, ``16 * 48 = 768`` wide, which MONAI's ``SwinTransformer`` does not have) —
  Project-MONAI/research-contributions#150 ("two unexpected keys, norm.weight and norm.bias",
  loading it into the pretraining ``SSLHead``) and #346 (fc1/fc2 vs linear1/linear2). Both are
  dropped by name, and so are SSL heads (``module.rotation_*``, ``module.contrastive_*``,
  ``module.conv.*``) should a copy carry them; anything else is reported unexpected.
* the research pretraining script's checkpoints: ``{"state_dict": {"swin_vit.*" or
  "swinViT.*", plus the SSL heads "rotation_*", "contrastive_*", "conv.*"}}``.
* ``ssl_pretrained_weights.pth`` (50k-volume CT pretraining; MONAI's ``filter_swinunetr``):
  ``{"model": {"encoder.patch_embed.*", "encoder.layers1.0.0.blocks.0.*", "encoder.mask_token",
  "encoder.norm.*", "out.conv.conv.*"}}``.
* MONAI model-zoo Swin UNETR state dicts (``swinViT.*`` encoder + decoder keys).
* MONAI ``UNETR`` state dicts (e.g. the research-contributions BTCV ``UNETR_model_best_acc.pth``
  or a bundle's ``model.pt``): the ViT encoder under ``vit.*`` —
  ``vit.patch_embedding.patch_embeddings.weight`` (conv patch embedding),
  ``vit.patch_embedding.position_embeddings`` (learned, no class token),
  ``vit.blocks.N.{norm1,attn.qkv,attn.out_proj,norm2,mlp.linear1,mlp.linear2}``, ``vit.norm``
  — mapped onto :class:`~domainfm.core.vit.VisionTransformerND` (timm block names); each
  block's unused ``norm_cross_attn`` and the decoder keys (``encoder1..4``, ``decoder2..5``,
  ``out``) are dropped by name.

Which MONAI trained each: MONAI 1.5 (MONAI#8285, first tagged in 1.5.0rc1, January 2025)
changed the neighbour order of the 3D ``PatchMerging`` that ``SwinUNETR`` uses by default
(``downsample="merging"``); the old order goes back to MONAI's first Swin UNETR (MONAI#4074,
0.9.0). The same weights load into either without a key or shape difference, but compute other
features from the second stage on, so each Swin entry states the order it was trained with:

* ``swin-unetr-ssl-model_swinvit`` and ``swin-unetr-ssl-pretrain-checkpoint`` — old order.
  The CVPR 2022 weights are linked from research-contributions ``SwinUNETR/BTCV/README.md``
  since its first commit (2022-05-23) and from ``SwinUNETR/Pretrain/README.md``; the
  pretraining script (``Pretrain/models/ssl_head.py``) builds MONAI's ``SwinTransformer`` and
  ``Pretrain/requirements.txt`` pins MONAI from git at ``0.8.1+271.g07de215c`` (2022-05-27),
  then ``a23c7f54`` (0.9.0rc3+6, since 2022-06-13); ``monai/networks/nets/swin_unetr.py`` at
  both commits concatenates the old order, which MONAI < 1.5 kept on purpose for these weights
  (MONAI#5106) and into which its ``SwinUNETR.load_from`` loads ``model_swinvit.pt``.
* ``swin-unetr-ssl-50k`` — old order. ``ssl_pretrained_weights.pth`` (MONAI-extra-test-data
  0.8.1) first appears in MONAI tutorials ``self_supervised_pretraining/swinunetr_pretrained``
  (2023-05-06, fine-tuned there with MONAI 1.x's old-order ``SwinUNETR``); MONAI's
  ``filter_swinunetr`` (MONAI 1.3) attributes it to Disruptive Autoencoders (Valanarasu et
  al., arXiv:2307.16896). Their pretraining code (research-contributions
  ``DAE/Pretrain_full_contrast``, ``requirements.txt`` ``monai==0.8.0``) has its own copy of
  the encoder, ``models/swin_transformer_3d.py``, whose ``PatchMerging`` concatenates the same
  old order; its ``models/simmim.py`` ``SwinTransformerSkipForSimMIM`` wraps each stage in
  another ``ModuleList`` and adds ``mask_token``, which gives the file's
  ``encoder.layersN.0.0.*`` and ``encoder.mask_token`` keys.
* ``monai-zoo-swin-unetr`` — old order. The bundle's ``configs/train.json`` builds
  ``SwinUNETR`` with the default merging; its weights were last retrained in bundle 0.4.7
  (2023-04-21, "deterministic retrain", ``metadata.json`` ``monai_version`` 1.2.0rc4), earlier
  ones in 0.1.0 (0.9.0rc1) and 0.3.6 (1.0.1); later versions only re-host the file (0.5.5,
  2024-09-10: ``model_swin_unetr_btcv_segmentation_v1.pt``, ``monai_version`` 1.4.0).
* ``monai-unetr`` — not affected: a plain ViT (convolutional patch embedding, no patch
  merging; research-contributions ``UNETR/BTCV/requirements.txt``: ``monai==0.7.0``).

A Swin UNETR trained with MONAI >= 1.5 has the same keys; it belongs in ``swin_vit_3d``
(:class:`~domainfm.domains.medical3d.swin.SwinViT3D`), not in these entries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from torch import Tensor

from domainfm.domains.medical3d import swin_legacy  # noqa: F401  (registers the backbone)
from domainfm.domains.medical3d.released.abdominal_ct import abdominal_ct_input
from domainfm.domains.medical3d.released.nesting import require_mapping, unwrap
from domainfm.pretrained.registry import released_checkpoint

SWIN_UNETR_KWARGS: dict[str, Any] = {
    "in_chans": 1,
    "feature_size": 48,
    "depths": [2, 2, 2, 2],
    "num_heads": [3, 6, 12, 24],
    "window_size": 7,
}
"""``swin_vit_3d_legacy`` kwargs of the Swin UNETR encoder (Tang et al. 2022's SSL weights;
SuPreM and VoCo add ``use_v2``, VoCo its own ``feature_size``)."""
_CT_INPUT = abdominal_ct_input(
    spacing_mm=[1.5, 1.5, 2.0], crop_size=[96, 96, 96], extra={"roi_size": [96, 96, 96]}
)
_LICENSE = "Apache-2.0 (Project-MONAI research-contributions / MONAI)"
_ct_release = partial(released_checkpoint, input=_CT_INPUT, license=_LICENSE)
_SWIN_ARCHITECTURE = "swin_vit_3d_legacy"
"""MONAI's Swin encoder with the patch merging of MONAI < 1.5 (see the module docstring)."""
_swin_release = partial(_ct_release, architecture=_SWIN_ARCHITECTURE, kwargs=SWIN_UNETR_KWARGS)


def _rename(
    state: Mapping[str, Tensor],
    prefix: str,
    fix: Callable[[str], str] = lambda k: k,
    *,
    keep: tuple[str, ...] = (),
) -> dict[str, Tensor]:
    """``prefix + rest`` → ``swinViT. + fix(rest)`` with MLP names made MONAI's; keys starting
    with one of ``keep`` (pretraining parts, for the entry's ``drop``) and keys without
    ``prefix`` are kept as they are (so the load report names anything unforeseen)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.startswith(prefix) and not key.startswith(keep):
            rest = fix(key[len(prefix) :]).replace("mlp.fc1.", "mlp.linear1.")
            out["swinViT." + rest.replace("mlp.fc2.", "mlp.linear2.")] = value
        else:
            out[key] = value
    return out


_SSL_HEADS = ("rotation_pre.", "rotation_head.", "contrastive_pre.", "contrastive_head.", "conv.")
"""The SSL heads of the research pretraining model (``SSLHead``: rotation, contrastive and
reconstruction heads)."""
_SSL_HEAD_PATTERNS = tuple(f"{h}*" for h in _SSL_HEADS)
_SWINVIT_EXTRAS = tuple(f"module.{h}" for h in ("norm.", *_SSL_HEADS))


@_swin_release(
    name="swin-unetr-ssl-model_swinvit",
    source_layout="model_swinvit.pt: {'state_dict': {'module.<encoder key>'}}, MLP as fc1/fc2; "
    "module.norm.* (the original Swin's final LayerNorm, 16F wide) and any SSL head "
    "(module.rotation_*, module.contrastive_*, module.conv.*) dropped by name",
    reference="https://github.com/Project-MONAI/research-contributions/tree/main/SwinUNETR/Pretrain",
    drop=tuple(f"{k}*" for k in _SWINVIT_EXTRAS),
)
def _map_model_swinvit(content: Any) -> dict[str, Tensor]:
    return _rename(unwrap(content, "state_dict"), "module.", keep=_SWINVIT_EXTRAS)


@_swin_release(
    name="swin-unetr-ssl-pretrain-checkpoint",
    source_layout="pretraining script checkpoint: {'state_dict': {'swin_vit.*' | 'swinViT.*' | "
    "'module.swinViT.*', SSL heads rotation_*/contrastive_*/conv.* (dropped by name)}}",
    reference="https://github.com/Project-MONAI/research-contributions/tree/main/SwinUNETR/Pretrain",
    drop=_SSL_HEAD_PATTERNS,
)
def _map_pretrain_checkpoint(content: Any) -> dict[str, Tensor]:
    state = {k.removeprefix("module."): v for k, v in unwrap(content, "state_dict").items()}
    prefix = "swin_vit." if any(k.startswith("swin_vit.") for k in state) else "swinViT."
    return _rename(state, prefix)


_EXTRAS_50K = ("encoder.mask_token", "encoder.norm.", "out.")
"""Parts of the 50k-volume pretraining model beyond the Swin encoder (the keys MONAI's
``filter_swinunetr`` skips: ``encoder.mask_token``, ``encoder.norm.*``, ``out.conv.conv.*``)."""


@_swin_release(
    name="swin-unetr-ssl-50k",
    source_layout="ssl_pretrained_weights.pth: {'model': {'encoder.layersN.0.0.*'}}, plus "
    "encoder.mask_token / encoder.norm.* / out.conv.conv.* of the pretraining model (dropped "
    "by name)",
    reference="https://github.com/Project-MONAI/MONAI-extra-test-data/releases/tag/0.8.1",
    drop=("encoder.mask_token", "encoder.norm.*", "out.*"),
)
def _map_ssl_50k(content: Any) -> dict[str, Tensor]:
    collapse = re.compile(r"^(layers[1-4]\.\d+)\.\d+\.")  # layersN.0.0.x -> layersN.0.x
    return _rename(
        unwrap(content, "model"),
        "encoder.",
        lambda k: collapse.sub(r"\1.", k),
        keep=_EXTRAS_50K,
    )


_SWIN_UNETR_DECODER = tuple(
    f"{part}.*"
    for part in (
        *(f"encoder{i}" for i in (1, 2, 3, 4, 10)),
        *(f"decoder{i}" for i in range(1, 6)),
        "out",
    )
)
"""MONAI ``SwinUNETR``'s segmentation decoder: residual encoder blocks ``encoder{1,2,3,4,10}``,
up-sampling blocks ``decoder{1..5}`` and the output convolution ``out``."""


def _plain_or_state_dict(content: Any) -> Mapping[str, Tensor]:
    """A plain state dict, or the one nested under ``state_dict``."""
    outer = require_mapping(content, "a state dict")
    return require_mapping(outer.get("state_dict", outer), "a state dict")


@_swin_release(
    name="monai-zoo-swin-unetr",
    source_layout="MONAI SwinUNETR state dict (bundle models/model.pt): 'swinViT.*' encoder keys "
    "loaded; the decoder (encoder1..4, encoder10, decoder1..5, out) dropped by name",
    license="Apache-2.0 (MONAI model zoo; check the bundle's own license)",
    reference="https://github.com/Project-MONAI/model-zoo/tree/dev/models/swin_unetr_btcv_segmentation",
    drop=_SWIN_UNETR_DECODER,
)
def _map_monai_zoo(content: Any) -> dict[str, Tensor]:
    return dict(_plain_or_state_dict(content))


_UNETR_VIT = {
    "in_chans": 1,
    "spatial_dims": 3,
    "patch_size": 16,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
    "mlp_ratio": 4.0,
    "qkv_bias": False,
    "class_token": False,
    "pos_embed": "learned",
    "grid_size": 6,
    "global_pool": "avg",
    "norm_eps": 1e-5,
}
_UNETR_NAMES = (
    ("patch_embedding.patch_embeddings.", "patch_embed.proj."),
    ("patch_embedding.position_embeddings", "pos_embed"),
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.linear1.", ".mlp.fc1."),
    (".mlp.linear2.", ".mlp.fc2."),
)
_UNETR_DECODER = tuple(
    f"{part}.*"
    for part in (
        *(f"encoder{i}" for i in range(1, 5)),
        *(f"decoder{i}" for i in range(2, 6)),
        "out",
    )
)
"""MONAI ``UNETR``'s decoder: ``encoder1..4``, ``decoder2..5``, ``out``."""


@_ct_release(
    name="monai-unetr",
    architecture="vit_nd",
    kwargs=_UNETR_VIT,
    source_layout="MONAI UNETR state dict (optionally under 'state_dict', 'module.' prefixed): "
    "'vit.*' encoder keys mapped to timm names; the decoder (encoder1..4, decoder2..5, out) and "
    "each block's unused norm_cross_attn dropped by name",
    reference="https://github.com/Project-MONAI/research-contributions/tree/main/UNETR/BTCV",
    drop=(*_UNETR_DECODER, "blocks.*.norm_cross_attn.*"),
)
def _map_monai_unetr(content: Any) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in _plain_or_state_dict(content).items():
        key = key.removeprefix("module.")
        if key.startswith("vit."):
            key = key.removeprefix("vit.")
            for old, new in _UNETR_NAMES:
                key = key.replace(old, new)
        out[key] = value  # decoder keys as they are, for drop; anything else reported
    if not any(k.startswith("blocks.") for k in out):
        raise KeyError("no 'vit.*' keys: not a MONAI UNETR state dict")
    return out
