"""Prepared CT/MRI shards: volumes preprocessed once, streamed as random crops.

``domainfm prepare medical3d SRC OUT`` runs :class:`VolumePreparer` over every NIfTI file
and DICOM series folder under ``SRC``: each volume is validated and read
(:func:`~domainfm.domains.medical3d.io.load_volume`), reoriented to RAS, resampled to the
target spacing and intensity-normalized by the same MONAI transform as the file-based path
(:func:`~domainfm.domains.medical3d.preprocess.volume_transform`), and stored as one item:
``image`` ``(C, D, H, W)`` (float16 by default: normalized intensities in [0, 1] keep ~3
significant digits, 1 HU steps in a 2000 HU window), its RAS ``affine`` ``(4, 4)`` after
resampling, ``spacing``, the ``foreground`` voxel coordinates ``(M, 3)`` (for
foreground-aware crops) and ``source``. The manifest gets per-channel intensity statistics.

:class:`StreamingVolumeDataModule` streams the items and cuts ``samples_per_volume`` crops
from each with the file-based path's view makers
(:mod:`~domainfm.domains.medical3d.views`: random crops, overlapping pairs, VoCo, Swin UNETR
SSL views), foreground-aware like :class:`~domainfm.domains.medical3d.volumes.VolumeCropDataset`.

Example (YAML for ``domainfm fit``)::

    data:
      class_path: domainfm.domains.medical3d.StreamingVolumeDataModule
      init_args:
        shards: prepared/ct
        crop_size: 64
        samples_per_volume: 4
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from domainfm.core.masking import DEFAULT_MASKING, MaskingSpec
from domainfm.data.shards import source_key
from domainfm.data.streaming import SampleMaker, ShardDataModule
from domainfm.domains.medical3d.contract import VolumeContract, check_hu_window, check_spacing
from domainfm.domains.medical3d.index import find_volumes
from domainfm.domains.medical3d.io import load_volume
from domainfm.domains.medical3d.preprocess import apply_volume_transform, volume_transform
from domainfm.domains.medical3d.views import VolumeViews
from domainfm.domains.medical3d.volume_types import Geometry, check_geometry_choice
from domainfm.domains.medical3d.volumes import foreground_coords, make_views


class VolumePreparer:
    """One prepared item per volume (see the module docstring).

    Args:
        spacing: target spacing in mm (one value or three).
        modality: ``"ct"`` (HU window) or ``"mri"`` (0.5–99.5 percentile scaling).
        hu_window: HU range mapped to [0, 1] for CT.
        dtype: stored dtype of the normalized volume, ``"float16"`` or ``"float32"``.
        foreground_threshold: normalized intensity above which a voxel counts as foreground;
            the coordinates (for foreground-aware crops) are stored with the volume.
        geometry: which transform places the voxels of a NIfTI file whose qform and sform
            disagree: ``"strict"`` (default) skips such a file as bad, ``"sform"`` /
            ``"qform"`` assume that one (see :func:`~domainfm.domains.medical3d.load_volume`);
            recorded in the settings when not ``"strict"``.
    """

    domain = "medical3d"

    def __init__(
        self,
        *,
        spacing: float | Sequence[float] = 1.5,
        modality: Literal["ct", "mri"] = "ct",
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        dtype: Literal["float16", "float32"] = "float16",
        foreground_threshold: float = 0.05,
        geometry: Geometry = "strict",
    ) -> None:
        self.geometry = check_geometry_choice(geometry)
        if modality not in ("ct", "mri"):
            raise ValueError(f"modality must be 'ct' or 'mri', got {modality!r}")
        if dtype not in ("float16", "float32"):
            raise ValueError(f"dtype must be 'float16' or 'float32', got {dtype!r}")
        self.spacing = check_spacing(spacing)
        self.modality: Literal["ct", "mri"] = modality
        self.hu_window = check_hu_window(hu_window)
        self.dtype = dtype
        self.foreground_threshold = foreground_threshold

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "spacing": list(self.spacing),
            "modality": self.modality,
            "hu_window": list(self.hu_window),
            "orientation": "RAS",
            "dtype": self.dtype,
            "foreground_threshold": self.foreground_threshold,
        }
        if self.geometry != "strict":
            settings["geometry"] = self.geometry
        return settings

    def sources(self, src_dir: Path) -> list[tuple[Path, ...]]:
        """Every NIfTI file and DICOM series folder under ``src_dir``."""
        return [(path,) for _, path in find_volumes([src_dir], skip=None)]

    def items(self, paths: tuple[Path, ...]) -> Iterator[dict[str, Any]]:
        (path,) = paths
        volume = load_volume(path, geometry=self.geometry)  # ValueError naming a bad file
        transform = volume_transform(
            spacing=self.spacing, modality=self.modality, hu_window=self.hu_window, load=False
        )
        out = apply_volume_transform(  # MetaTensor (C, D, H, W); size-guarded, errors named
            transform, volume.to_metatensor(), spacing=self.spacing, source=path
        )
        tensor = out.as_tensor().float()  # (C, D, H, W)
        image = tensor.numpy().astype(self.dtype)
        foreground = foreground_coords(tensor, self.foreground_threshold)  # (M, 3)
        yield {
            "image": np.ascontiguousarray(image),
            "foreground": foreground.numpy().astype(np.int32),
            "affine": np.asarray(out.affine, dtype=np.float64),
            "spacing": np.asarray(self.spacing, dtype=np.float64),
            "source": source_key(paths, path.parent),
        }

    def channel_values(self, item: dict[str, Any]) -> np.ndarray:
        image = item["image"]
        return image.reshape(image.shape[0], -1)  # (C, D*H*W)


class VolumeCrops:
    """Sample maker: ``samples_per_volume`` samples of a view maker from one prepared
    volume (zero-padded to the view maker's ``min_size`` when smaller).

    Args:
        views: the view maker.
        samples_per_volume: samples per streamed volume.
        foreground_threshold: normalized intensity counting as foreground (for
            foreground-aware view makers) when the item has no stored ``"foreground"``.
    """

    def __init__(
        self, *, views: VolumeViews, samples_per_volume: int = 4, foreground_threshold: float = 0.05
    ) -> None:
        if samples_per_volume < 1:
            raise ValueError(f"samples_per_volume must be >= 1, got {samples_per_volume}")
        self.views = views
        self.samples_per_volume = samples_per_volume
        self.foreground_threshold = foreground_threshold

    def __call__(self, item: dict[str, Any], generator: torch.Generator) -> list[dict[str, Any]]:
        volume = torch.as_tensor(item["image"]).float()  # (C, D, H, W)
        stored = item.get("foreground")  # (M, 3) voxel coordinates, computed when prepared
        foreground = torch.as_tensor(stored).long() if stored is not None else None
        short = [max(0, m - s) for m, s in zip(self.views.min_size, volume.shape[1:], strict=True)]
        if any(short):
            pad: list[int] = []
            for need in reversed(short):  # F.pad lists the last axis first
                pad += [need // 2, need - need // 2]
            volume = torch.nn.functional.pad(volume, pad)
            if foreground is not None:  # shift by the padding before each axis
                foreground = foreground + torch.tensor([n // 2 for n in short])
        if foreground is None:
            foreground = foreground_coords(volume, self.foreground_threshold)
        return [
            self.views(volume, generator=generator, foreground=foreground)
            for _ in range(self.samples_per_volume)
        ]


class StreamingVolumeDataModule(ShardDataModule):
    """Crops streamed from ``domainfm prepare medical3d`` shards, masked for MAE in the
    workers (the streaming counterpart of
    :class:`~domainfm.domains.medical3d.VolumePretrainDataModule`).

    Args:
        crop_size: crop size in voxels.
        views: a view maker, or 1 (random crop) / 2 (overlapping pair) of ``crop_size``.
        samples_per_volume: crops per streamed volume (a batch holds ``batch_size`` ×
            ``samples_per_volume`` crops).
        masking: the MAE masks: the backbone's patch size, the ratio, ``"random"`` or
            ``"block"``.
        batch_size: volumes per batch.
        **kwargs: ``shards``, ``val_shards``, ``cache_dir``, ``max_cache_size``,
            ``manifest``, ``num_workers``, ``seed``: see
            :class:`~domainfm.data.streaming.ShardDataModule`.
    """

    domain = "medical3d"

    def __init__(
        self,
        *,
        crop_size: int | Sequence[int] = 64,
        views: int | VolumeViews = 1,
        samples_per_volume: int = 4,
        masking: MaskingSpec = DEFAULT_MASKING,
        batch_size: int = 2,
        **kwargs: Any,
    ) -> None:
        super().__init__(batch_size=batch_size, **kwargs)
        self.views = make_views(views, crop_size=crop_size)
        self.samples_per_volume = samples_per_volume
        self.collate = masking.collate(kinds=("random", "block"))

    def sample_maker(self, manifest: dict[str, Any]) -> SampleMaker:
        return VolumeCrops(views=self.views, samples_per_volume=self.samples_per_volume)

    def input_contract(self) -> VolumeContract:
        settings = self.manifest.get("settings", {})
        return VolumeContract(
            channels=["image"],
            modality=settings.get("modality"),
            spacing_mm=settings.get("spacing"),
            crop_size=list(self.views.crop_size),
            hu_window=settings.get("hu_window", [-1000.0, 1000.0]),
            extra=self.prepared_contract(),
        )
