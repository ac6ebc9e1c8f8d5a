"""Memory is estimated before it is allocated: a small file whose header asks for a huge
volume, voxel sizes that resample to terabytes and sliding-window buffers above the limit are
refused up front with the estimate and the file name first; NIfTI voxels are decoded into
float32 without a float64 copy of the whole volume; MONAI's errors name the file."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai import transforms as mt

from domainfm.core.size_guard import LIMIT_ENV, AllocationTooLarge
from domainfm.domains.medical3d import (
    LabeledVolumeDataset,
    VolumeCropDataset,
    VolumePreparer,
    load_volume,
    segment_volume,
    volume_transform,
)
from domainfm.domains.medical3d import nifti as nifti_module
from domainfm.domains.medical3d.preprocess import (
    RAS_LABELS,
    apply_volume_transform,
    resampled_shape,
)

SERIES = "medical/totalsegmentator_examples/ct_dicom_series/dicom"
CT = "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz"
MR_LPS = "medical/totalsegmentator_examples/mr_labeled/example_mr_sm.nii.gz"


def _header_only_gzip(path: Path, shape: tuple[int, ...], dtype: Any = np.uint8) -> Path:
    """A gzip NIfTI whose header asks for ``shape`` voxels of zeros (a few KiB on disk)."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header.set_sform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(header.binaryblock + b"\x00" * 4)  # vox_offset 352
        chunk = b"\x00" * (1 << 20)
        for start in range(0, nbytes, len(chunk)):
            handle.write(chunk[: min(len(chunk), nbytes - start)])
    return path


def _ct(path: Path, shape: tuple[int, int, int], zooms: tuple[float, float, float]) -> Path:
    data = np.full(shape, -1000, dtype=np.int16)
    data[1:-1, 1:-1, 1:-1] = 50
    image = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    nib.save(image, str(path))
    return path


def test_a_small_gzip_that_decodes_to_a_huge_volume_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIMIT_ENV, "0.01")  # 10 MiB; the header asks for 64 MiB of float32
    path = _header_only_gzip(tmp_path / "bomb.nii.gz", (256, 256, 256))
    assert path.stat().st_size < 200_000
    with pytest.raises(AllocationTooLarge) as info:
        load_volume(path)
    message = str(info.value)
    assert message.startswith(f"{path}: the 256 x 256 x 256 float32 volume would need about")
    assert "64.0 MiB" in message and "--max-alloc-gb" in message


def test_a_dicom_series_asking_for_a_huge_volume_is_refused_before_decoding(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIMIT_ENV, "0.1")
    folder = tmp_path / "series"
    folder.mkdir()
    for source in sorted((data_root / SERIES).iterdir())[:4]:
        ds = pydicom.dcmread(source)
        ds.Rows = ds.Columns = 4096  # 4096 x 4096 x 4 float32: 256 MiB
        ds.save_as(folder / source.name)
    with pytest.raises(AllocationTooLarge, match=rf"^{folder}: the 4096 x 4096 x 4 float32"):
        load_volume(folder)


