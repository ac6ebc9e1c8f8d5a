"""Released CROMA weights (TorchGeo ``CROMABase_Weights`` / ``CROMALarge_Weights``, the files
of antofuller/CROMA), one release per modality encoder, mapped onto
:class:`~domainfm.domains.geospatial.croma_vit.CROMAEncoder`.

Verified against TorchGeo 0.8.1 ``torchgeo/models/croma.py`` (``CROMA``, ``ViT``,
``load_weights``, read and run here) and the antofuller/CROMA README: ``CROMA_base.pt`` /
``CROMA_large.pt`` are a dict of five state dicts, ``{"s1_encoder", "s1_GAP_FFN",
"s2_encoder", "s2_GAP_FFN", "joint_encoder"}``; each encoder's keys are ``linear_input.*``,
``transformer.layers.N.0.{input_norm, to_qkv, to_out}.*``, ``transformer.layers.N.1.
{input_norm, net.0, net.3}.*``, ``transformer.norm_out.*`` (no position table: 2D ALiBi).
Base: D 768, optical depth 12, radar depth 6; large: D 1024, 24 and 12; 16 heads, 8 × 8
patches, 120 × 120 px (15 × 15 tokens) in pretraining.

One release name per modality encoder (``croma-base-s1``: radar, ``croma-base-s2``:
optical, and the large ones): the chosen encoder's keys are ours; the other modality's
encoder, both GAP-FFN heads (trained for the contrastive loss) and the joint radar-optical
cross-attention encoder are dropped by name (``s1_encoder.*``, ``s1_GAP_FFN.*``, ...); any
other top-level entry is reported.

Input contracts: Sentinel-2 L1C without the cirrus band B10 (12 bands) or Sentinel-1 GRD
(VV, VH); CROMA normalizes each channel with the batch's ``mean ± 2 std`` to ``[0, 1]``
(clipped; from SatMAE/SeCo, README ``normalize``), which the contract records as
preprocessing (TorchGeo's transforms: identity).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import Tensor

from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.croma_vit import CROMAEncoder  # noqa: F401 - registers
from domainfm.pretrained.registry import released_checkpoint

S2_12_BANDS = [
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12",
]  # fmt: skip
"""The 12 Sentinel-2 bands of CROMA's optical encoder (SSL4EO-S12 L1C without B10)."""

_PREP = (
    "per channel: clip((x - (mean - 2 std)) / (4 std), 0, 1) with the batch's mean/std "
    "(antofuller/CROMA README normalize); 120 x 120 px in pretraining"
)
CROMA_S2_INPUT = RasterContract(
    bands=S2_12_BANDS,
    normalization=None,
    gsd_m=10.0,
    extra={"image_size": [120, 120], "preprocessing": _PREP, "units": "Sentinel-2 L1C"},
)
CROMA_S1_INPUT = RasterContract(
    bands=["VV", "VH"],
    wavelengths_um=[55500.0, 55500.0],  # C-band SAR, 5.55 cm
    normalization=None,
    gsd_m=10.0,
    extra={"image_size": [120, 120], "preprocessing": _PREP, "units": "Sentinel-1 GRD (dB)"},
)

_GROUPS = ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")


def _croma_keys(content: Any, encoder: str) -> dict[str, Tensor]:
    """``content[encoder]`` keys as ours; every other group under its own prefix."""
    if not isinstance(content, Mapping):
        raise TypeError(f"expected a dict of state dicts, found {type(content).__name__}")
    if encoder not in content:
        raise KeyError(
            f"no {encoder!r} (CROMA's file holds {list(_GROUPS)}); found {list(content)[:6]}"
        )
    out: dict[str, Tensor] = {}
    for group, value in content.items():
        if isinstance(value, Mapping):
            prefix = "" if group == encoder else f"{group}."
            out.update({f"{prefix}{k}": v for k, v in value.items()})
        else:
            out[str(group)] = value  # reported
    return out


_LICENSE = "not stated in TorchGeo's enum (not verified here): see antofuller/CROMA (code MIT)"
_REF = "https://github.com/antofuller/CROMA; https://arxiv.org/abs/2311.00566"
_BASE_URL = "https://hf.co/torchgeo/croma (CROMA_base-0238d814.pt); "
_LARGE_URL = "https://hf.co/torchgeo/croma (CROMA_large-921e69ad.pt); "
_release = partial(released_checkpoint, architecture="croma_vit", license=_LICENSE)
_LAYOUT = (
    "TorchGeo CROMA{size}_Weights.CROMA_VIT / antofuller/CROMA CROMA_{size_l}.pt: "
    "{{s1_encoder, s1_GAP_FFN, s2_encoder, s2_GAP_FFN, joint_encoder}}; {enc} read "
    "(linear_input, transformer.layers.N.{{0,1}}.*, transformer.norm_out), the rest dropped"
)


def _drop_others(encoder: str) -> tuple[str, ...]:
    return tuple(f"{g}.*" for g in _GROUPS if g != encoder)


def _register_croma(size: str, encoder: str, embed_dim: int, depth: int) -> None:
    """Register ``croma-{size}-{s1|s2}``: ``encoder`` of CROMA_{size}.pt, the rest dropped."""
    optical = encoder == "s2_encoder"  # Sentinel-2 (12 bands); else Sentinel-1 (2)

    @_release(
        name=f"croma-{size}-{encoder[:2]}",
        kwargs={
            "in_chans": 12 if optical else 2,
            "embed_dim": embed_dim,
            "depth": depth,
            "num_heads": 16,
            "patch_size": 8,
        },
        source_layout=_LAYOUT.format(size=size.capitalize(), size_l=size, enc=encoder),
        input=CROMA_S2_INPUT if optical else CROMA_S1_INPUT,
        reference=(_BASE_URL if size == "base" else _LARGE_URL) + _REF,
        drop=_drop_others(encoder),
    )
    def _map(content: Any) -> dict[str, Tensor]:
        return _croma_keys(content, encoder)


# (size, encoder, width, depth): the S1 encoders are half as deep as the S2 ones
for _size, _encoder, _dim, _depth in (
    ("base", "s2_encoder", 768, 12),
    ("base", "s1_encoder", 768, 6),
    ("large", "s2_encoder", 1024, 24),
    ("large", "s1_encoder", 1024, 12),
):
    _register_croma(_size, _encoder, _dim, _depth)
