"""Released Prithvi weights (NASA/IBM, Hugging Face ``ibm-nasa-geospatial``): their real key
layouts, mapped onto :class:`~domainfm.domains.geospatial.prithvi.PrithviViT`.

Prithvi-EO-1.0 (Jakubik et al. 2023, arXiv:2310.18660) and Prithvi-EO-2.0 (Szwarcman et al.
2024, arXiv:2412.02732): ViT MAEs pretrained on HLS v2 surface reflectance time series, 6
bands at 30 m. Files are local (never downloaded), read with ``weights_only=True`` and loaded
strictly; the MAE decoder and the fixed position tables are dropped by name (reported), any
other key is left in place for the load report to name.

Layouts, and where each was verified (code read, not run; no file was downloaded):

* **Prithvi-EO-1.0-100M** (``Prithvi_EO_V1_100M.pt``, formerly ``Prithvi-100M/Prithvi_100M.pt``):
  the flat ``state_dict()`` of the Prithvi-100M ``Prithvi.py`` ``MaskedAutoencoderViT``:
  ``cls_token`` ``(1, 1, 768)``, ``pos_embed`` ``(1, 1 + 3*14*14, 768)`` (a frozen
  ``nn.Parameter``: fixed 3D sin-cos for 3 frames of 224 px), ``patch_embed.proj.weight``
  ``(768, 6, 1, 16, 16)`` (Conv3d, tubelet 1), ``blocks.0-11.*`` (timm ``Block``, qkv bias,
  ``nn.LayerNorm``), ``norm.*``; decoder ``decoder_embed.*`` ``(512, 768)``, ``mask_token``,
  ``decoder_pos_embed`` ``(1, 589, 512)``, ``decoder_blocks.0-7.*``, ``decoder_norm.*``,
  ``decoder_pred.*`` ``(1536, 512)``. Sizes from ``Prithvi_100M_config.yaml`` ``model_args``;
  its inference script and hls-foundation-os ``geospatial_fm/geospatial_fm.py``
  (``TemporalViTEncoder``: the same encoder names) delete ``pos_embed`` /
  ``decoder_pos_embed`` and load with ``strict=False``.
* **Prithvi-EO-2.0-300M / -600M (-TL)** (``Prithvi_EO_V2_{300M,600M}[_TL].pt``): the flat
  ``state_dict()`` of ``PrithviMAE`` (IBM/terratorch ``terratorch/models/backbones/
  prithvi_mae.py``; the same file ships in the Hugging Face repositories): ``encoder.*`` (the
  1.0 encoder names, ``encoder.pos_embed`` a registered buffer for 4 frames) and ``decoder.*``
  (``decoder.decoder_embed``, ``decoder.mask_token``, ``decoder.decoder_pos_embed``,
  ``decoder.decoder_blocks``, ``decoder.decoder_norm``, ``decoder.decoder_pred``). Sizes from
  ``terratorch/models/backbones/prithvi_vit.py`` ``prithvi_cfgs``: 300M ViT-L (1024, depth
  24, 16 heads, patch ``(1, 16, 16)``), 600M ViT-H (1280, depth 32, 16 heads, patch ``(1, 14,
  14)``), decoder 512 wide, depth 8, 16 heads; the -TL variants ``coords_encoding=["time",
  "location"]``, ``coords_scale_learn=True``: ``encoder.temporal_embed_enc.scale``,
  ``encoder.location_embed_enc.scale`` (learned ``(1,)``) and the decoder's
  ``decoder.temporal_embed_dec.scale`` / ``decoder.location_embed_dec.scale``. terratorch's
  ``checkpoint_filter_fn_vit`` strips ``encoder.``, drops ``decoder*`` / ``*_dec*`` /
  ``mask_token`` and replaces ``pos_embed``; ``prithvi_vit.py`` also holds the mean/std.
* **Input**: HLS v2 reflectance x 10000 (L30 ``B02``-``B07``, S30 ``B02, B03, B04, B8A, B11,
  B12``), per-band ``(x - mean) / std`` with each release's statistics (1.0:
  ``Prithvi_100M_config.yaml`` ``train_params.data_mean`` / ``data_std``; 2.0: the
  repositories' ``config.json`` ``pretrained_cfg.mean`` / ``std``), nodata ``-9999``; 224 px,
  3 frames (1.0) or 4 (2.0) in pretraining. Band names are terratorch's ``HLSBands``, so that
  Sentinel-2 names (whose ``B05``-``B07`` are red-edge bands) never map onto them by accident.
  Temporal coordinates ``(year, day of year)`` per frame, location ``(lat, lon)`` in degrees.

**Position tables**: :class:`PrithviViT` recomputes its 3D sin-cos table for each input grid
(equal to the stored one on the pretraining grid), so ``pos_embed`` is dropped by name.

**No pretext head** (``pretext=None``; the decoder keys are dropped and reported): the
decoder does not map onto :class:`~domainfm.core.objectives.mae.MAE` exactly:

1. its decoder sequence carries the encoder's class token (projected by ``decoder_embed``)
   in front of the patch tokens, and every decoder block attends to it; our MAE decodes the
   patch tokens only;
2. its decoder positions are Prithvi's 3D sin-cos layout (6/16 width, 6/16 height, 4/16
   time, concatenated ``(w, h, t)``), ours an even split ``(t, h, w)`` with zero padding;
3. the -TL decoders add their own temporal and location embeddings (learned scales
   ``decoder.*_embed_dec.scale``); our MAE takes no coordinates;
4. ``decoder_norm`` is ``nn.LayerNorm`` (eps 1e-5), ours eps 1e-6 (minor).

The pixel order of ``decoder_pred`` (``b c (t s) (h p) (w q) -> b (t h w) (s p q c)``) is
ours, and the loss is plain-pixel MSE on masked tokens (``norm_pix_loss=False``), so an MAE
with a class-token pass-through and a pluggable decoder position table would take the decoder
unchanged.

Example::

    >>> model, report = load_released("prithvi-eo-2.0-300m-tl", "Prithvi_EO_V2_300M_TL.pt")
    >>> tokens, grid = model.forward_tokens(
    ...     x, temporal_coords=when, location_coords=where)   # x: (B, 6, T, H, W)
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import Tensor

from domainfm.core.state_nesting import flat_state
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.pretrained.registry import released_checkpoint

HLS_BANDS = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
"""The six HLS bands of every Prithvi release, in channel order (terratorch ``HLSBands``)."""

HLS_WAVELENGTHS_UM = [0.482, 0.561, 0.655, 0.865, 1.609, 2.201]
"""Centre wavelengths (µm) of those bands: Landsat 8 OLI bands 2-7, whose bandpasses HLS
harmonizes Sentinel-2 to."""

PRITHVI_V1_MEAN = [
    775.2290211032589,
    1080.992780391705,
    1228.5855250417867,
    2497.2022620507532,
    2204.2139147975554,
    1610.8324823273745,
]
PRITHVI_V1_STD = [
    1281.526139861424,
    1270.0297974547493,
    1399.4802505642526,
    1368.3446143747644,
    1291.6764008585435,
    1154.505683480695,
]
PRITHVI_V2_MEAN = [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0]
PRITHVI_V2_STD = [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0]

_HLS_EXTRA: dict[str, Any] = {
    "units": "HLS v2 surface reflectance x 10000 (int16, nodata -9999)",
    "hls_bands": {
        "L30": ["B02", "B03", "B04", "B05", "B06", "B07"],
        "S30": ["B02", "B03", "B04", "B8A", "B11", "B12"],
    },
    "image_size": [224, 224],
    "layout": "(B, C, T, H, W)",
}


def _hls_input(mean: list[float], std: list[float], *, frames: int, tl: bool) -> RasterContract:
    extra = {**_HLS_EXTRA, "frames": frames}
    if tl:
        extra["coords"] = {
            "temporal_coords": "(B, T, 2): year, day of year of each frame",
            "location_coords": "(B, 2): latitude, longitude in degrees",
        }
    return RasterContract(
        bands=list(HLS_BANDS),
        normalization={"type": "mean_std", "scale": 1.0, "mean": list(mean), "std": list(std)},
        wavelengths_um=list(HLS_WAVELENGTHS_UM),
        gsd_m=30.0,
        nodata=-9999.0,
        extra=extra,
    )


V1_100M: dict[str, Any] = {
    "in_chans": 6,
    "patch_size": [1, 16, 16],
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
}
"""``prithvi_vit`` kwargs of Prithvi-EO-1.0-100M (ViT-B, tubelet 1, patch 16)."""
V2_300M: dict[str, Any] = {**V1_100M, "embed_dim": 1024, "depth": 24, "num_heads": 16}
"""``prithvi_vit`` kwargs of Prithvi-EO-2.0-300M (ViT-L, patch 16)."""
V2_600M: dict[str, Any] = {**V2_300M, "embed_dim": 1280, "depth": 32, "patch_size": [1, 14, 14]}
"""``prithvi_vit`` kwargs of Prithvi-EO-2.0-600M (ViT-H, patch 14)."""
TL: dict[str, Any] = {"coords_encoding": ["time", "location"], "coords_scale_learn": True}
"""What the -TL releases add: learned-scale temporal and location embeddings."""

_LICENSE = "Apache-2.0 (the ibm-nasa-geospatial model cards)"
_HF = "https://huggingface.co/ibm-nasa-geospatial"
_DECODER_V1 = ("pos_embed", "mask_token", "decoder_*")
_DECODER_V2 = ("pos_embed", "decoder.*")
_V2_INPUT = partial(_hls_input, PRITHVI_V2_MEAN, PRITHVI_V2_STD, frames=4)
_prithvi_release = partial(released_checkpoint, architecture="prithvi_vit", license=_LICENSE)


@_prithvi_release(
    name="prithvi-eo-1.0-100m",
    kwargs=V1_100M,
    source_layout="Prithvi-EO-1.0 MaskedAutoencoderViT flat state dict: cls_token, pos_embed "
    "(1, 589, 768; dropped, recomputed), patch_embed.proj.weight (768, 6, 1, 16, 16), "
    "blocks.0-11.*, norm.*; decoder_embed, mask_token, decoder_pos_embed, decoder_blocks.0-7, "
    "decoder_norm, decoder_pred (the MAE decoder, dropped)",
    input=_hls_input(PRITHVI_V1_MEAN, PRITHVI_V1_STD, frames=3, tl=False),
    reference=f"{_HF}/Prithvi-EO-1.0-100M (Prithvi_EO_V1_100M.pt, formerly "
    f"{_HF}/Prithvi-100M Prithvi_100M.pt)",
    drop=_DECODER_V1,
)
def _map_prithvi_v1(content: Any) -> dict[str, Tensor]:
    """Flat keys are ours; a Prithvi-EO-2.0 file (``encoder.*``) is refused by name."""
    state = flat_state(content)
    if "cls_token" not in state:
        found = list(state)[:4]
        raise KeyError(
            f"expected Prithvi-EO-1.0's flat keys (cls_token, blocks.N.*), found {found}"
        )
    return dict(state)


def _v2_layout(tl: bool) -> str:
    coords = ", temporal_embed_enc.scale, location_embed_enc.scale" if tl else ""
    return (
        "Prithvi-EO-2.0 PrithviMAE flat state dict: encoder.(cls_token, pos_embed (dropped, "
        f"recomputed), patch_embed.proj.weight (D, 6, 1, p, p), blocks.N.*, norm.*{coords}), "
        "decoder.* (the MAE decoder, dropped)"
    )


def _map_prithvi_v2(content: Any) -> dict[str, Tensor]:
    """``encoder.<key>`` → ``<key>``; ``decoder.*`` kept (dropped by name); other keys pass
    through for the report. A flat (1.0) file is refused by name."""
    state = flat_state(content)
    if "encoder.cls_token" not in state:
        found = list(state)[:4]
        raise KeyError(f"expected PrithviMAE keys encoder.* / decoder.*, found {found}")
    return {key.removeprefix("encoder."): value for key, value in state.items()}


for _size, _arch in (("300M", V2_300M), ("600M", V2_600M)):
    for _tl in (False, True):
        _variant = f"Prithvi-EO-2.0-{_size}" + ("-TL" if _tl else "")
        _prithvi_release(
            name=_variant.lower(),
            kwargs={**_arch, **TL} if _tl else _arch,
            source_layout=_v2_layout(_tl),
            input=_V2_INPUT(tl=_tl),
            reference=f"{_HF}/{_variant} (Prithvi_EO_V2_{_size}{'_TL' if _tl else ''}.pt)",
            drop=_DECODER_V2,
        )(_map_prithvi_v2)
