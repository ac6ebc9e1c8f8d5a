"""3D medical imaging (CT/MRI): preprocessing, crops, pretraining data and whole-volume
segmentation written back as NIfTI on the input's grid."""

from domainfm.domains.medical3d import released  # noqa: F401  (registers the releases)
from domainfm.domains.medical3d.augment import AugmentedViews
from domainfm.domains.medical3d.cnn import SegResNetEncoder3D
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.datamodule import VolumePretrainDataModule
from domainfm.domains.medical3d.index import VolumeIndex
from domainfm.domains.medical3d.inference import segment_volume
from domainfm.domains.medical3d.io import Volume, check_label_pair, load_volume
from domainfm.domains.medical3d.labeled_volumes import LabeledVolumeDataset
from domainfm.domains.medical3d.partition_views import PartitionViews
from domainfm.domains.medical3d.plugin import Medical3DPlugin
from domainfm.domains.medical3d.preprocess import volume_transform
from domainfm.domains.medical3d.seg_datamodule import VolumeSegDataModule
from domainfm.domains.medical3d.shards import StreamingVolumeDataModule, VolumePreparer
from domainfm.domains.medical3d.swin import SwinViT3D
from domainfm.domains.medical3d.swin_ssl_views import SwinSSLViews
from domainfm.domains.medical3d.voco_crops import VoCoCrops
from domainfm.domains.medical3d.volumes import VolumeCropDataset

__all__ = [
    "AugmentedViews",
    "LabeledVolumeDataset",
    "Medical3DPlugin",
    "PartitionViews",
    "SegResNetEncoder3D",
    "StreamingVolumeDataModule",
    "SwinSSLViews",
    "SwinViT3D",
    "VoCoCrops",
    "Volume",
    "VolumeContract",
    "VolumeCropDataset",
    "VolumeIndex",
    "VolumePreparer",
    "VolumePretrainDataModule",
    "VolumeSegDataModule",
    "check_label_pair",
    "load_volume",
    "segment_volume",
    "volume_transform",
]
