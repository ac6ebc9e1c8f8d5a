"""Released VoCo weights (Wu, Zhuang & Chen, "Large-Scale 3D Medical Image Pre-training with
Geometric Context Priors", TPAMI, arXiv:2410.09890; CVPR 2024 VoCo, arXiv:2402.17300), mapped
onto the Swin UNETR v2 encoder.

Read upstream (Luffy03/Large-Scale-Medical): ``Self-supervised/models/voco_head.py``
(``Swin``: MONAI ``SwinTransformer`` as ``swinViT`` with ``use_v2=True``, depths 2-2-2-2,
heads 3-6-12-24, window 7, plus the ``UnetrBasicBlock`` convs ``encoder1``, ``encoder2``,
``encoder3``, ``encoder4``, ``encoder10`` whose pooled outputs feed the projection heads
``student`` / ``teacher``), ``Self-supervised/voco_train.py`` (saves ``{"global_step",
"state_dict": model.state_dict()}``; CT window -175..250 HU → [0, 1], spacing 1.5 mm, 64³
crops), ``Self-supervised/dist_{B,L,H}.sh`` (``feature_size`` 48 / 96 / 192), the README's
``load`` (unwraps ``state_dict``, strips ``module.`` / ``backbone.``, renames ``swin_vit`` and
then copies whatever matches by name and shape, i.e. a non-strict load) and
``requirements.txt`` (``monai==1.3.0``). Issue Luffy03/Large-Scale-Medical#40 reports the
published ``VoCo_B_SSL_head.pt`` as 145 tensors ``swinViT.*`` / ``encoder*`` and no heads:
a flat dict, which is 134 ``swinViT`` keys (relative-position indices and the v2
``layersNc`` convs included) plus 11 ``encoder{1,2,3,4,10}`` conv weights of MONAI's
``SwinUNETR(use_v2=True)``.

Layouts accepted by the map: the flat published dict, or a training checkpoint
``{"state_dict": {"module.backbone.swinViT.*", "module.student.*", "module.teacher.*"}}``
(``module.`` and ``backbone.`` removed). ``swinViT.*`` loads into
:class:`~domainfm.domains.medical3d.swin_legacy.SwinViT3DLegacy` (MONAI 1.3's patch-merging
order, which these weights were trained with). Dropped by name (``drop``): the five
``encoder*`` conv blocks — in MONAI's Swin UNETR they are the decoder side's skip blocks, and
our backbone is the Swin encoder alone (a segmentation head brings its own); VoCo's pooled
SSL embedding passes through them, so our ``forward`` (mean of the last Swin map) is not
VoCo's projection input — and the projection heads ``student.*`` / ``teacher.*`` of a training
checkpoint. Every other key is reported as unexpected.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import Tensor

from domainfm.domains.medical3d import swin_legacy  # noqa: F401  (registers the backbone)
from domainfm.domains.medical3d.released.abdominal_ct import abdominal_ct_input
from domainfm.domains.medical3d.released.nesting import require_mapping
from domainfm.domains.medical3d.released.swin_unetr import SWIN_UNETR_KWARGS
from domainfm.pretrained.registry import released_checkpoint

ARCHITECTURE = "swin_vit_3d_legacy"

FEATURE_SIZES = {"voco-b": 48, "voco-l": 96, "voco-h": 192}
"""Release name → Swin UNETR ``feature_size`` (B / L / H of the TPAMI release)."""

FILES = {name: f"VoCo_{name[-1].upper()}_SSL_head.pt" for name in FEATURE_SIZES}
"""Release name → the published file name."""

DROP = (
    "encoder1.*",
    "encoder2.*",
    "encoder3.*",
    "encoder4.*",
    "encoder10.*",
    "student.*",
    "teacher.*",
)
"""VoCo's conv blocks (Swin UNETR's decoder-side skip blocks) and projection heads."""

VOCO_INPUT = abdominal_ct_input(
    spacing_mm=[1.5, 1.5, 1.5],
    crop_size=[64, 64, 64],
    extra={"roi_size": [96, 96, 96]},  # the README's fine-tuning ROI
)

_release = partial(
    released_checkpoint,
    architecture=ARCHITECTURE,
    input=VOCO_INPUT,
    license="Apache-2.0 (Luffy03/Large-Scale-Medical; check the Hugging Face model card)",
    drop=DROP,
)


def _kwargs(feature_size: int) -> dict[str, Any]:
    """Swin UNETR v2 of ``feature_size`` (otherwise Swin UNETR's encoder settings)."""
    return {**SWIN_UNETR_KWARGS, "feature_size": feature_size, "use_v2": True}


def map_voco(content: Any) -> dict[str, Tensor]:
    """A VoCo file's content → ``swinViT.*`` keys of our backbone (other keys kept as they
    are): an optional ``state_dict`` level unwrapped, ``module.`` and ``backbone.`` prefixes
    removed, ``swin_vit.`` renamed ``swinViT.``."""
    outer = require_mapping(content, "a dict of tensors")
    inner = require_mapping(outer.get("state_dict", outer), "'state_dict' to be a dict")
    out: dict[str, Tensor] = {}
    for key, value in inner.items():
        key = str(key).removeprefix("module.").removeprefix("backbone.")
        if key.startswith("swin_vit."):
            key = "swinViT." + key.removeprefix("swin_vit.")
        out[key] = value
    return out


def _register(name: str) -> None:
    _release(
        name=name,
        kwargs=_kwargs(FEATURE_SIZES[name]),
        source_layout=f"{FILES[name]}: flat {{'swinViT.*' (Swin UNETR v2 encoder, "
        f"feature_size {FEATURE_SIZES[name]}), 'encoder{{1,2,3,4,10}}.*' (dropped)}}, or a "
        "training checkpoint {'state_dict': {'module.backbone.*', 'module.student.*', "
        "'module.teacher.*' (dropped)}}",
        reference=f"https://huggingface.co/Luffy503/VoCo/blob/main/{FILES[name]}",
    )(map_voco)


for _name in FEATURE_SIZES:
    _register(_name)
