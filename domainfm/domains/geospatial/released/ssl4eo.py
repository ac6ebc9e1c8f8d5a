"""Released SSL4EO-S12 Sentinel-2 weights (TorchGeo and the original zhu-xlab files): their real
key layouts, mapped onto :class:`~domainfm.domains.geospatial.timm_cnn.TimmCNN` (ResNet-50)
and :class:`~domainfm.core.vit.VisionTransformerND` (ViT-S/16).

The weights are those of Wang et al. 2022, "SSL4EO-S12: a large-scale multi-modal,
multi-temporal dataset for self-supervised learning in Earth observation" (arXiv:2211.07044):
MoCo-v2 / DINO / MAE pretraining on 13-band Sentinel-2 Level-1C patches. Each entry is a
key-mapping function registered with :func:`~domainfm.pretrained.registry.released_checkpoint`;
files are local (never downloaded), read with ``weights_only=True``, and loaded strictly:
known pretraining-only parts (classifier/projection heads, the MoCo key encoder and queue, the
DINO head, the MAE decoder) are dropped by name (each entry's ``drop``, listed in
``report.dropped``); any other key is left in place so the load report names it.

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

* **Original MAE** ViT-S/16 (``B13_vits16_mae_ep99.pth``, "full ckpt" on
  ``huggingface.co/wangyi111/SSL4EO-S12``): ``{"model", "optimizer", "epoch", "scaler",
  "args"}`` — ``pretrain_ssl/models/mae/util/misc.py::save_model`` saves
  ``model_without_ddp.state_dict()`` (no ``module.``) of ``models/mae/models_mae.py``
  ``mae_vit_small_patch16_dec512d8b`` (``pretrain_mae_s2c.py --model mae_vit_small_patch16``,
  ``scripts/pretrain/srun_train_mae_vits16_s2c.sh``: 13 bands, ``--norm_pix_loss``, mask
  ratio 0.7, uint8 LMDB as above). Its encoder keys are timm's (``PatchEmbed``, ``Block`` with
  ``qkv_bias``, LayerNorm eps 1e-6, ``cls_token``, ``norm``); ``pos_embed`` ``(1, 197, 384)``
  is a fixed 2-D sin-cos table with a zero class row, **loaded as stored** (our ViT keeps it
  as a learned table, so the numbers are the release's). The decoder (``decoder_embed``,
  ``mask_token``, ``decoder_blocks.0..7`` timm ``Block`` 512 wide with 16 heads,
  ``decoder_norm``, ``decoder_pred`` ``(16*16*13, 512)``) is dropped from the backbone by name
  and is the entry's pretext head, mapped onto :class:`~domainfm.core.objectives.mae.MAE`:
  the same key names; ``decoder_pos_embed`` (fixed sin-cos) is dropped because our decoder
  computes its own positions; ``patchify`` orders a patch's values ``(p, q, c)``
  (``einsum('nchpwq->nhwpqc')``), ours too (channels last), so ``decoder_pred`` rows are kept
  in order. The upstream decoder carries the class token through its blocks at a zero
  position and adds He et al.'s 2D table (column coordinate in the first half of the
  channels): our ``MAE`` with ``decoder_prefix_tokens=1`` and ``decoder_pos_reverse_axes``
  does the same, so the reconstruction is the release's (tested against the released
  ``forward_decoder`` written out step by step).
* **TorchGeo** ``ViTSmall16_Weights.SENTINEL2_ALL_MAE`` (``B13_vits16_mae_ep99_enc.pth``):
  the encoder alone as a plain timm state dict (torchgeo's ``vit_small_patch16_224`` loads it
  with ``strict=False`` allowing only ``norm.*``/``head.*`` to differ, for its
  ``features_only`` mode); not downloaded, so whether ``norm.*`` is in the file was not seen:
  a file without it is refused, naming the keys.

Not verified here (no file was downloaded): the "backbone" variants linked from the
SSL4EO-S12 README and the MoCo-v3 ViT checkpoints (not registered). The full DINO and MAE
checkpoints hold ``"args"``, an ``argparse.Namespace``; the ``weights_only=True`` reader
allows exactly that class (attributes only, no code), so they load as released.

Identical layouts: the TorchGeo MoCo and DINO ResNet-50 files have one layout (names and
shapes), as have the three TorchGeo ViT-S/16 files: ``domainfm inspect`` names them together.

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
from collections.abc import Callable, Mapping
from functools import cache, partial
from typing import Any

import torch
from torch import Tensor

from domainfm.core.state_nesting import nested_state
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.raster_header import SENTINEL2_L1C_BANDS
from domainfm.domains.geospatial.timm_cnn import TimmCNN, timm_to_backbone_keys
from domainfm.pretrained.registry import RELEASED, PretextHead, released_checkpoint

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


@cache
def _meta_resnet50() -> TimmCNN:
    """The 13-band ResNet-50 backbone on the meta device (built once: it only lends its key
    names)."""
    with torch.device("meta"):
        return TimmCNN(**RESNET50_S2)


def _resnet50_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """timm/torchvision ResNet-50 keys → ``timm_cnn`` keys; the classifier ``fc.*`` passes
    through under its own name (the entries drop it by name, reported)."""
    target = _meta_resnet50()
    head = {k: v for k, v in state.items() if k.startswith("fc.")}
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    return {**timm_to_backbone_keys(body, target), **head}


@_resnet50_release(
    name="torchgeo-resnet50-sentinel2-all-moco",
    source_layout="TorchGeo ResNet50_Weights.SENTINEL2_ALL_MOCO: plain timm resnet50 state dict "
    "(in_chans 13: conv1.weight (64, 13, 7, 7)), no fc.* (dropped by name if present)",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/resnet50_sentinel2_all_moco "
    "(resnet50_sentinel2_all_moco-df8b932e.pth)",
    drop=("fc.*",),
)
@_resnet50_release(
    name="torchgeo-resnet50-sentinel2-all-dino",
    source_layout="TorchGeo ResNet50_Weights.SENTINEL2_ALL_DINO: plain timm resnet50 state dict "
    "(in_chans 13), no fc.* (dropped by name if present)",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/resnet50_sentinel2_all_dino "
    "(resnet50_sentinel2_all_dino-d6c330e9.pth)",
    drop=("fc.*",),
)
def _map_torchgeo_resnet50(content: Any) -> dict[str, Tensor]:
    return _resnet50_keys(nested_state(content, "state_dict", optional=True))


_TIMM_VIT_HEAD = ("head.*", "fc_norm.*")
"""A timm ViT's classifier (and the identity ``fc_norm`` of token-pooled variants)."""


