"""Released DOFA weights (TorchGeo ``DOFABase16_Weights`` / ``DOFALarge16_Weights``), mapped
onto :class:`~domainfm.domains.geospatial.dofa_vit.DOFAViT`.

Verified against TorchGeo 0.8.1 ``torchgeo/models/dofa.py`` (``DOFA``, ``DOFAEmbedding``,
``dofa_base_patch16_224`` / ``dofa_large_patch16_224``, read and run here) and
zhu-xlab/DOFA: the files ``dofa_{base,large}_patch16_224-*.pth`` on ``hf.co/torchgeo/dofa``
are flat state dicts of the MAE-pretrained encoder: ``cls_token``, ``pos_embed``
``(1, 197, D)`` (a fixed 2D sin-cos table, loaded as stored), ``patch_embed.weight_generator.
{transformer_encoder.layers.0.*, fc_weight.*, fc_bias.*, weight_tokens, bias_token}``,
``patch_embed.fclayer.{w1,w2}.*`` and ``blocks.N.*`` (timm ``Block``). TorchGeo loads them with
``strict=False`` asserting that only ``fc_norm.*`` and ``head.*`` (its classifier, created
fresh) are missing and nothing is unexpected: the file has **no final norm**. A copy saved
from TorchGeo's model with that classifier has ``fc_norm.*``/``head.*``: dropped by name.

Input contract: DOFA takes **any band list** — the patch kernel is generated from each band's
centre wavelength, so ``wavelengths_um`` (one per input band) is required; the registered
kwargs carry RGB (0.665, 0.56, 0.49 µm) as a default only. For other bands give the
wavelengths of the data's contract::

    >>> contract = RasterContract(bands=["B02", "B03", "B04", "B08"], ...)   # fills µm
    >>> model, report = load_released("dofa-base-patch16-224", "dofa_base.pth",
    ...                               model_kwargs=dofa_kwargs(contract))
    >>> model(x)                                       # (B, 768); or per call:
    >>> model(x, wavelengths_um=[0.49, 0.56, 0.665, 0.842])

(``channels=`` of :func:`load_released` does not apply: no weight has a per-band axis.)
Normalization is sensor-dependent (DOFA's ``normalize_dataset.py`` standardizes each dataset
with its own statistics; TorchGeo's transforms leave it out), so the contract records none:
standardize with the statistics of the user's rasters. Image size 224 (grid 14 × 14); other
sizes resample the stored table (timm, bicubic).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any

from torch import Tensor

from domainfm.core.state_nesting import flat_state
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.dofa_vit import DOFAViT  # noqa: F401 - registers dofa_vit
from domainfm.pretrained.registry import released_checkpoint

RGB_WAVELENGTHS_UM = [0.665, 0.56, 0.49]
"""Default wavelengths (R, G, B) of the registered kwargs; replace with the data's."""

DOFA_BASE: dict[str, Any] = {
    "wavelengths_um": RGB_WAVELENGTHS_UM,
    "img_size": 224,
    "patch_size": 16,
    "embed_dim": 768,
    "depth": 12,
    "num_heads": 12,
}
DOFA_LARGE: dict[str, Any] = {**DOFA_BASE, "embed_dim": 1024, "depth": 24, "num_heads": 16}

DOFA_INPUT = RasterContract(
    bands=["R", "G", "B"],
    wavelengths_um=RGB_WAVELENGTHS_UM,
    normalization=None,
    extra={
        "image_size": [224, 224],
        "any_bands": True,
        "wavelengths_required": (
            "one centre wavelength (µm) per input band: model_kwargs={'wavelengths_um': "
            "contract.wavelengths_um} or forward(x, wavelengths_um=[...]); the R, G, B here "
            "are a default only"
        ),
        "normalization_note": (
            "sensor-dependent standardization with the user's band statistics "
            "(zhu-xlab/DOFA normalize_dataset.py); TorchGeo's transforms: CenterCrop(224)"
        ),
    },
)


def dofa_kwargs(contract: RasterContract) -> dict[str, Any]:
    """``model_kwargs`` giving a DOFA release the wavelengths of the data's ``contract``.

    Raises:
        ValueError: when the contract has no wavelengths (unknown band names).
    """
    if contract.wavelengths_um is None:
        raise ValueError(
            f"DOFA needs the centre wavelength of each band; the contract's bands "
            f"{contract.bands} have none: give RasterContract(wavelengths_um=[...])"
        )
    return {"wavelengths_um": list(contract.wavelengths_um)}


_LICENSE = "not stated in TorchGeo's enum (not verified here): see zhu-xlab/DOFA LICENSE.txt"
_DROP = ("fc_norm.*", "head.*")
_release = partial(
    released_checkpoint, architecture="dofa_vit", input=DOFA_INPUT, license=_LICENSE, drop=_DROP
)


def _flat(content: Any) -> Mapping[str, Tensor]:
    state = flat_state(content)
    if "patch_embed.fclayer.w1.weight" not in state:
        raise KeyError(
            f"no 'patch_embed.fclayer.w1.weight' (DOFA's wavelength generator); found keys "
            f"{list(state)[:6]}"
        )
    return state


@_release(
    name="dofa-base-patch16-224",
    kwargs=DOFA_BASE,
    source_layout="TorchGeo DOFABase16_Weights.DOFA_MAE: flat state dict cls_token, pos_embed "
    "(1, 197, 768), patch_embed.{weight_generator,fclayer}.*, blocks.0-11.*; no norm "
    "(fc_norm.*/head.* of TorchGeo's classifier dropped if present)",
    reference="https://hf.co/torchgeo/dofa (dofa_base_patch16_224-a0275954.pth); "
    "https://github.com/zhu-xlab/DOFA; https://arxiv.org/abs/2403.15356",
)
@_release(
    name="dofa-large-patch16-224",
    kwargs=DOFA_LARGE,
    source_layout="TorchGeo DOFALarge16_Weights.DOFA_MAE: flat state dict cls_token, pos_embed "
    "(1, 197, 1024), patch_embed.{weight_generator,fclayer}.*, blocks.0-23.*; no norm",
    reference="https://hf.co/torchgeo/dofa (dofa_large_patch16_224-0ff904d3.pth); "
    "https://github.com/zhu-xlab/DOFA; https://arxiv.org/abs/2403.15356",
)
def _map_dofa(content: Any) -> dict[str, Tensor]:
    """DOFA keys are ours already (every key passes through)."""
    return dict(_flat(content))
