"""Released CT-FM weights (Pai et al., "Vision Foundation Models for Computed Tomography",
arXiv:2501.09001; SimCLR-style intra-sample contrastive pretraining on 148k CT of the Imaging
Data Commons), mapped onto :class:`~domainfm.domains.medical3d.cnn.SegResNetEncoder3D`.

Read upstream:

* project-lighter/CT-FM ``experiments/fm/backbones/segresenc.yaml`` (MONAI
  ``segresnet_ds.SegResEncoder``, ``init_filters=32``, ``blocks_down=[1, 2, 2, 4, 4]``, MONAI's
  default BatchNorm and ReLU), ``experiments/fm/base.yaml`` (``SPACING: [3, 1, 1]``) and
  ``experiments/fm/frameworks/intrasample_simclr.yaml`` (``Orientation(axcodes="SPL")``,
  ``Spacing(pixdim=[3, 1, 1])``, ``ScaleIntensityRange(-1024, 2048 → 0, 1, clip)``, crops of
  ``PATCH_SIZE_MM=[64, 128, 128]`` → ``[32, 128, 128]`` voxels, SPL axis order).
* lighter-zoo ``lighter_zoo`` (``SegResEncoder`` / ``SegResNet`` are MONAI's
  ``SegResEncoder`` / ``SegResNetDS`` with huggingface_hub's ``PyTorchModelHubMixin``:
  ``model.safetensors`` holds the flat ``state_dict()``) and the Hugging Face
  ``project-lighter/ct_fm_feature_extractor`` ``config.json`` (``blocks_down [1,2,2,4,4]``,
  ``in_channels 1``, ``init_filters 32``, ``spatial_dims 3``; licence Apache-2.0).

Layouts: the feature extractor's flat keys ``conv_init.weight``,
``layers.{i}.blocks.{j}.{norm1,conv1,norm2,conv2}.*`` (BatchNorm running statistics
included), ``layers.{i}.downsample.weight`` gain our ``encoder.`` prefix; the
``ct_fm_segresnet`` file is a ``SegResNetDS`` whose ``encoder.*`` keys are ours already and
whose decoder ``up_layers.*`` is dropped by name.

The contract records the release's own axis order: ``orientation="SPL"`` with
``spacing_mm`` and ``crop_size`` in that order (S, P, L).
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import Tensor

from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.released.nesting import require_mapping
from domainfm.pretrained.registry import released_checkpoint

CTFM_KWARGS: dict[str, Any] = {
    "in_chans": 1,
    "init_filters": 32,
    "blocks_down": [1, 2, 2, 4, 4],
    "norm": "batch",
    "act": "relu",
}

CTFM_INPUT = VolumeContract(
    channels=["CT"],
    modality="ct",
    orientation="SPL",
    spacing_mm=[3.0, 1.0, 1.0],
    hu_window=[-1024.0, 2048.0],
    crop_size=[32, 128, 128],
)

_release = partial(
    released_checkpoint,
    architecture="segresnet_encoder_3d",
    kwargs=CTFM_KWARGS,
    input=CTFM_INPUT,
    license="Apache-2.0 (project-lighter Hugging Face model card)",
)
_FLAT = "a flat dict of tensors"
"""What both files hold (``model.safetensors``: the model's flat ``state_dict()``)."""


@_release(
    name="ct-fm-segresnet-encoder",
    source_layout="ct_fm_feature_extractor model.safetensors: flat MONAI SegResEncoder keys "
    "'conv_init.weight', 'layers.{i}.blocks.{j}.{norm1,conv1,norm2,conv2}.*', "
    "'layers.{i}.downsample.weight' (init_filters 32, blocks_down 1-2-2-4-4, BatchNorm)",
    reference="https://huggingface.co/project-lighter/ct_fm_feature_extractor",
)
def _map_ctfm_encoder(content: Any) -> dict[str, Tensor]:
    return {f"encoder.{k}": v for k, v in require_mapping(content, _FLAT).items()}


@_release(
    name="ct-fm-segresnet",
    source_layout="ct_fm_segresnet model.safetensors: flat MONAI SegResNetDS keys "
    "'encoder.*' (as ct_fm_feature_extractor) and 'up_layers.*' (decoder, dropped)",
    reference="https://huggingface.co/project-lighter/ct_fm_segresnet",
    drop=("up_layers.*",),
)
def _map_ctfm_segresnet(content: Any) -> dict[str, Tensor]:
    return dict(require_mapping(content, _FLAT))
