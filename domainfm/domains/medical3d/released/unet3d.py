"""Released 3D U-Net weights of Models Genesis and SuPreM: their real key layouts, mapped onto
:class:`~domainfm.domains.medical3d.unet3d.UNet3DEncoder` (the encoder; the up path and the
heads are dropped by name and reported).

Each entry is a key-mapping function registered with
:func:`~domainfm.pretrained.registry.released_checkpoint`; files are local (never
downloaded), read with ``weights_only=True``, and loaded strictly. Neither release ships a
pretext head for one of our objectives (Models Genesis restores images with its own U-Net
decoder), so continued pretraining starts its head fresh.

Layouts, and where each was verified (code read, not run):

* **Models Genesis** ``Genesis_Chest_CT.pt`` (Zhou et al. 2019, self-supervised image
  restoration on LUNA16 chest CT): MrGiovanni/ModelsGenesis ``pytorch/Genesis_Chest_CT.py``
  wraps ``unet3d.UNet3D()`` in ``nn.DataParallel`` and saves ``{"epoch", "state_dict":
  model.state_dict(), "optimizer_state_dict"}``, so the keys are ``module.down_tr64.ops.0.
  conv1.weight`` ... ``module.up_tr64.*``, ``module.out_tr.final_conv.*``; the README's
  loading snippet reads ``checkpoint['state_dict']`` and strips ``module.``. The network
  (``pytorch/unet3d.py``): LUConv = Conv3d(k3, p1, bias) + ``ContBatchNorm3d`` (batch
  statistics always) + ReLU; ``down_tr64/128/256/512`` with ``ops.0``/``ops.1``;
  ``up_tr256/128/64`` (``up_conv`` transposed conv + ``ops``) and ``out_tr.final_conv``
  (1×1×1 conv, sigmoid) — the up path and head are dropped. SuPreM re-hosts the weights as
  ``self_supervised_models_genesis_unet_620.pt`` and reads them the same way
  (``target_applications/imagecas/train.py``: ``['state_dict']``, first key component
  stripped, ``out_tr`` skipped), so that file loads with this entry too.
  Input: ``pytorch/config.py`` and ``infinite_generator_3D.py``: CT HU clipped to
  ``[-1000, 1000]`` and scaled to ``[0, 1]``, cubes of 64 × 64 × 32 (rows, cols, depth: x, y,
  z after the generator's transpose of the SimpleITK array), LUNA16 scans at their native
  spacing (no resampling: ``spacing_mm`` is nominal).
* **SuPreM U-Net** ``supervised_suprem_unet_2100.pth`` (Li et al. 2024, supervised
  pretraining on AbdomenAtlas 1.1, 2100 CT): MrGiovanni/SuPreM
  ``supervised_pretraining/train.py`` saves ``{"net": model.state_dict(), "optimizer",
  "scheduler", "epoch"}`` of a ``DistributedDataParallel``-wrapped ``Universal_model``
  (``backbone/Universal_model.py``) whose ``backbone`` is ``backbone/unet.py::UNet3D`` — the
  Models Genesis ``UNet3D`` verbatim (same ``ContBatchNorm3d``, LUConv, levels) with
  ``out_tr`` commented out. Keys: ``module.backbone.down_tr*`` / ``module.backbone.up_tr*``
  plus the CLIP-driven heads ``module.precls_conv.*``, ``module.GAP.*``,
  ``module.controller.*``, ``module.organ_embedding`` (a buffer with ``word_embedding``, an
  ``nn.Embedding``'s ``.weight`` with ``rand_embedding``), ``module.text_to_vision.*``; the
  fine-tuning code (``target_applications/*/train.py``) strips ``module.backbone.``.
  Input (``train.py`` defaults, ``dataset/dataloader_bdmap.py``): RAS, 1.5 mm isotropic,
  HU ``[-175, 250]`` → ``[0, 1]`` clipped, 96³ crops.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import Tensor

from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.released import suprem
from domainfm.domains.medical3d.released.nesting import unwrap
from domainfm.domains.medical3d.unet3d import UNet3DEncoder  # noqa: F401  (registers it)
from domainfm.pretrained.registry import released_checkpoint

UNET3D_KWARGS: dict[str, Any] = {
    "in_chans": 1,
    "base_channels": 32,
    "act": "relu",
    "batch_stats_in_eval": True,
}
"""``unet3d_encoder`` kwargs of both releases (``UNet3D(n_class=1, act='relu')``)."""

GENESIS_INPUT = VolumeContract(
    channels=["CT"],
    modality="ct",
    spacing_mm=1.0,
    hu_window=[-1000.0, 1000.0],
    crop_size=[64, 64, 32],
    extra={
        "resample": "none: LUNA16 scans at their native spacing (spacing_mm is nominal)",
    },
)
"""Models Genesis' input: HU [-1000, 1000] → [0, 1], 64 × 64 × 32 cubes."""

