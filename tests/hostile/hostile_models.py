"""The cheapest real checkpoints and configs the hostile cases need, built once per driver
process (reused from disk by later ones): untrained tiny models saved in Lightning's
checkpoint layout with the ``domainfm`` entry the CLI reads (backbone config, input contract,
head recipe).

* :attr:`Models.medical_seg`: a 3D ViT segmentation ``FinetuneModule`` (CT, 2 mm, crop 16³);
* :attr:`Models.geo_seg` / :attr:`Models.geo_detect`: a 4-band raster segmentation module and
  a ``DetectionModule`` (bands ``B1``–``B4``, window 32);
* :attr:`Models.audio_sed`: a ``SoundEventModule`` over a log-mel front end (16 kHz, 96 frames);
* :attr:`Models.export`: ``domainfm export`` of the medical model (``config.json`` +
  ``model.safetensors``);
* :meth:`Models.fit_config`: a tiny medical MAE pretraining config that trains in one step.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hostile_files import nifti_bytes, write_nifti
from torch import nn

from domainfm.core.contract import InputContract
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.audio import AudioContract, SoundEventModule, build_frontend
from domainfm.domains.geospatial import RasterContract
from domainfm.domains.medical3d import VolumeContract
from domainfm.pretrained.export import export_checkpoint
from domainfm.tasks.detection_module import DetectionModule
from domainfm.tasks.finetune_module import FinetuneModule, load_finetuned
from domainfm.tasks.task_module import checkpoint_metadata


def save_checkpoint(
    path: Path, module: nn.Module, backbone: nn.Module, contract: InputContract, recipe: Any
) -> Path:
    """``module`` as a Lightning ``.ckpt`` with its ``domainfm`` entry, written atomically."""

    class _Data:
        def input_contract(self) -> InputContract:
            return contract

    class _Trainer:
        datamodule = _Data()

    meta = checkpoint_metadata(backbone, _Trainer(), recipe)  # type: ignore[arg-type]
    ckpt = {
        "epoch": 0,
        "global_step": 1,
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(),
        "domainfm": meta,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    torch.save(ckpt, tmp)
    os.replace(tmp, path)
    return path


def _vit(in_chans: int, spatial_dims: int, patch: int) -> VisionTransformerND:
    torch.manual_seed(0)
    return VisionTransformerND(
        in_chans=in_chans,
        spatial_dims=spatial_dims,
        patch_size=patch,
        embed_dim=16,
        depth=2,
        num_heads=2,
    )


FIT_CONFIG = """\
seed_everything: 0
trainer:
  max_steps: 1
  accelerator: cpu
  logger: false
  enable_progress_bar: false
  default_root_dir: {root}
model:
  class_path: domainfm.tasks.pretrain_module.PretrainModule
  init_args:
    lr: 1.0e-3
    domain: medical3d
    backbone:
      class_path: domainfm.core.vit.VisionTransformerND
      init_args: {{in_chans: 1, spatial_dims: 3, patch_size: 8, embed_dim: 16, depth: 1,
                   num_heads: 2}}
    objectives:
      mae:
        class_path: domainfm.core.objectives.mae.MAE
        init_args: {{decoder_dim: 16, decoder_depth: 1, decoder_heads: 2}}
data:
  class_path: domainfm.domains.medical3d.VolumePretrainDataModule
  init_args:
    files: [{volume}]
    crop_size: 16
    spacing: 2.0
    modality: ct
    masking: {{ratio: 0.5, patch_size: 8}}
    samples_per_volume: 2
    batch_size: 2
    num_workers: 0
"""
"""A medical MAE pretraining that trains one step on one 20³ volume (``{root}``: run folder,
``{volume}``: the volume)."""


class Models:
    """Tiny checkpoints under ``folder`` (built on first use, reused when present)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _cached(self, name: str) -> Path | None:
        path = self.folder / name
        return path if path.exists() else None

    @functools.cached_property
    def medical_contract(self) -> VolumeContract:
        return VolumeContract(modality="ct", spacing_mm=2.0, crop_size=[16, 16, 16])

    @functools.cached_property
    def medical_seg(self) -> Path:
        if found := self._cached("medical_seg.ckpt"):
            return found
        backbone = _vit(1, 3, 8)
        module = FinetuneModule(backbone=backbone, task="segmentation", num_classes=2)
        return save_checkpoint(
            self.folder / "medical_seg.ckpt",
            module,
            backbone,
            self.medical_contract,
            module.checkpoint_recipe(),
        )

    @functools.cached_property
    def medical_module(self) -> FinetuneModule:
        """The medical segmentation model, loaded (for API calls)."""
        return load_finetuned(self.medical_seg)[0]

    @functools.cached_property
    def raster_contract(self) -> RasterContract:
        return RasterContract(
            bands=["B1", "B2", "B3", "B4"],
            normalization={"type": "scale", "divide_by": 1.0},
            window=32,
            class_names=["background", "field"],
        )

    @functools.cached_property
    def geo_seg(self) -> Path:
        if found := self._cached("geo_seg.ckpt"):
            return found
        backbone = _vit(4, 2, 8)
        module = FinetuneModule(backbone=backbone, task="segmentation", num_classes=2)
        return save_checkpoint(
            self.folder / "geo_seg.ckpt",
            module,
            backbone,
            self.raster_contract,
            module.checkpoint_recipe(),
        )

    @functools.cached_property
    def geo_module(self) -> FinetuneModule:
        """The raster segmentation model, loaded (for API calls)."""
        return load_finetuned(self.geo_seg)[0]

    @functools.cached_property
    def geo_detect(self) -> Path:
        if found := self._cached("geo_detect.ckpt"):
            return found
        backbone = _vit(4, 2, 8)
        module = DetectionModule(backbone=backbone, num_classes=2, image_size=32, fpn_dim=16)
        return save_checkpoint(
            self.folder / "geo_detect.ckpt",
            module,
            backbone,
            self.raster_contract,
            module.checkpoint_recipe(),
        )

    @functools.cached_property
    def audio_contract(self) -> AudioContract:
        frontend = build_frontend({"architecture": "log_mel", "kwargs": {"sample_rate": 16000}})
        return AudioContract.of(frontend, frames=96, class_names=["a", "b"])

    @functools.cached_property
    def audio_sed(self) -> Path:
        if found := self._cached("audio_sed.ckpt"):
            return found
        backbone = _vit(1, 2, 16)
        module = SoundEventModule(backbone=backbone, num_classes=2)
        recipe = {"sed": {"num_classes": 2, "lr": module.lr}}
        return save_checkpoint(
            self.folder / "audio_sed.ckpt", module, backbone, self.audio_contract, recipe
        )

    @functools.cached_property
    def export(self) -> Path:
        folder = self.folder / "medical_export"
        if (folder / "config.json").exists():
            return folder
        return export_checkpoint(self.medical_seg, folder)

    @functools.cached_property
    def volume(self) -> Path:
        """A good 20³ CT volume (2 mm)."""
        path = self.folder / "good_ct.nii.gz"
        if not path.exists():
            write_nifti(path, nifti_bytes())
        return path

    def fit_config(self, root: Path, *, volume: Path | None = None, text: str = "") -> Path:
        """The one-step medical MAE config, written to ``root/fit.yaml`` (``text``: extra
        YAML appended to it)."""
        path = root / "fit.yaml"
        path.write_text(
            FIT_CONFIG.format(root=root, volume=volume or self.volume) + text, encoding="utf-8"
        )
        return path
