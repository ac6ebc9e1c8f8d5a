"""Random 3D crops from CT/MRI volumes, for self-supervised pretraining.

Volumes are read and validated by :func:`~domainfm.domains.medical3d.io.load_volume` (a NIfTI
file via nibabel, or a DICOM series folder via pydicom: slices sorted by position, spacing
from the headers; a bad file is skipped with a warning and listed in ``skipped``), made
channel-first, reoriented to RAS, resampled to a target spacing and intensity-normalized once
by MONAI (CT: a HU window scaled to [0, 1]; MRI: 0.5–99.5 percentile scaling), optionally
cached on disk (``cache_dir``), then kept in memory; each item is cut by a view
maker (:mod:`domainfm.domains.medical3d.views`): a random crop, a pair of overlapping crops,
VoCo's base/random crops, the Swin UNETR SSL views.

Example::

    >>> ds = VolumeCropDataset(files=["ct.nii.gz"], crop_size=64, modality="ct")
    >>> ds[0]["input"].shape     # (C, D, H, W)
    torch.Size([1, 64, 64, 64])
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from domainfm.core.checkpoint_io import atomic_write
from domainfm.domains.medical3d.index import fingerprint
from domainfm.domains.medical3d.io import VolumeSkippedWarning, load_volume
from domainfm.domains.medical3d.preprocess import (
    VolumePreprocessing,
    apply_volume_transform,
    check_crop,
    volume_transform,
)
from domainfm.domains.medical3d.views import OverlappingCropPair, RandomCrop, VolumeViews
from domainfm.domains.medical3d.volume_types import Geometry

LISTED_FAILURES = 5
"""Failures spelled out in the one-line error when no volume could be loaded (the rest are
counted)."""
CACHE_FORMAT = 2
"""Part of every preprocessed-volume cache key: bump it when the preprocessing changes
(2: resampling in float32)."""


def _preprocess(
    path: Path,
    *,
    spacing: Sequence[float],
    modality: Literal["ct", "mri"],
    hu_window: tuple[float, float],
    min_size: Sequence[int],
    cache_dir: Path | None = None,
    geometry: Geometry = "strict",
) -> Tensor:
    """The preprocessed volume ``(C, D, H, W)`` of ``path``: read once and validated by
    :func:`load_volume` (with ``geometry``), then :func:`volume_transform` (RAS, spacing,
    intensity, padding) on its ``MetaTensor``, size-guarded
    (:func:`~domainfm.domains.medical3d.preprocess.apply_volume_transform`). With
    ``cache_dir``, taken from (or saved atomically to) a ``.npy`` there, keyed by the file
    (resolved path, size, mtime) and the settings.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``"could not load volume <path>: <reason>"`` (the reason as ``__cause__``).
    """
    cached = None
    if cache_dir is not None:
        cached = _cache_file(
            cache_dir,
            path,
            spacing=spacing,
            modality=modality,
            hu_window=hu_window,
            min_size=min_size,
            geometry=geometry,
        )
        if cached.exists():
            try:
                array = np.load(cached, allow_pickle=False)
                if array.ndim == 4 and array.dtype == np.float32:
                    return torch.from_numpy(array)
                raise ValueError(f"expected a 4D float32 array, got {array.dtype} {array.shape}")
            except (OSError, ValueError) as err:
                warnings.warn(f"ignoring unreadable cached volume {cached}: {err}", stacklevel=3)
    try:
        volume = load_volume(path, geometry=geometry)
        transform = volume_transform(
            spacing=spacing, modality=modality, hu_window=hu_window, min_size=min_size, load=False
        )
        out = apply_volume_transform(  # MetaTensor (C, D, H, W)
            transform, volume.to_metatensor(), spacing=spacing, source=path, min_size=min_size
        )
    except FileNotFoundError:
        raise
    except Exception as err:  # load_volume's ValueError, or MONAI's errors: name the file
        raise ValueError(f"could not load volume {path}: {err}") from err
    tensor = out.as_tensor().to(torch.float32).contiguous()  # (C, D, H, W)
    if cached is not None:
        data = tensor.numpy()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.save(handle, data)

        atomic_write(cached, write)
    return tensor


def _cache_file(
    cache_dir: Path,
    path: Path,
    *,
    spacing: Sequence[float],
    modality: str,
    hu_window: tuple[float, float],
    min_size: Sequence[int],
    geometry: Geometry = "strict",
) -> Path:
    """``<cache_dir>/<file name>.<hash>.npy``, the hash over the file's resolved path, size
    and mtime and every preprocessing setting (``geometry`` only when not ``"strict"``)."""
    stamp = fingerprint(path)
    key = {
        "format": CACHE_FORMAT,
        "path": str(path.resolve()),
        "size": stamp.size,
        "mtime_ns": stamp.mtime_ns,
        "files": stamp.files,
        "spacing": [float(v) for v in spacing],
        "modality": modality,
        "hu_window": [float(v) for v in hu_window],
        "min_size": [int(v) for v in min_size],
    }
    if geometry != "strict":
        key["geometry"] = geometry
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    name = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[:48]
    return cache_dir / f"{name}.{digest}.npy"


class VolumeCropDataset(Dataset[dict[str, Tensor]]):
    """Samples cut from a list of volumes by a view maker, ``samples_per_volume`` per volume.

    Args:
        files: NIfTI files or DICOM series folders (one channel each).
        views: the view maker (:class:`~domainfm.domains.medical3d.views.VolumeViews`), or
            1 for a :class:`RandomCrop`, 2 for an :class:`OverlappingCropPair` of
            ``crop_size`` (with ``max_shift``).
        crop_size: crop size in voxels when ``views`` is 1 or 2.
        spacing: target voxel spacing in mm.
        modality: ``"ct"`` (HU window) or ``"mri"`` (percentile scaling).
        hu_window: HU range mapped to [0, 1] for CT.
        samples_per_volume: dataset items per volume (one epoch).
        max_shift: largest offset of the second view (``views=2``), fraction of the crop.
        foreground_threshold: normalized intensity above which a voxel counts as foreground
            (for foreground-aware crops, see the view maker's ``foreground_prob``).
        strict: raise on the first file that fails validation or loading; by default such a
            file is skipped with a :class:`VolumeSkippedWarning` and listed in ``skipped``.
        preprocess_workers: threads preprocessing volumes in parallel at construction
            (decompression and resampling release the GIL).
        cache_dir: folder of preprocessed volumes (``.npy``, one per file and settings): a
            second dataset with the same files and settings loads them instead of
            preprocessing. A changed file (size or mtime) or setting misses the cache.
        geometry: which transform places the voxels of a NIfTI file whose qform and sform
            disagree: ``"strict"`` (default) skips such a file as bad, ``"sform"`` /
            ``"qform"`` assume that one (see :func:`load_volume`).

    Attributes:
        files: the volumes that loaded, in order (``volumes[i]`` is ``files[i]``).
        volumes: their preprocessed tensors ``(C, D, H, W)``.
        skipped: ``(path, reason)`` of every file that was left out.

    Raises:
        FileNotFoundError: files that do not exist (a configuration error, never skipped).
        ValueError: ``strict`` and a bad file, or every file is bad (all are listed).
    """

    def __init__(
        self,
        *,
        files: Sequence[str | Path],
        views: int | VolumeViews = 1,
        crop_size: int | Sequence[int] = 64,
        spacing: float | Sequence[float] = 3.0,
        modality: Literal["ct", "mri"] = "ct",
        hu_window: tuple[float, float] = (-1000.0, 1000.0),
        samples_per_volume: int = 8,
        max_shift: float = 0.5,
        foreground_threshold: float = 0.05,
        strict: bool = False,
        cache_dir: str | Path | None = None,
        preprocess_workers: int = 1,
        geometry: Geometry = "strict",
    ) -> None:
        if not files:
            raise ValueError("files is empty: pass at least one volume")
        settings = VolumePreprocessing(  # a configuration error: refused before any file is read
            spacing=spacing, modality=modality, hu_window=hu_window, geometry=geometry
        )
        self.views = make_views(views, crop_size=crop_size, max_shift=max_shift)
        check_crop(self.views.min_size)  # absurd whatever the volume: before any file is read
        paths = [Path(f) for f in files]
        missing = [str(f) for f in paths if not f.exists()]
        if missing:
            raise FileNotFoundError(f"volume files not found: {', '.join(missing)}")
        cache = Path(cache_dir) if cache_dir is not None else None
        self.files: list[Path] = []
        self.volumes: list[Tensor] = []
        self.skipped: list[tuple[str, str]] = []
        prepare = partial(
            _preprocess_or_error,
            min_size=self.views.min_size,
            cache_dir=cache,
            **settings.as_kwargs(),
        )
        with ThreadPoolExecutor(max_workers=max(1, preprocess_workers)) as pool:
            results = list(pool.map(prepare, paths))  # in file order
        for path, (volume, err) in zip(paths, results, strict=True):
            if err is not None:
                if strict:
                    raise err
                reason = str(err.__cause__ or err)
                self.skipped.append((str(path), reason))
                warnings.warn(
                    f"skipping volume {path}: {reason}", VolumeSkippedWarning, stacklevel=2
                )
                continue
            assert volume is not None
            self.files.append(path)
            self.volumes.append(volume)
        if not self.volumes:
            raise ValueError(
                f"could not load any of the {len(paths)} volumes: {failure_listing(self.skipped)}"
            )
        self.foreground = [foreground_coords(v, foreground_threshold) for v in self.volumes]
        self.samples_per_volume = samples_per_volume

    def __len__(self) -> int:
        return len(self.volumes) * self.samples_per_volume

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Tensor]:
        """The sample of the view maker (always with ``"input"``); ``key`` is an index or
        ``(index, seed)`` from :class:`~domainfm.data.sampling.SeededSampler` (then every
        random choice follows from the seed and ``"seed"`` is returned too)."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        volume = index // self.samples_per_volume
        sample = self.views(
            self.volumes[volume], generator=generator, foreground=self.foreground[volume]
        )
        if seed is not None:
            sample["seed"] = torch.tensor(seed)
        return sample


def failure_listing(failed: Sequence[tuple[str, str]], shown: int = LISTED_FAILURES) -> str:
    """``"<path>: <reason>; <path>: <reason>; ... and N more"`` on one line (a reason that
    names its path already is not prefixed again), the first ``shown`` failures."""
    entries = []
    for path, reason in failed[:shown]:
        text = " ".join(reason.split())  # one line
        entries.append(text if path in text else f"{path}: {text}")
    more = len(failed) - len(entries)
    return "; ".join(entries) + (f"; and {more} more" if more > 0 else "")


def _preprocess_or_error(path: Path, **kwargs: Any) -> tuple[Tensor | None, ValueError | None]:
    """:func:`_preprocess` with its ``ValueError`` returned instead of raised (thread pool)."""
    try:
        return _preprocess(path, **kwargs), None
    except ValueError as err:
        return None, err


def make_views(
    views: int | VolumeViews, *, crop_size: int | Sequence[int], max_shift: float = 0.5
) -> VolumeViews:
    """A view maker from ``views`` (returned as is) or the shorthands 1 and 2."""
    if isinstance(views, VolumeViews):
        return views
    if views == 1:
        return RandomCrop(crop_size=crop_size)
    if views == 2:
        return OverlappingCropPair(crop_size=crop_size, max_shift=max_shift)
    raise ValueError(f"views must be 1, 2 or a VolumeViews view maker, got views={views!r}")


def foreground_coords(
    volume: Tensor, threshold: float, max_points: int = 20_000, stride: int = 2
) -> Tensor:
    """Voxel coordinates ``(M, 3)`` where any channel exceeds ``threshold``, looked up on a
    grid of every ``stride``-th voxel (crop centres need no finer positions), then an evenly
    strided subset of at most ``max_points``."""
    coarse = volume[:, ::stride, ::stride, ::stride]  # (C, D/s, H/s, W/s)
    coords = (coarse > threshold).any(dim=0).nonzero() * stride  # (M, 3) voxel positions
    step = max(1, len(coords) // max_points)
    return coords[::step].contiguous()
