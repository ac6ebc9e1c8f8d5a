"""Released SoftCon weights (Wang et al. 2024, "Multi-label guided soft contrastive learning
for efficient Earth observation pretraining", arXiv:2405.20462): DINOv2-style ViT-S/14 and
ViT-B/14 onto :class:`~domainfm.domains.geospatial.timm_vit.TimmViT` and ResNet-50 onto
:class:`~domainfm.domains.geospatial.timm_cnn.TimmCNN`, Sentinel-2 (13 bands) and
Sentinel-1 (VV, VH).

Verified against TorchGeo 0.8.1 (``torchgeo/models/vit.py``: ``ViTSmall14_DINOv2_Weights`` /
``ViTBase14_DINOv2_Weights`` ``SENTINEL{2_ALL,1_GRD}_SOFTCON``, ``vit_{small,base}_patch14_
dinov2``; ``torchgeo/models/resnet.py``: ``ResNet50_Weights.SENTINEL{2_ALL,1_GRD}_SOFTCON``,
``resnet50``; read and run here) and zhu-xlab/softcon ``demo_encoding.ipynb``:

* ViT files ``B{13,2}_vit{s,b}14_softcon_enc.pth``: flat state dicts of timm's
  ``vit_{small,base}_patch14_dinov2`` with ``img_size=224`` and ``in_chans`` 13 / 2 —
  ``cls_token``, ``pos_embed`` ``(1, 257, D)`` (16 × 16 + 1, learned, loaded; resampled by timm
  for other sizes), ``patch_embed.proj.*`` ``(D, C, 14, 14)``, ``blocks.N.{norm1, attn.qkv,
  attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}.*``, ``norm.*``; TorchGeo loads
  them with ``strict=False`` allowing only ``norm.*``/``head.*`` to differ. DINOv2's
  ``mask_token`` (in the original, non-``_enc`` files of the notebook) and a classifier
  ``head.*`` are dropped by name. Not verified (no file downloaded): that ``norm.*`` is in the
  files — a file without it is reported (``norm.*`` missing).
* ResNet-50 files ``B{13,2}_rn50_softcon.pth``: a torchvision ``resnet50`` state dict with
  ``conv1`` of 13 / 2 input channels and no ``fc`` (the notebook sets ``fc = Identity`` and
  loads strictly); mapped like the SSL4EO ResNets (``encoder.`` prefix, ``fc.*`` dropped).
* Contracts (TorchGeo's ``_ssl4eo_s12_transforms_s2_stats`` / ``_s1``): Sentinel-2 L1C DN of
  the 13 bands standardized with the SSL4EO-S12 band means/stds; Sentinel-1 GRD VV, VH (dB)
  with mean (-12.59, -20.26), std (5.26, 5.91); Resize(256), CenterCrop(224).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import Tensor

from domainfm.core.state_nesting import flat_state
from domainfm.domains.geospatial.contract import RasterContract, standardization
from domainfm.domains.geospatial.raster_header import SENTINEL2_L1C_BANDS
from domainfm.domains.geospatial.timm_cnn import TimmCNN, timm_to_backbone_keys
from domainfm.domains.geospatial.timm_vit import TimmViT  # noqa: F401 - registers timm_vit
from domainfm.pretrained.registry import released_checkpoint

S2_MEAN = [1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0,
           2195.2, 1537.4]  # fmt: skip
S2_STD = [791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5,
          1340.0, 1142.9]  # fmt: skip
_PREP = "TorchGeo transforms: Resize(256), CenterCrop(224), Normalize(mean, std)"

SOFTCON_S2_INPUT = RasterContract(
    bands=list(SENTINEL2_L1C_BANDS),
    normalization=standardization(S2_MEAN, S2_STD),
    gsd_m=10.0,
    extra={"image_size": [224, 224], "units": "Sentinel-2 L1C DN", "preprocessing": _PREP},
)
SOFTCON_S1_INPUT = RasterContract(
    bands=["VV", "VH"],
    normalization=standardization([-12.59, -20.26], [5.26, 5.91]),
    gsd_m=10.0,
    extra={
        "image_size": [224, 224],
        "units": "Sentinel-1 GRD backscatter (dB)",
        "preprocessing": _PREP,
    },
)

_DINOV2_S = {"img_size": 224, "patch_size": 14, "embed_dim": 384, "depth": 12, "num_heads": 6,
             "init_values": 1e-5}  # fmt: skip
_DINOV2_B = {**_DINOV2_S, "embed_dim": 768, "num_heads": 12}
_LICENSE = "not stated in TorchGeo's enum (not verified here): see hf.co/wangyi111/softcon"
_PAPER = "https://github.com/zhu-xlab/softcon; https://arxiv.org/abs/2405.20462"
_HF = "https://huggingface.co/wangyi111/softcon"


def _vit_keys(content: Any) -> dict[str, Tensor]:
    """timm DINOv2 keys are ours (every key passes through)."""
    state = flat_state(content)
    if "patch_embed.proj.weight" not in state:
        raise KeyError(f"no 'patch_embed.proj.weight'; found keys {list(state)[:6]}")
    return dict(state)


def _vit_release(name: str, size: str, bands: int, sizes: dict[str, Any]) -> None:
    file = f"B{bands}_vit{size}14_softcon_enc.pth"
    s1 = bands == 2
    released_checkpoint(
        name=name,
        architecture="timm_vit",
        kwargs={**sizes, "in_chans": bands},
        source_layout=f"SoftCon {file}: flat timm vit_{'small' if size == 's' else 'base'}"
        f"_patch14_dinov2 state dict (in_chans {bands}, pos_embed (1, 257, "
        f"{sizes['embed_dim']}), blocks.N.ls{{1,2}}.gamma, norm.*); mask_token/head.* dropped",
        input=SOFTCON_S1_INPUT if s1 else SOFTCON_S2_INPUT,
        license=_LICENSE,
        reference=f"{_HF} ({file}); {_PAPER}",
        drop=("mask_token", "head.*"),
    )(_vit_keys)


_vit_release("softcon-vit-b14-s2", "b", 13, _DINOV2_B)
_vit_release("softcon-vit-s14-s2", "s", 13, _DINOV2_S)
_vit_release("softcon-vit-b14-s1", "b", 2, _DINOV2_B)
_vit_release("softcon-vit-s14-s1", "s", 2, _DINOV2_S)


@cache
def _meta_rn50(in_chans: int) -> TimmCNN:
    """The ResNet-50 backbone on the meta device (built once: it only lends key names)."""
    with torch.device("meta"):
        return TimmCNN(model_name="resnet50", in_chans=in_chans)


def _rn50_keys(content: Any, in_chans: int) -> dict[str, Tensor]:
    return timm_to_backbone_keys(flat_state(content), _meta_rn50(in_chans))


def _rn50_release(bands: int) -> None:
    file = f"B{bands}_rn50_softcon.pth"

    @released_checkpoint(
        name=f"softcon-rn50-{'s1' if bands == 2 else 's2'}",
        architecture="timm_cnn",
        kwargs={"model_name": "resnet50", "in_chans": bands},
        source_layout=f"SoftCon {file}: torchvision resnet50 state dict, conv1.weight "
        f"(64, {bands}, 7, 7), no fc.* (dropped if present)",
        input=SOFTCON_S1_INPUT if bands == 2 else SOFTCON_S2_INPUT,
        license=_LICENSE,
        reference=f"{_HF} ({file}); {_PAPER}",
    )
    def _map(content: Any) -> dict[str, Tensor]:
        return _rn50_keys(content, bands)


_rn50_release(13)
_rn50_release(2)
