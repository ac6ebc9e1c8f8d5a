"""3D medical imaging (CT/MRI): volume IO, crops and pretraining data."""

from domainfm.domains.medical3d.datamodule import VolumePretrainDataModule
from domainfm.domains.medical3d.volumes import VolumeCropDataset

__all__ = ["VolumeCropDataset", "VolumePretrainDataModule"]