SUPREM_INPUT = replace(suprem.SUPREM_INPUT, extra={"roi_size": [96, 96, 96]})
"""SuPreM's input (:data:`~domainfm.domains.medical3d.released.suprem.SUPREM_INPUT`: RAS,
1.5 mm, HU [-175, 250] → [0, 1], 96³ crops) with its sliding-window ROI."""

UP_PATH = ("up_tr256.*", "up_tr128.*", "up_tr64.*")
"""The U-Net's up path (decoder), not part of the encoder."""


@released_checkpoint(
    name="models-genesis-unet3d",
    architecture="unet3d_encoder",
    kwargs=UNET3D_KWARGS,
    source_layout="Genesis_Chest_CT.pt: {'state_dict': {'module.down_tr{64,128,256,512}.ops."
    "{0,1}.{conv1,bn1}.*', decoder 'module.up_tr{256,128,64}.*' and head "
    "'module.out_tr.final_conv.*' (dropped)}, 'optimizer_state_dict', 'epoch'}",
    input=GENESIS_INPUT,
    license="Models Genesis license (ASU): academic and non-commercial research use only",
    reference="https://huggingface.co/MrGiovanni/ModelsGenesis/resolve/main/Genesis_Chest_CT.pt",
    drop=(*UP_PATH, "out_tr.*"),
)
def _map_models_genesis(content: Any) -> dict[str, Tensor]:
    """``module.<UNet3D key>`` → ``<UNet3D key>`` (the encoder's names are ours)."""
    return {k.removeprefix("module."): v for k, v in unwrap(content, "state_dict").items()}


_SUPREM_HEADS = (
    "precls_conv.*",
    "GAP.*",
    "controller.*",
    "organ_embedding",
    "organ_embedding.*",
    "text_to_vision.*",
)


@released_checkpoint(
    name="suprem-unet",
    architecture="unet3d_encoder",
    kwargs=UNET3D_KWARGS,
    source_layout="supervised_suprem_unet_2100.pth: {'net': {'module.backbone.down_tr*' "
    "(encoder), 'module.backbone.up_tr*' (decoder, dropped), Universal_model heads "
    "'module.{precls_conv,GAP,controller,organ_embedding,text_to_vision}*' (dropped)}, "
    "'optimizer', 'scheduler', 'epoch'}",
    input=SUPREM_INPUT,
    license="CC BY-NC-ND 4.0 (MrGiovanni/SuPreM)",
    reference="https://huggingface.co/MrGiovanni/SuPreM/resolve/main/supervised_suprem_unet_2100.pth",
    drop=(*UP_PATH, *_SUPREM_HEADS),
)
def _map_suprem_unet(content: Any) -> dict[str, Tensor]:
    """``module.backbone.<UNet3D key>`` → ``<UNet3D key>``; other keys lose ``module.``."""
    out: dict[str, Tensor] = {}
    for key, value in unwrap(content, "net").items():
        key = key.removeprefix("module.")
        out[key.removeprefix("backbone.")] = value
    return out
