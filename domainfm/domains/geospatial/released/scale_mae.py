"""Released Scale-MAE ViT-L/16 weights (TorchGeo ``ScaleMAELarge16_Weights.FMOW_RGB``), mapped
onto :class:`~domainfm.domains.geospatial.scale_mae_vit.ScaleMAEViT`.

Verified against TorchGeo 0.8.1 ``torchgeo/models/scale_mae.py`` (``ScaleMAE``,
``scalemae_large_patch16``, read and run here) and bair-climate-initiative/scale-mae
(``mae/util/pos_embed.py``, ``mae/eval/knn.py``): the file
``vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth`` is a flat timm ``VisionTransformer``
state dict (``cls_token``, ``pos_embed`` ``(1, 197, 1024)``, ``patch_embed.proj.*`` with 3
input channels, ``blocks.0-23.*``, ``norm.*``), loaded by TorchGeo with ``strict=False``
(no check). The model never reads ``pos_embed``: positions are the GSD-scaled sin-cos table
computed per input (see :mod:`~domainfm.domains.geospatial.scale_mae_vit`), so the stored
table is dropped by name, as are a classifier ``head.*`` and an MAE ``mask_token`` if a copy
has them. Not verified (no file downloaded): whether the file holds exactly ``norm.*``; a
file with ``fc_norm.*`` instead would be reported (``norm.*`` missing, ``fc_norm.*``
unexpected).

**Pretext head**: none. Scale-MAE's decoder is a multi-scale Laplacian one (an FPN-style
upsampling decoder reconstructing low- and high-frequency images at two scales,
``mae/models_mae.py``), not an MAE transformer decoder predicting patch pixels, so it does not
map onto :class:`domainfm.core.objectives.mae.MAE`; the TorchGeo file ships the encoder only.
Continued pretraining starts a fresh MAE decoder.

Input contract: fMoW RGB, ``x / 255`` then ImageNet mean/std (TorchGeo's transforms).
Ground sample distance: fMoW mixes resolutions, so ``gsd_m`` is not one number; the model's
``gsd_ratio`` (upstream ``res``) is the resolution relative to pretraining — evaluation uses
``eval_base_resolution × 224 / input side`` (``model_kwargs={"gsd_ratio": ...}``).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from domainfm.core.state_nesting import nested_state
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.scale_mae_vit import ScaleMAEViT  # noqa: F401 - registers
from domainfm.pretrained.registry import released_checkpoint

SCALE_MAE_LARGE: dict[str, Any] = {
    "in_chans": 3,
    "gsd_ratio": 1.0,
    "img_size": 224,
    "patch_size": 16,
    "embed_dim": 1024,
    "depth": 24,
    "num_heads": 16,
}

SCALE_MAE_INPUT = RasterContract(
    bands=["R", "G", "B"],
    wavelengths_um=[0.665, 0.56, 0.49],
    normalization={
        "type": "mean_std",
        "scale": 1 / 255,
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    },
    gsd_m=None,
    extra={
        "image_size": [224, 224],
        "units": "8-bit RGB (0..255) of fMoW-RGB",
        "gsd_ratio": (
            "positions scale with gsd_ratio (upstream res): 1.0 as TorchGeo; Scale-MAE's "
            "evaluation uses eval_base_resolution x 224 / input side; fMoW GSDs vary, so no "
            "single gsd_m"
        ),
    },
)


@released_checkpoint(
    name="scale-mae-large",
    architecture="scale_mae_vit",
    kwargs=SCALE_MAE_LARGE,
    source_layout="TorchGeo ScaleMAELarge16_Weights.FMOW_RGB: flat timm VisionTransformer "
    "state dict: cls_token, pos_embed (1, 197, 1024) (unused: dropped), patch_embed.proj.* "
    "(1024, 3, 16, 16), blocks.0-23.*, norm.*",
    input=SCALE_MAE_INPUT,
    license="not stated in TorchGeo's enum (not verified here): see the Hugging Face model "
    "card and bair-climate-initiative/scale-mae LICENSE",
    reference="https://hf.co/isaaccorley/vit_large_patch16_224_fmow_rgb_scalemae "
    "(vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth); "
    "https://github.com/bair-climate-initiative/scale-mae; https://arxiv.org/abs/2212.14532",
    drop=("pos_embed", "head.*", "mask_token"),
)
def _map_scale_mae(content: Any) -> dict[str, Tensor]:
    """timm ViT keys are ours (every key passes through)."""
    inner = nested_state(content, "model", optional=True)
    if "patch_embed.proj.weight" not in inner:
        raise KeyError(f"no 'patch_embed.proj.weight'; found keys {list(inner)[:6]}")
    return dict(inner)
