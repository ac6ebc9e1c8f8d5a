"""SatMAE releases (Cong et al. 2022, arXiv:2207.08051): the multispectral group-channel ViT-L
pretrained on fMoW-Sentinel, and the RGB ViT-L pretrained on fMoW.

Verified against sustainlab-group/SatMAE (commit e31c11f):

* ``models_mae_group_channels.py`` ``MaskedAutoencoderGroupChannelViT`` /
  ``mae_vit_large_patch16_dec512d8b`` (what the pretraining file holds) and
  ``models_vit_group_channels.py`` ``GroupChannelsVisionTransformer.forward_features`` (the
  encoder forward): ``patch_embed.{0,1,2}.proj`` (timm ``PatchEmbed`` per band group),
  ``cls_token``, ``pos_embed (1, 1 + L, D - 256)`` (fixed 2-D sin-cos, class row zero),
  ``channel_embed (1, G, 256)`` (fixed 1-D sin-cos of the group index), timm ``blocks.N.*``,
  ``norm``; the decoder ``decoder_embed``, ``mask_token``, ``decoder_pos_embed
  (1, 1 + L, 384)``, ``decoder_channel_embed (1, G + 1, 128)``, ``decoder_blocks.N.*``,
  ``decoder_norm``, ``decoder_pred.{0,1,2}`` (one head per group, ``|g| · p²`` outputs).
* ``main_pretrain.py``: ``--grouped_bands`` defaults ``[[0, 1, 2, 6], [3, 4, 5, 7], [8, 9]]``;
  the README's pretraining command: ``--input_size 96 --patch_size 8 --dropped_bands 0 9 10``.
  ``util/misc.py`` ``save_model``: ``{'model': state_dict, 'optimizer', 'epoch', 'scaler',
  'args'}``.
* ``util/datasets.py`` ``SentinelIndividualImageDataset``: 13 fMoW-Sentinel bands B01..B12
  with B8A (L1C digital numbers; per-band ``mean``/``std``), ``SentinelNormalize``
  (``(x - (mean - 2 std)) / (4 std) · 255`` clipped to 0..255 as uint8) then ``ToTensor``
  (/255), then bands 0, 9, 10 (B01, B09, B10) dropped: the 10 inputs are
  B02, B03, B04, B05, B06, B07, B08, B8A, B11, B12, grouped (B02, B03, B04, B08),
  (B05, B06, B07, B8A), (B11, B12). ``CustomDatasetFromImages`` (fMoW RGB): ``ToTensor`` then
  ``Normalize`` with the fMoW RGB mean/std.
* ``models_mae.py`` ``MaskedAutoencoderViT`` (the RGB pretraining file, ``fmow_pretrain.pth``):
  plain MAE ViT-L/16 keys, patchify ``nchpwq -> nhwpqc`` (pixels ``(p, q, c)`` per token, our
  :func:`~domainfm.core.patching.patchify` order).

Pretext heads: the RGB file's MAE decoder maps onto :class:`~domainfm.core.objectives.mae.MAE`
key for key (``decoder_pos_embed``, a fixed table we recompute, dropped), with MAE's options
for the released code's decoder: the class token passes through it
(``decoder_prefix_tokens=1``) and its 2D sin-cos table puts the column coordinate first
(``decoder_pos_reverse_axes``). The group-channel
decoder does not: its positions are ``[2-D sin-cos (384) ‖ group code (128)]`` concatenated,
it carries the class token through the decoder, and ``decoder_pred`` is one head per band
group with ``|g| · p²`` outputs (256, 256, 128), where our MAE has one head over every
token's ``C · p²`` pixels; so it has ``pretext=None`` (continued pretraining starts the
decoder fresh, reported as such).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import Tensor

from domainfm.core.state_nesting import nested_state
from domainfm.domains.geospatial import satmae_group_vit  # noqa: F401 - registers the backbone
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.pretrained.registry import PretextHead, released_checkpoint

SATMAE_BANDS = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
"""The 10 input bands of the multispectral release, in channel order."""

SATMAE_GROUPS = ((0, 1, 2, 6), (3, 4, 5, 7), (8, 9))
"""``--grouped_bands`` default: (B02, B03, B04, B08), (B05, B06, B07, B8A), (B11, B12)."""

_S2_MEAN = [1370.19151926, 1184.3824625, 1120.77120066, 1136.26026392, 1263.73947144,
            1645.40315151, 1846.87040806, 1762.59530783, 1972.62420416, 582.72633433,
            14.77112979, 1732.16362238, 1247.91870117]  # fmt: skip
_S2_STD = [633.15169573, 650.2842772, 712.12507725, 965.23119807, 948.9819932,
           1108.06650639, 1258.36394548, 1233.1492281, 1364.38688993, 472.37967789,
           14.3114637, 1310.36996126, 1087.6020813]  # fmt: skip
_KEPT = [i for i in range(13) if i not in (0, 9, 10)]  # --dropped_bands 0 9 10

SATMAE_S2_INPUT = RasterContract(
    bands=SATMAE_BANDS,
    normalization={
        "type": "mean_std",
        "scale": 1.0,
        "mean": [_S2_MEAN[i] - 2 * _S2_STD[i] for i in _KEPT],
        "std": [4 * _S2_STD[i] for i in _KEPT],
    },
    gsd_m=10.0,
    extra={
        "units": "Sentinel-2 L1C digital numbers (fMoW-Sentinel GeoTIFFs), all bands on one grid",
        "image_size": [96, 96],
        "clip": [0.0, 1.0],
        "preprocessing": "SentinelNormalize: (x - (mean - 2 std)) / (4 std), clipped to [0, 1] "
        "and quantized to 1/255 (uint8, then ToTensor); bands B01, B09, B10 dropped",
    },
)
"""Input of the multispectral release: ``(x - (mean - 2 std)) / (4 std)`` of the fMoW-Sentinel
band statistics, clipped to ``[0, 1]`` (see the module docstring)."""

SATMAE_FMOW_RGB_INPUT = RasterContract(
    bands=["R", "G", "B"],
    normalization={
        "type": "mean_std",
        "scale": 1 / 255,
        "mean": [0.4182007312774658, 0.4214799106121063, 0.3991275727748871],
        "std": [0.28774282336235046, 0.27541765570640564, 0.2764017581939697],
    },
    extra={"units": "8-bit RGB (fMoW JPEGs)", "image_size": [224, 224]},
)
"""Input of the fMoW RGB release: ``ToTensor`` (/255) then the fMoW RGB mean/std."""

GROUP_VIT_L: dict[str, Any] = {
    "channel_groups": [list(g) for g in SATMAE_GROUPS],
    "patch_size": 8,
    "grid_size": 12,
    "embed_dim": 1024,
    "channel_embed": 256,
    "depth": 24,
    "num_heads": 16,
}
"""``satmae_group_channel_vit`` kwargs of ``mae_vit_large_patch16`` at 96 pixels, patch 8."""

VIT_L16_RGB: dict[str, Any] = {
    "in_chans": 3,
    "spatial_dims": 2,
    "patch_size": 16,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
    "pos_embed": "learned",
    "grid_size": 14,
}
"""``vit_nd`` kwargs of SatMAE's fMoW RGB ``mae_vit_large_patch16`` (224 pixels)."""