def test_nifti_voxels_are_read_without_a_float64_copy_of_the_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(-1000, 1000, size=(128, 128, 128), dtype=np.int16)
    image = nib.Nifti1Image(data, np.eye(4))
    image.header.set_slope_inter(0.5, -3.0)  # scaled: nibabel computes it in float64
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, str(path))
    expected = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    monkeypatch.setattr(nifti_module, "READ_SLAB_BYTES", 1 << 20)
    out_bytes = data.size * 4
    tracemalloc.start()
    try:
        volume = load_volume(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(volume.array[0], expected)  # nibabel's values, exactly
    # the float32 volume, a slab, and the value checks' masks (1 byte per voxel); a float64
    # copy of the volume alone would be twice the float32 one
    assert peak < 1.6 * out_bytes, f"peak {peak / 2**20:.1f} MiB"


def test_resampling_computes_in_float32() -> None:
    spacing = next(
        t
        for t in volume_transform(spacing=(2.0,) * 3, modality="ct").transforms
        if isinstance(t, mt.Spacing)
    )
    assert np.dtype(spacing.sp_resample.dtype) == np.float32  # MONAI's default is float64


@pytest.mark.parametrize(("name", "target"), [(CT, (1.5, 1.5, 1.5)), (MR_LPS, (2.0, 1.0, 4.5))])
def test_the_resampled_shape_estimate_is_monais(
    data_root: Path, name: str, target: tuple[float, float, float]
) -> None:
    volume = load_volume(data_root / name)
    transform = volume_transform(spacing=target, modality="ct", load=False)
    out = transform(volume.to_metatensor())
    estimate = resampled_shape(volume.shape, volume.affine, target)
    assert np.all(np.abs(np.array(estimate) - np.array(out.shape[1:])) <= 1), (estimate, out.shape)


def test_absurd_voxel_sizes_are_refused_before_resampling(tmp_path: Path) -> None:
    path = _ct(tmp_path / "huge_voxels.nii.gz", (8, 8, 8), (1e4, 1e4, 1e4))
    kwargs: dict[str, Any] = {"roi_size": 8, "spacing": 1.5, "modality": "ct"}
    with pytest.raises(AllocationTooLarge) as info:
        segment_volume(lambda x: torch.cat([x, -x], 1), path, tmp_path / "o.nii.gz", **kwargs)
    message = str(info.value)
    assert message.startswith(
        f"{path}: resampling to (1.5, 1.5, 1.5) mm spacing (a 46668 x 46668 x 46668 grid)"
    )
    assert "PiB" in message and "MetaTensor" not in message and "object at" not in message
    assert not (tmp_path / "o.nii.gz").exists()
    with pytest.raises(AllocationTooLarge, match=rf"^{path}: resampling"):
        next(VolumePreparer(spacing=1.5).items((path,)))
    label = tmp_path / "label.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.uint8), nib.load(path).affine), str(label))
    with pytest.raises(AllocationTooLarge, match=rf"^{path}: resampling"):
        LabeledVolumeDataset(images=[path], labels=[label], crop_size=8, spacing=1.5)
    with pytest.raises(ValueError, match=rf"{path}: resampling .* would need about"):
        VolumeCropDataset(files=[path], crop_size=8, spacing=1.5, strict=True)


def test_sliding_window_buffers_above_the_limit_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIMIT_ENV, str(1.0 / 1024))  # 1 MiB
    path = _ct(tmp_path / "ct.nii.gz", (32, 32, 32), (1.0, 1.0, 1.0))  # resampling: 512 KiB

    def many_classes(x: torch.Tensor) -> torch.Tensor:  # 10 classes: 11 x 128 KiB of buffers
        return x.repeat(1, 10, 1, 1, 1)

    kwargs: dict[str, Any] = {"roi_size": 16, "spacing": 1.0, "modality": "ct"}
    with pytest.raises(AllocationTooLarge) as info:
        segment_volume(many_classes, path, tmp_path / "o.nii.gz", **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: the sliding-window buffers (10 classes + weights over")
    assert "1.4 MiB" in message and not (tmp_path / "o.nii.gz").exists()
    with pytest.raises(AllocationTooLarge, match=r"\(10 classes"):  # a declared count is used
        segment_volume(
            lambda x: x.repeat(1, 2, 1, 1, 1), path, tmp_path / "o.nii.gz", num_classes=10, **kwargs
        )
    out = segment_volume(lambda x: x.repeat(1, 2, 1, 1, 1), path, tmp_path / "o.nii.gz", **kwargs)
    assert nib.load(out).shape == (32, 32, 32)


def test_monai_errors_name_the_file_and_the_cause(tmp_path: Path) -> None:
    volume = load_volume(_ct(tmp_path / "ct.nii.gz", (8, 8, 8), (1.0, 1.0, 1.0)))

    def broken(x: Any) -> Any:
        raise IndexError("index 9 is out of bounds")

    transform = mt.Compose(
        [mt.Orientation(axcodes="RAS", labels=RAS_LABELS), mt.Lambda(func=broken)]
    )
    with pytest.raises(ValueError) as info:
        apply_volume_transform(
            transform, volume.to_metatensor(), spacing=(1.0,) * 3, source=volume.path
        )
    assert str(info.value) == (
        f"{volume.path}: preprocessing (RAS, resampling, intensity) failed: IndexError: "
        "index 9 is out of bounds"
    )
