"""Released SSL4EO-S12 Sentinel-2 weights (TorchGeo and the original zhu-xlab files): their real
key layouts, mapped onto :class:`~domainfm.domains.geospatial.timm_cnn.TimmCNN` (ResNet-50)
and :class:`~domainfm.core.vit.VisionTransformerND` (ViT-S/16).

The weights are those of Wang et al. 2022, "SSL4EO-S12: a large-scale multi-modal,
multi-temporal dataset for self-supervised learning in Earth observation" (arXiv:2211.07044):
MoCo-v2 / DINO pretraining on 13-band Sentinel-2 Level-1C patches. Each entry is a key-mapping
function registered with :func:`~domainfm.pretrained.registry.released_checkpoint`; files are
local (never downloaded), read with ``weights_only=True``, and loaded strictly: known
pretraining-only parts (classifier/projection heads, the MoCo key encoder and queue, the DINO
head) are dropped by name; any other key is left in place so the load report names it.

Layouts, and where each was verified (reference code read, not run):

* **TorchGeo** ``ResNet50_Weights.SENTINEL2_ALL_MOCO`` / ``SENTINEL2_ALL_DINO``
  (``resnet50_sentinel2_all_{moco,dino}-*.pth`` on ``hf.co/torchgeo``): a plain timm
  ``resnet50`` state dict with ``in_chans=13`` (``conv1.weight`` ``(64, 13, 7, 7)``), without
  ``fc.*`` — microsoft/torchgeo ``torchgeo/models/resnet.py``: ``resnet50()`` calls
  ``timm.create_model("resnet50")`` and ``load_state_dict(..., strict=False)`` asserting
  ``missing <= {fc.weight, fc.bias}`` and ``unexpected <= {fc.weight, fc.bias}``. Mapped by
  :func:`~domainfm.domains.geospatial.timm_cnn.timm_to_backbone_keys` (``encoder.`` prefix,
  ``fc.*`` dropped if present).
* **TorchGeo** ``ViTSmall16_Weights.SENTINEL2_ALL_MOCO`` / ``SENTINEL2_ALL_DINO``: a plain
  timm ``vit_small_patch16_224`` state dict with ``in_chans=13`` (``torchgeo/models/vit.py``:
  strict=False with ``missing <= {head.weight, head.bias}``); timm ViT keys are ours, ``head.*``
  is dropped if present.
* Both TorchGeo enums: ``meta`` ``in_chans=13``, bands ``B1 … B8, B8a, B9, B10, B11, B12``
  (the order of :data:`~domainfm.domains.geospatial.SENTINEL2_L1C_BANDS`), ``transforms``
  ``Resize(256)``, ``CenterCrop(224)``, ``Normalize(mean=0, std=10000)``: **L1C DN / 10000**
  (torchgeo 0.8.1, also checked on the installed package).
* **Original MoCo ResNet-50** (zhu-xlab/SSL4EO-S12, ``B13_rn50_moco_0099_ckpt.pth``, "full
  ckpt"): ``{"epoch", "arch", "state_dict": {"module.encoder_q.<resnet key>",
  "module.encoder_q.fc.{0,2}.*" (MLP head), "module.encoder_k.*", "module.queue",
  "module.queue_ptr"}, "optimizer"}`` — ``src/benchmark/pretrain_ssl/pretrain_moco_v2_s2c.py``
  (``save_checkpoint({"state_dict": model.state_dict(), ...})`` of the DDP-wrapped
  ``models/moco_v2/builder.py`` MoCo with a torchvision ``resnet50`` whose ``conv1`` has 13
  input channels; torchvision and timm ResNet keys are identical) and
  ``transfer_classification/linear_BE_moco.py`` (keeps ``module.encoder_q.*`` minus ``fc``).
* **Original DINO** ViT-S/16 and ResNet-50 (``B13_vits16_dino_0099_ckpt.pth``,
  ``B13_rn50_dino_0099_ckpt.pth``): ``{"student": {"module.backbone.*", "module.head.*"},
  "teacher": {...}, "optimizer", "epoch", "args", "dino_loss", "fp16_scaler"}``; the teacher
  is DDP-wrapped (``module.`` prefix) only when the network has BatchNorm, i.e. for the
  ResNet — ``pretrain_ssl/pretrain_dino_s2c.py``. We read the **teacher** (the evaluation
  default, ``linear_BE_dino.py --checkpoint_key teacher``), strip ``module.`` and
  ``backbone.`` (``models/dino/utils.py::load_pretrained_weights``) and drop the
  ``DINOHead`` (``head.mlp.*``, ``head.last_layer.*``). DINO's ViT (``models/dino/
  vision_transformer.py``) has timm's key names, ``qkv_bias=True``, LayerNorm eps 1e-6 and a
  learned ``pos_embed`` ``(1, 197, 384)``.
* **Normalization of the original weights**: both pretraining scripts
  (``scripts/pretrain/srun_train_{moco_rn50,dino_vits16}_s2c.sh``) read the
  ``ssl4eo_250k_s2c_uint8.lmdb`` with ``--dtype uint8`` and without ``--normalize``, i.e.
  ``datasets/SSL4EO/ssl4eo_dataset.py`` stored ``(DN / 10000 * 255).astype(uint8)`` and
  ``cvtransforms.ToTensor()`` divided by 255: **DN / 10000**, quantized to 1/255 steps (the
  per-band mean/std in that file are used only with ``--normalize``). The same contract as
  TorchGeo's.

Not verified here (no file was downloaded): the "backbone" variants linked from the
SSL4EO-S12 README and the MAE / MoCo-v3 ViT checkpoints (not registered). The full DINO
checkpoints hold ``"args"``, an ``argparse.Namespace``; the ``weights_only=True`` reader
allows exactly that class (attributes only, no code), so they load as released.

Example::

    >>> model, report = load_released("torchgeo-resnet50-sentinel2-all-moco", "rn50_moco.pth")
    >>> entry = RELEASED.get("torchgeo-resnet50-sentinel2-all-moco")
    >>> x = check_input_scale(dn, entry.input, source="scene.tif")   # refuses reflectance 0..1
    >>> model4, report4 = load_released(                # 13 bands mapped by name into 4
    ...     "torchgeo-resnet50-sentinel2-all-moco", "rn50_moco.pth",
    ...     channels=["B02", "B03", "B04", "B08"])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from functools import partial
from typing import Any

import torch
from torch import Tensor

from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.raster_header import SENTINEL2_L1C_BANDS
from domainfm.domains.geospatial.timm_cnn import TimmCNN, timm_to_backbone_keys
from domainfm.pretrained.registry import RELEASED, released_checkpoint

S2_L1C_DN_INPUT = RasterContract(
    bands=list(SENTINEL2_L1C_BANDS),
    normalization={"type": "scale", "divide_by": 10000.0},
    gsd_m=10.0,
    extra={
        "units": (
            "Sentinel-2 Level-1C digital numbers (TOA reflectance x 10000, mostly 0..10000), "
            "13 bands B01..B12 with B8A and B10, all at 10 m"
        ),
        "image_size": [224, 224],
        "scale_check": {"bands": ["B02", "B03", "B04", "B08"], "median_range": [1e-3, 3.0]},
    },
)
"""Input contract of every SSL4EO-S12 Sentinel-2 L1C release: DN / 10000 (see the module
docstring for where that was verified), checked by
:func:`~domainfm.domains.geospatial.normalization.check_input_scale`."""

RESNET50_S2: dict[str, Any] = {"model_name": "resnet50", "in_chans": 13}
"""``timm_cnn`` kwargs of the 13-band ResNet-50 releases (every stage, strides 2..32)."""

VIT_S16_S2: dict[str, Any] = {**RELEASED.get("timm-vit-small-patch16-224").kwargs, "in_chans": 13}
"""``vit_nd`` kwargs of the 13-band ViT-S/16 releases: timm ``vit_small_patch16_224`` (the
registry's ``timm-vit-small-patch16-224``) with 13 input bands."""

_LICENSE = "CC-BY-4.0 (SSL4EO-S12 weights, as on their Hugging Face model cards)"
_PAPER = "https://arxiv.org/abs/2211.07044"
_SSL4EO = "https://github.com/zhu-xlab/SSL4EO-S12"
_resnet50_release = partial(  # the ResNet-50 releases' architecture and license
    released_checkpoint, architecture="timm_cnn", kwargs=RESNET50_S2, license=_LICENSE
)
_vit_s16_release = partial(  # the ViT-S/16 releases'
    released_checkpoint, architecture="vit_nd", kwargs=VIT_S16_S2, license=_LICENSE
)
_TG_INPUT = dataclasses.replace(
    S2_L1C_DN_INPUT,
    extra={
        **S2_L1C_DN_INPUT.extra,
        "preprocessing": "TorchGeo transforms: Resize(256), CenterCrop(224), Normalize(0, 10000)",
    },
)
_ORIG_INPUT = dataclasses.replace(
    S2_L1C_DN_INPUT,
    extra={
        **S2_L1C_DN_INPUT.extra,
        "preprocessing": "uint8 LMDB of DN / 10000 * 255, ToTensor (/ 255): DN / 10000 quantized",
    },
)


def _unwrap(content: Any, key: str | None = None) -> Mapping[str, Tensor]:
    """``content[key]`` (or ``content["state_dict"]`` / ``content`` when ``key`` is None)."""
    if not isinstance(content, Mapping):
        raise TypeError(f"expected a dict, found {type(content).__name__}")
    if key is None:
        inner = content.get("state_dict", content)
    elif key in content:
        inner = content[key]
    else:
        raise KeyError(f"expected a dict with {key!r}, found keys {list(content)[:6]}")
    if not isinstance(inner, Mapping):
        raise TypeError(f"expected a state dict, found {type(inner).__name__}")
    return inner


def _resnet50_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm/torchvision ResNet-50 keys → ``timm_cnn`` keys (``fc.*`` dropped)."""
    with torch.device("meta"):  # only the key names are needed
        target = TimmCNN(**RESNET50_S2)
    return timm_to_backbone_keys(state, target)


@_resnet50_release(
    name="torchgeo-resnet50-sentinel2-all-moco",
    source_layout="TorchGeo ResNet50_Weights.SENTINEL2_ALL_MOCO: plain timm resnet50 state dict "
    "(in_chans 13: conv1.weight (64, 13, 7, 7)), no fc.* (dropped if present)",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/resnet50_sentinel2_all_moco "
    "(resnet50_sentinel2_all_moco-df8b932e.pth)",
)
@_resnet50_release(
    name="torchgeo-resnet50-sentinel2-all-dino",
    source_layout="TorchGeo ResNet50_Weights.SENTINEL2_ALL_DINO: plain timm resnet50 state dict "
    "(in_chans 13), no fc.* (dropped if present)",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/resnet50_sentinel2_all_dino "
    "(resnet50_sentinel2_all_dino-d6c330e9.pth)",
)
def _map_torchgeo_resnet50(content: Any) -> dict[str, Tensor]:
    return _resnet50_keys(_unwrap(content))


@_vit_s16_release(
    name="torchgeo-vit-small-patch16-224-sentinel2-all-moco",
    source_layout="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_MOCO: plain timm "
    "vit_small_patch16_224 state dict (in_chans 13: patch_embed.proj.weight (384, 13, 16, 16), "
    "pos_embed (1, 197, 384)), head.* dropped if present",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/vit_small_patch16_224_sentinel2_all_moco",
)
@_vit_s16_release(
    name="torchgeo-vit-small-patch16-224-sentinel2-all-dino",
    source_layout="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_DINO: plain timm "
    "vit_small_patch16_224 state dict (in_chans 13), head.* dropped if present",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/vit_small_patch16_224_sentinel2_all_dino",
)
def _map_torchgeo_vit(content: Any) -> dict[str, Tensor]:
    state = _unwrap(content)
    return {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm."))}


_MOCO_DROPPED = ("module.encoder_q.fc.", "module.encoder_k.")
_MOCO_BUFFERS = {"module.queue", "module.queue_ptr"}


@_resnet50_release(
    name="ssl4eo-s12-resnet50-moco",
    source_layout="SSL4EO-S12 B13_rn50_moco_0099_ckpt.pth: {'state_dict': "
    "{'module.encoder_q.<resnet key>'}}; encoder_q.fc (MLP head), encoder_k.*, queue, queue_ptr "
    "dropped",
    input=_ORIG_INPUT,
    reference=f"{_SSL4EO} (README, MoCo ResNet50 full ckpt); {_PAPER}",
)
def _map_ssl4eo_moco_resnet50(content: Any) -> dict[str, Tensor]:
    state = _unwrap(content, "state_dict")
    kept: dict[str, Tensor] = {}
    for key, value in state.items():
        if key in _MOCO_BUFFERS or key.startswith(_MOCO_DROPPED):
            continue
        kept[key.removeprefix("module.encoder_q.")] = value  # other keys: reported
    return _resnet50_keys(kept)


def _dino_teacher_backbone(content: Any) -> dict[str, Tensor]:
    """DINO teacher: ``[module.]backbone.<key>`` → ``<key>``; ``[module.]head.*`` dropped."""
    out: dict[str, Tensor] = {}
    for key, value in _unwrap(content, "teacher").items():
        key = key.removeprefix("module.")
        if key.startswith("head."):
            continue  # DINOHead: head.mlp.*, head.last_layer.weight_{g,v}
        out[key.removeprefix("backbone.")] = value  # anything else: reported
    return out


@_vit_s16_release(
    name="ssl4eo-s12-vit-small-patch16-dino",
    source_layout="SSL4EO-S12 B13_vits16_dino_0099_ckpt.pth: {'teacher': {'backbone.<vit key>', "
    "'head.*' (DINOHead, dropped)}, 'student': {'module.backbone.*', ...}}; teacher read",
    input=_ORIG_INPUT,
    reference=f"{_SSL4EO} (README, DINO ViT-S/16 full ckpt); {_PAPER}",
)
def _map_ssl4eo_dino_vit(content: Any) -> dict[str, Tensor]:
    return _dino_teacher_backbone(content)


@_resnet50_release(
    name="ssl4eo-s12-resnet50-dino",
    source_layout="SSL4EO-S12 B13_rn50_dino_0099_ckpt.pth: {'teacher': {'module.backbone."
    "<resnet key>', 'module.head.*' (DINOHead, dropped)}, 'student': ...}; teacher read",
    input=_ORIG_INPUT,
    reference=f"{_SSL4EO} (README, DINO ResNet50 full ckpt); {_PAPER}",
)
def _map_ssl4eo_dino_resnet50(content: Any) -> dict[str, Tensor]:
    return _resnet50_keys(_dino_teacher_backbone(content))