@_vit_s16_release(
    name="torchgeo-vit-small-patch16-224-sentinel2-all-moco",
    source_layout="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_MOCO: plain timm "
    "vit_small_patch16_224 state dict (in_chans 13: patch_embed.proj.weight (384, 13, 16, 16), "
    "pos_embed (1, 197, 384)), head.* dropped by name if present",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/vit_small_patch16_224_sentinel2_all_moco",
    drop=_TIMM_VIT_HEAD,
)
@_vit_s16_release(
    name="torchgeo-vit-small-patch16-224-sentinel2-all-dino",
    source_layout="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_DINO: plain timm "
    "vit_small_patch16_224 state dict (in_chans 13), head.* dropped by name if present",
    input=_TG_INPUT,
    reference="https://hf.co/torchgeo/vit_small_patch16_224_sentinel2_all_dino",
    drop=_TIMM_VIT_HEAD,
)
@_vit_s16_release(
    name="torchgeo-vit-small-patch16-224-sentinel2-all-mae",
    source_layout="TorchGeo ViTSmall16_Weights.SENTINEL2_ALL_MAE (B13_vits16_mae_ep99_enc.pth): "
    "the MAE encoder as a plain timm vit_small_patch16_224 state dict (in_chans 13), head.* "
    "dropped by name if present",
    input=_TG_INPUT,
    reference="https://huggingface.co/wangyi111/SSL4EO-S12 (B13_vits16_mae_ep99_enc.pth)",
    drop=_TIMM_VIT_HEAD,
)
def _map_torchgeo_vit(content: Any) -> dict[str, Tensor]:
    return dict(nested_state(content, "state_dict", optional=True))


_MOCO_Q = "module.encoder_q."


@_resnet50_release(
    name="ssl4eo-s12-resnet50-moco",
    source_layout="SSL4EO-S12 B13_rn50_moco_0099_ckpt.pth: {'state_dict': "
    "{'module.encoder_q.<resnet key>'}}; encoder_q.fc (MLP head), encoder_k.*, queue, queue_ptr "
    "dropped by name",
    input=_ORIG_INPUT,
    reference=f"{_SSL4EO} (README, MoCo ResNet50 full ckpt); {_PAPER}",
    drop=(f"{_MOCO_Q}fc.*", "module.encoder_k.*", "module.queue", "module.queue_ptr"),
)
def _map_ssl4eo_moco_resnet50(content: Any) -> dict[str, Tensor]:
    """``module.encoder_q.<resnet key>`` → ours; every other key (the query encoder's MLP
    head, the key encoder, the queue) passes through under its own name, for ``drop``."""
    encoder: dict[str, Tensor] = {}
    rest: dict[str, Tensor] = {}
    for key, value in nested_state(content, "state_dict").items():
        if key.startswith(_MOCO_Q) and not key.startswith(f"{_MOCO_Q}fc."):
            encoder[key.removeprefix(_MOCO_Q)] = value
        else:
            rest[key] = value
    return {**_resnet50_keys(encoder), **rest}


