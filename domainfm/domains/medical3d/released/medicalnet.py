"""Released MedicalNet (Med3D) 3D ResNets: their real key layout, mapped onto
:class:`~domainfm.domains.medical3d.resnet3d.ResNet3D` in MedicalNet's dilated layout.

The weights are those of Chen, Ma and Zheng 2019, "Med3D: Transfer learning for 3D medical
image analysis" (arXiv:1904.00625): 3D ResNets trained jointly on segmentation datasets of CT
and MRI (``resnet_{10,...,200}.pth`` on 8 datasets; ``resnet_{10,18,34,50}_23dataset.pth`` on
23), published by Tencent/MedicalNet and mirrored as ``TencentMedicalNet/MedicalNet-Resnet{N}``
on Hugging Face. Each entry is a key-mapping function registered with
:func:`~domainfm.pretrained.registry.released_checkpoint`; files are local (never
downloaded), read with ``weights_only=True``, and loaded strictly.

Verified against (code read, not run):

* Tencent/MedicalNet ``models/resnet.py``: ``ResNet`` with a 7×7×7 stride-2 ``conv1`` (one
  input channel, no bias), ``bn1``, ReLU, a 3×3×3 stride-2 ``maxpool``, ``layer1``/``layer2``
  (stride 1, 2), ``layer3``/``layer4`` at **stride 1 with dilation 2 and 4** (3×3×3 convs
  with padding = dilation), the type-B shortcut a bias-free 1×1×1 conv + BatchNorm
  (``downsample.0``/``.1``), the type-A one ``downsample_basic_block`` (stride-1 average pool,
  zero-padded channels, detached); and a segmentation head ``conv_seg`` (transposed conv,
  BatchNorm, convs) that is not part of a backbone.
* ``model.py::generate_model``: the network is wrapped in ``nn.DataParallel`` and a pretrain
  file is read as ``torch.load(path)['state_dict']`` whose keys carry ``module.`` and are
  matched against the wrapped model's keys; ``setting.py``: ``--resnet_shortcut`` default
  ``B``; README "Network structure parameter settings": shortcut **B for 10, 50, 101, 152,
  200 and A for 18, 34** (also for the ``_23dataset`` files).
* Tencent/MedicalNet issue #24: loading a pretrain file into the full model reports exactly
  the ``module.conv_seg.*`` keys missing, i.e. the released files hold the trunk only (no
  head); MONAI's ``get_pretrained_resnet_medicalnet`` / ``_load_state_dict``
  (``monai/networks/nets/resnet.py``) loads ``checkpoint["state_dict"]`` with ``module.``
  removed strictly into ``ResNet(feed_forward=False)`` with ``bias_downsample`` false for
  10/50/101/152/200 (``get_medicalnet_pretrained_resnet_args``). A ``conv_seg.*`` head
  (a fine-tuned MedicalNet checkpoint, e.g. ``trails/models/resnet_50_epoch_*.pth.tar``) is
  dropped by name.
* Input: ``datasets/brains18.py`` — no resampling to a spacing: the volume (axes D, H, W, i.e.
  z first) is cropped, resized with nearest-neighbour zoom to ``input_D × input_H ×
  input_W`` (``setting.py`` default 56 × 448 × 448), and normalized per volume: **z-score over
  the voxels > 0**, the voxels equal to 0 replaced by N(0, 1) noise. That is recorded as the
  contract's ``normalization`` (``zscore_nonzero``), which :meth:`VolumeContract.normalize`
  applies (zeros kept as zeros: the training-time noise is not reproduced).

**Not verified**: the real files could not be downloaded here. MedicalNet was trained with
PyTorch 0.4.1, which writes BatchNorm's ``num_batches_tracked``; if a file lacks those
counters they are allowed to stay missing (they only matter for ``momentum=None``) and the
report lists them as allowed. The files themselves hold no normalization statistics.

Example::

    >>> model, report = load_released("medicalnet-resnet50", "pretrain/resnet_50_23dataset.pth")
    >>> maps = model.forward_intermediates(volume)   # 5 maps, strides 2, 4, 8, 8, 8
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.released.nesting import unwrap
from domainfm.domains.medical3d.resnet3d import ResNet3D  # noqa: F401  (registers resnet_3d)
from domainfm.pretrained.registry import released_checkpoint

SHORTCUT = {10: "B", 18: "A", 34: "A", 50: "B", 101: "B", 152: "B", 200: "B"}
"""MedicalNet's shortcut type per depth (its README's parameter settings)."""

MEDICALNET_INPUT = VolumeContract(
    channels=["CT/MRI"],
    modality="ct",
    spacing_mm=1.0,
    crop_size=[448, 448, 56],
    normalization={
        "type": "zscore_nonzero",
        "over": "voxels > 0",
        "zero_voxels": "replaced by N(0, 1) noise",
        "to": "mean 0, std 1",
    },
    extra={
        "modalities": ["ct", "mri"],
        "resize": (
            "cropped volume resized (nearest) to the crop size; no resampling to a spacing "
            "(spacing_mm is nominal)"
        ),
        "axis_order_upstream": "D, H, W (z first); crop_size is written x, y, z",
    },
)
"""Input of every MedicalNet release (see the module docstring for where it was read)."""

_REFERENCE = "https://huggingface.co/TencentMedicalNet/MedicalNet-Resnet{depth}"
_LICENSE = "MIT (Tencent/MedicalNet)"


def medicalnet_kwargs(depth: int) -> dict[str, Any]:
    """``resnet_3d`` kwargs of MedicalNet's ResNet-``depth``."""
    return {
        "in_chans": 1,
        "depth": depth,
        "shortcut_type": SHORTCUT[depth],
        "bias_downsample": False,
        "conv1_t_size": 7,
        "conv1_t_stride": 2,
        "dilated": True,
    }


def _map_medicalnet(content: Any) -> dict[str, Tensor]:
    """``{"state_dict": {"module.<trunk key>"}}`` → ``encoder.<trunk key>``; every key passes
    (a ``conv_seg.*`` head is dropped by the entry's pattern)."""
    state = unwrap(content, "state_dict")
    return {"encoder." + key.removeprefix("module."): value for key, value in state.items()}


for _depth in SHORTCUT:
    released_checkpoint(
        name=f"medicalnet-resnet{_depth}",
        architecture="resnet_3d",
        kwargs=medicalnet_kwargs(_depth),
        source_layout=(
            f"MedicalNet resnet_{_depth}.pth: {{'state_dict': {{'module.conv1.weight' "
            "(64, 1, 7, 7, 7), 'module.bn1.*', 'module.layerN.M.{conv,bn}K.*'"
            + (", 'module.layerN.0.downsample.{0,1}.*'" if SHORTCUT[_depth] == "B" else "")
            + "}}, shortcut "
            + SHORTCUT[_depth]
            + "; a conv_seg.* head (fine-tuned files) is dropped"
        ),
        input=MEDICALNET_INPUT,
        license=_LICENSE,
        reference=_REFERENCE.format(depth=_depth),
        allow_missing=("*.num_batches_tracked",),
        drop=("encoder.conv_seg.*",),
    )(_map_medicalnet)
