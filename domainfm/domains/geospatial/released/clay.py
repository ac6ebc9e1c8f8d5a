"""Clay releases (Clay Foundation): the v1 base and v1.5 large encoders, read from their
Lightning checkpoints.

Verified against Clay-foundation/model:

* tag ``v1.0``, ``src/model.py``: ``ClayMAEModule`` (Lightning, ``self.model = ClayMAE``,
  ``model_size="base"``), ``ClayMAE`` (``teacher`` timm model, ``proj`` Linear, ``encoder``,
  ``decoder``), ``Encoder`` (``cls_token``, ``patch_embedding = DynamicEmbedding(wave_dim=128,
  num_latent_tokens=128, ...)``, ``transformer`` = vit-pytorch 1.6.4 ``simple_vit.Transformer``
  with its final ``norm``), ``clay_mae_base`` (dim 768, depth 12, heads 12, dim_head 64,
  mlp_ratio 4); ``configs/config.yaml`` (patch_size 8, teacher ``vit_base_patch16_224.dino``);
  ``src/factory.py`` (``DynamicEmbedding``, ``WavesTransformer``, ``FCBlock``);
  ``src/utils.py`` (``posemb_sincos_2d_with_gsd``, ``posemb_sincos_1d``);
  ``docs/release-notes/specification.md`` (weights ``clay-v1-base.ckpt``, model licence
  OpenRAIL-M, ``LICENSE-MODEL.md``).
* ``main`` (a5790ce), ``claymodel/model.py`` / ``backbone.py`` / ``factory.py``: the same
  encoder layout for v1.5 (``clay_mae_large``: dim 1024, depth 24, heads 16, dim_head 64;
  ``configs/config.yaml`` patch_size 8, teacher ``vit_large_patch14_reg4_dinov2``, MRL head
  commented out); ``docs/release-notes/specification.md`` (``v1.5/clay-v1.5.ckpt``,
  Apache-2.0 code and weights).
* ``configs/metadata.yaml`` ``sentinel-2-l2a``: band order blue, green, red, rededge1-3, nir,
  nir08, swir16, swir22, their mean/std (applied with ``v2.Normalize`` to L2A digital
  numbers), wavelengths (µm) and gsd 10.
* The loaders of ``finetune/segment/factory.py`` (v1.0) read ``ckpt["state_dict"]`` keys
  starting ``model.encoder.``.

A checkpoint is ``{'state_dict': {'model.encoder.*', 'model.decoder.*', 'model.teacher.*',
'model.proj.*'}, ...}``; the decoder, the distillation teacher and its projection are dropped
by name. The decoder is no pretext head for our MAE (``pretext=None``): it regenerates a
pixel head from the wavelengths, adds Clay's GSD and metadata codes and keeps the class token,
none of which :class:`~domainfm.core.objectives.mae.MAE` has.

The encoder's input bands are a constructor argument (``wavelengths_um``), so the same weights
take another sensor with ``model_kwargs={"wavelengths_um": [...], "gsd_m": ...}`` (Clay's
metadata.yaml lists Landsat, NAIP, LINZ, Sentinel-1, MODIS) and that sensor's normalization.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from domainfm.domains.geospatial import clay_encoder  # noqa: F401 - registers the backbone
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.pretrained.registry import released_checkpoint

CLAY_S2_WAVELENGTHS_UM = [0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19]
"""Clay's Sentinel-2 L2A wavelengths (metadata.yaml), blue..swir22."""

CLAY_S2_BAND_NAMES = [
    "blue",
    "green",
    "red",
    "rededge1",
    "rededge2",
    "rededge3",
    "nir",
    "nir08",
    "swir16",
    "swir22",
]
"""Clay's names of those bands (metadata.yaml ``band_order``)."""

CLAY_S2_L2A_INPUT = RasterContract(
    bands=["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"],
    normalization={
        "type": "mean_std",
        "scale": 1.0,
        "mean": [1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0],
        "std": [1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0],
    },
    wavelengths_um=CLAY_S2_WAVELENGTHS_UM,
    gsd_m=10.0,
    extra={
        "units": "Sentinel-2 L2A digital numbers (surface reflectance x 10000)",
        "clay_platform": "sentinel-2-l2a",
        "clay_band_names": CLAY_S2_BAND_NAMES,
        "metadata": "optional time (B, 4) = [sin, cos] of 2*pi*week/52 and 2*pi*hour/24; "
        "latlon (B, 4) = [sin, cos] of latitude and longitude in radians; zeros when unknown",
    },
)
"""Sentinel-2 L2A input of the Clay releases (``configs/metadata.yaml``)."""

_V1_INPUT = dataclasses.replace(
    CLAY_S2_L2A_INPUT, extra={**CLAY_S2_L2A_INPUT.extra, "image_size": [224, 224]}
)  # v1.0 configs/config.yaml data.size
_V15_INPUT = dataclasses.replace(
    CLAY_S2_L2A_INPUT, extra={**CLAY_S2_L2A_INPUT.extra, "image_size": [256, 256]}
)  # v1.5 configs/config.yaml data.size