_DINO_HEAD = ("head.mlp.*", "head.last_layer.*")
"""DINO's projection head (``DINOHead``: ``mlp.{0,2,4}``, weight-normed ``last_layer``)."""


def _dino_teacher_keys(
    content: Any, *, to_ours: Callable[[Mapping[str, Tensor]], dict[str, Tensor]]
) -> dict[str, Tensor]:
    """DINO teacher: ``[module.]backbone.<key>`` → ``to_ours`` of ``<key>``; the ``DINOHead``
    (``[module.]head.*``) stays ``head.*`` for the entries' ``drop``."""
    teacher = nested_state(content, "teacher")
    return to_ours(
        {k.removeprefix("module.").removeprefix("backbone."): v for k, v in teacher.items()}
    )


# The original DINO files (``B13_<file>_dino_0099_ckpt.pth``): the teacher is DDP-wrapped
# (``module.``) only for the ResNet (BatchNorm); ViT keys are ours, ResNet keys are mapped.
for _release, _name, _network, _file, _wrap, _to_ours in (
    (_vit_s16_release, "ssl4eo-s12-vit-small-patch16-dino", "ViT-S/16", "vits16", "", dict),
    (_resnet50_release, "ssl4eo-s12-resnet50-dino", "ResNet50", "rn50", "module.", _resnet50_keys),
):
    _release(
        name=_name,
        source_layout=f"SSL4EO-S12 B13_{_file}_dino_0099_ckpt.pth: {{'teacher': "
        f"{{'{_wrap}backbone.<{_network} key>', '{_wrap}head.*' (DINOHead, dropped by name)}}, "
        "'student': {'module.backbone.*', ...}}; teacher read",
        input=_ORIG_INPUT,
        reference=f"{_SSL4EO} (README, DINO {_network} full ckpt); {_PAPER}",
        drop=_DINO_HEAD,
    )(partial(_dino_teacher_keys, to_ours=_to_ours))


SSL4EO_MAE_DECODER: dict[str, Any] = {
    "decoder_dim": 512,
    "decoder_depth": 8,
    "decoder_heads": 16,
    "mlp_ratio": 4.0,
    "decoder_qkv_bias": True,
    "decoder_prefix_tokens": 1,  # models_mae passes the class token through the decoder
    "decoder_pos_reverse_axes": True,  # its 2D sin-cos table: column coordinate first
}
""":class:`~domainfm.core.objectives.mae.MAE` kwargs of the SSL4EO-S12 ViT-S/16 MAE decoder
(``mae_vit_small_patch16_dec512d8b``: 512 wide, 8 blocks, 16 heads, MLP ratio 4, LayerNorm
eps 1e-6; the class token goes through the decoder at a zero position, the table is He et
al.'s)."""

_MAE_DECODER_KEYS = ("decoder_embed.", "decoder_blocks.", "decoder_norm.", "decoder_pred.")


def _mae_model(content: Any) -> Mapping[str, Tensor]:
    return nested_state(content, "model")


def _map_ssl4eo_mae_decoder(content: Any) -> dict[str, Tensor]:
    """The MAE decoder of the full checkpoint: its keys are our ``MAE`` objective's
    (``decoder_embed``, ``mask_token``, ``decoder_blocks.N`` as timm ``Block``,
    ``decoder_norm``, ``decoder_pred``); the fixed ``decoder_pos_embed`` comes along for the
    head's ``drop``."""
    return {
        k: v
        for k, v in _mae_model(content).items()
        if k.startswith(_MAE_DECODER_KEYS) or k in ("mask_token", "decoder_pos_embed")
    }


@_vit_s16_release(
    name="ssl4eo-s12-vit-small-patch16-mae",
    source_layout="SSL4EO-S12 B13_vits16_mae_ep99.pth (full MAE checkpoint): {'model': "
    "{<timm vit key> (pos_embed (1, 197, 384) fixed sin-cos, loaded as stored), "
    "mask_token, decoder_* (MAE decoder, dropped by name; the pretext head)}, 'optimizer', "
    "'epoch', 'scaler', 'args'}",
    input=_ORIG_INPUT,
    reference=f"{_SSL4EO} (README, MAE ViT-S/16 full ckpt); {_PAPER}",
    drop=("decoder_*", "mask_token"),
    pretext=PretextHead(
        objective="mae",
        kwargs=SSL4EO_MAE_DECODER,
        map_keys=_map_ssl4eo_mae_decoder,
        drop=("decoder_pos_embed",),
    ),
)
def _map_ssl4eo_mae_vit(content: Any) -> dict[str, Tensor]:
    return dict(_mae_model(content))