_LICENSE = "CC-BY-NC-4.0 (sustainlab-group/SatMAE LICENSE: Attribution-NonCommercial 4.0)"
_PAPER = "https://arxiv.org/abs/2207.08051"
_satmae_release = partial(  # both releases' license, and their MAE decoder dropped
    released_checkpoint, license=_LICENSE, drop=("decoder_*", "mask_token")
)


def satmae_model_state(content: Any) -> Mapping[str, Tensor]:
    """``content['model']`` of a SatMAE checkpoint (``KeyError`` naming the keys found)."""
    return nested_state(content, "model")


def _map_fmow_rgb_decoder(content: Any) -> dict[str, Tensor]:
    """The MAE decoder of the fMoW RGB file, under :class:`MAE`'s names (the same)."""
    state = satmae_model_state(content)
    return {k: v for k, v in state.items() if k.startswith(("decoder_", "mask_token"))}


@_satmae_release(
    name="satmae-group-channel-vit-l",
    architecture="satmae_group_channel_vit",
    kwargs=GROUP_VIT_L,
    source_layout="SatMAE pretrain-vit-large-e199.pth: {'model': MaskedAutoencoderGroupChannelViT "
    "state: patch_embed.{0,1,2}.proj.* ((1024, 4|4|2, 8, 8)), cls_token, pos_embed (1, 145, 768), "
    "channel_embed (1, 3, 256), blocks.N.*, norm.*, decoder_* and mask_token (dropped)}, "
    "'optimizer', 'epoch', 'scaler', 'args'}",
    input=SATMAE_S2_INPUT,
    reference="https://zenodo.org/record/7338613/files/pretrain-vit-large-e199.pth; " + _PAPER,
)
@_satmae_release(
    name="satmae-fmow-rgb-vit-l",
    architecture="vit_nd",
    kwargs=VIT_L16_RGB,
    source_layout="SatMAE fmow_pretrain.pth: {'model': MaskedAutoencoderViT (models_mae) state: "
    "cls_token, pos_embed (1, 197, 1024), patch_embed.proj.* ((1024, 3, 16, 16)), blocks.N.*, "
    "norm.*, decoder_* and mask_token (dropped; pretext head)}, ...}",
    input=SATMAE_FMOW_RGB_INPUT,
    reference="https://zenodo.org/record/7369797/files/fmow_pretrain.pth; " + _PAPER,
    pretext=PretextHead(
        objective="mae",
        kwargs={
            "decoder_dim": 512,
            "decoder_depth": 8,
            "decoder_heads": 16,
            "mlp_ratio": 4.0,
            "decoder_prefix_tokens": 1,  # models_mae passes the class token through
            "decoder_pos_reverse_axes": True,  # its 2D table: column coordinate first
        },
        map_keys=_map_fmow_rgb_decoder,
        drop=("decoder_pos_embed",),
    ),
)
def _map_satmae(content: Any) -> dict[str, Tensor]:
    """The encoder keys (plain MAE ViT or group-channel ViT) are ours already; the decoder
    passes through to ``drop``."""
    return dict(satmae_model_state(content))
