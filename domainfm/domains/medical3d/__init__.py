"""3D medical imaging (CT/MRI): preprocessing, crops, pretraining data and whole-volume
segmentation written back as NIfTI on the input's grid."""

from domainfm.domains.medical3d import released  # noqa: F401  (registers the releases)
from domainfm.domains.medical3d.datamodule import VolumePretrainDataModule
from domainfm.domains.medical3d.inference import segment_volume
from domainfm.domains.medical3d.preprocess import volume_transform
from domainfm.domains.medical3d.swin import SwinViT3D
from domainfm.domains.medical3d.volumes import VolumeCropDataset

__all__ = [
    "SwinViT3D",
    "VolumeCropDataset",
    "VolumePretrainDataModule",
    "segment_volume",
    "volume_transform",
]