_ENCODER: dict[str, Any] = {
    "wavelengths_um": CLAY_S2_WAVELENGTHS_UM,
    "gsd_m": 10.0,
    "patch_size": 8,
    "dim_head": 64,
    "mlp_ratio": 4.0,
}
CLAY_V1_BASE: dict[str, Any] = {**_ENCODER, "embed_dim": 768, "depth": 12, "num_heads": 12}
"""``clay_encoder`` kwargs of ``clay_mae_base`` (Clay v1), Sentinel-2 L2A bands."""
CLAY_V15_LARGE: dict[str, Any] = {**_ENCODER, "embed_dim": 1024, "depth": 24, "num_heads": 16}
"""``clay_encoder`` kwargs of ``clay_mae_large`` (Clay v1.5), Sentinel-2 L2A bands."""

_PREFIX = "model.encoder."
_BLOCK = re.compile(r"transformer\.layers\.(\d+)\.([01])\.(.+)")
_BLOCK_PARTS = {
    ("0", "norm"): "norm1",
    ("0", "to_qkv"): "attn.qkv",
    ("0", "to_out"): "attn.proj",
    ("1", "net.0"): "norm2",
    ("1", "net.1"): "mlp.fc1",
    ("1", "net.3"): "mlp.fc2",
}
_DROP = ("model.decoder.*", "model.teacher.*", "model.proj.*")


def _encoder_key(key: str) -> str:
    """A Clay encoder key (without ``model.encoder.``) → ours; unknown keys unchanged."""
    if key.startswith("patch_embedding."):
        return "patch_embed." + key.removeprefix("patch_embedding.")
    if key.startswith("transformer.norm."):
        return key.removeprefix("transformer.")
    match = _BLOCK.fullmatch(key)
    if match:
        index, branch, rest = match.groups()
        module, _, param = rest.rpartition(".")
        ours = _BLOCK_PARTS.get((branch, module))
        if ours is not None:
            return f"blocks.{index}.{ours}.{param}"
    return key


def _map_clay(content: Any) -> dict[str, Tensor]:
    """``state_dict`` keys ``model.encoder.*`` renamed; every other key passes through (the
    decoder, teacher and projection to ``drop``, anything else reported)."""
    if not isinstance(content, Mapping):
        raise TypeError(f"expected a Lightning checkpoint dict, found {type(content).__name__}")
    if "state_dict" not in content:
        raise KeyError(f"expected a Lightning checkpoint with 'state_dict', found {list(content)}")
    state = content["state_dict"]
    if not any(str(k).startswith(_PREFIX) for k in state):
        raise KeyError(f"no {_PREFIX}* keys in 'state_dict' (found {list(state)[:4]})")
    return {
        _encoder_key(k.removeprefix(_PREFIX)) if k.startswith(_PREFIX) else k: v
        for k, v in state.items()
    }


_SOURCE = (
    "Clay {v} Lightning checkpoint: {{'state_dict': {{'model.encoder.cls_token', "
    "'model.encoder.patch_embedding.{{weight_generator.*, fclayer.*}}' (fc_weight ({out}, 128)), "
    "'model.encoder.transformer.layers.N.{{0.norm, 0.to_qkv, 0.to_out, 1.net.0, 1.net.1, "
    "1.net.3}}.*', 'model.encoder.transformer.norm.*', model.decoder.* / model.teacher.* / "
    "model.proj.* (dropped)}}, 'hyper_parameters', ...}}"
)


# (name, kwargs, Clay version (model), input, license, weights)
for _name, _kwargs, _version, _input, _license, _weights in (
    (
        "clay-v1-base",
        CLAY_V1_BASE,
        "v1 (clay_mae_base",
        _V1_INPUT,
        "OpenRAIL-M (Clay model weights, LICENSE-MODEL.md); code Apache-2.0",
        "blob/main/clay-v1-base.ckpt",
    ),
    (
        "clay-v1.5-large",
        CLAY_V15_LARGE,
        "v1.5 (clay_mae_large",
        _V15_INPUT,
        "Apache-2.0 (Clay v1.5 code and weights)",
        "resolve/main/v1.5/clay-v1.5.ckpt",
    ),
):
    _dim = _kwargs["embed_dim"]
    released_checkpoint(
        name=_name,
        architecture="clay_encoder",
        kwargs=_kwargs,
        source_layout=_SOURCE.format(v=f"{_version}, dim {_dim}, patch 8)", out=8 * 8 * _dim),
        input=_input,
        license=_license,
        reference=f"https://huggingface.co/made-with-clay/Clay/{_weights}",
        drop=_DROP,
    )(_map_clay)
