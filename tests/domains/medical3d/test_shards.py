"""Prepared CT/MRI shards: the prepared item equals the file-based preprocessing, DICOM series
folders, bad files named, the crop sample maker, and the manifest's intensity statistics."""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from domainfm.data.shards import channel_stats, prepare_shards, read_manifest
from domainfm.data.streaming import StreamingSamples
from domainfm.domains.medical3d import volume_transform
from domainfm.domains.medical3d.shards import VolumeCrops, VolumePreparer
from domainfm.domains.medical3d.views import RandomCrop, VolumeViews
from domainfm.domains.medical3d.volumes import _preprocess, foreground_coords

CT = "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz"
CT_SMALL = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
DICOM = "medical/totalsegmentator_examples/ct_dicom_series/dicom"


def _one(preparer: VolumePreparer, path: Path) -> dict[str, Any]:
    items = list(preparer.items((path,)))
    assert len(items) == 1
    return items[0]


def _dicom_folder(data_root: Path, tmp_path: Path) -> Path:
    """A real folder of symlinks to the series' slices (os.walk skips symlinked folders)."""
    folder = tmp_path / "series"
    folder.mkdir()
    for file in sorted((data_root / DICOM).glob("*.dcm")):
        (folder / file.name).symlink_to(file)
    return folder


def test_nifti_item_equals_file_based_preprocessing(data_root: Path) -> None:
    """The float32 item is the file-based path's volume with MONAI's RAS affine; float16 is
    within 1e-3 of it."""
    path = data_root / CT
    item = _one(VolumePreparer(spacing=3.0, modality="ct", dtype="float32"), path)
    expected = _preprocess(
        path, spacing=(3.0,) * 3, modality="ct", hu_window=(-1000.0, 1000.0), min_size=(1, 1, 1)
    )
    assert item["image"].dtype == np.float32 and item["image"].shape == tuple(expected.shape)
    np.testing.assert_array_equal(item["image"], expected.numpy())
    # MONAI's own loader (not domainfm's) gives the same volume and affine
    monai_out = volume_transform(spacing=(3.0,) * 3, modality="ct")(str(path))
    np.testing.assert_allclose(item["image"], monai_out.numpy(), atol=1e-6)
    np.testing.assert_allclose(item["affine"], np.asarray(monai_out.affine), atol=1e-6)
    # the file is RAS at 3 mm already: its canonical affine and windowed HU
    raw = nib.as_closest_canonical(nib.load(path))
    assert nib.aff2axcodes(item["affine"]) == ("R", "A", "S")
    np.testing.assert_allclose(item["affine"], raw.affine, atol=1e-4)
    hu = np.asarray(raw.dataobj, dtype=np.float32)
    np.testing.assert_allclose(item["image"][0], np.clip((hu + 1000) / 2000, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(item["spacing"], [3.0, 3.0, 3.0])
    assert item["source"] == "example_ct.nii.gz"

    half = _one(VolumePreparer(spacing=3.0, modality="ct", dtype="float16"), path)
    assert half["image"].dtype == np.float16
    np.testing.assert_allclose(half["image"].astype(np.float32), expected.numpy(), atol=1e-3)


def test_dicom_series_is_resampled_to_the_target_spacing(data_root: Path, tmp_path: Path) -> None:
    """A DICOM series folder is one source and one item on a 3 mm RAS grid starting at the
    series' lowest RAS corner, with the windowed HU of its slices."""
    folder = _dicom_folder(data_root, tmp_path)
    preparer = VolumePreparer(spacing=3.0)
    assert preparer.sources(tmp_path) == [(folder,)]
    item = _one(preparer, folder)
    np.testing.assert_array_equal(item["spacing"], [3.0, 3.0, 3.0])
    np.testing.assert_allclose(item["affine"][:3, :3], 3.0 * np.eye(3), atol=1e-6)
    assert item["source"] == "series"

    # independent geometry from the DICOM tags: voxel centres in LPS → RAS
    slices = [pydicom.dcmread(f) for f in sorted(folder.glob("*.dcm"))]
    rows, cols = int(slices[0].Rows), int(slices[0].Columns)
    d_row, d_col = (float(v) for v in slices[0].PixelSpacing)
    orient = np.asarray(slices[0].ImageOrientationPatient, dtype=np.float64)
    along_row, along_col = orient[:3], orient[3:]  # directions of increasing column / row
    positions = np.asarray([s.ImagePositionPatient for s in slices], dtype=np.float64)
    corners = [
        pos + i * d_col * along_row + j * d_row * along_col
        for pos, i, j in itertools.product(positions, (0, cols - 1), (0, rows - 1))
    ]
    ras = np.asarray(corners) * [-1.0, -1.0, 1.0]
    np.testing.assert_allclose(item["affine"][:3, 3], ras.min(axis=0), atol=1e-3)
    extent = ras.max(axis=0) - ras.min(axis=0) + [d_col, d_row, 0.0]
    extent[2] += float(np.ptp(positions[:, 2])) / (len(slices) - 1)  # one slice thickness
    shape = np.asarray(item["image"].shape[1:])
    assert np.all(np.abs(shape * 3.0 - extent) <= 3.0), (shape, extent)

    hu = np.stack(
        [s.pixel_array * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices]
    )
    windowed = np.clip((hu + 1000.0) / 2000.0, 0.0, 1.0)
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert abs(item["image"].astype(np.float64).mean() - windowed.mean()) < 0.01


def test_sources_and_a_corrupt_file(data_root: Path, tmp_path: Path) -> None:
    """sources() lists NIfTI files and DICOM folders; a corrupt file fails naming itself."""
    folder = _dicom_folder(data_root, tmp_path)
    (tmp_path / "ct.nii.gz").symlink_to(data_root / CT)
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"\x00garbage, not a volume" * 10)
    (tmp_path / "notes.txt").write_text("not a volume")
    preparer = VolumePreparer(spacing=3.0)
    found = preparer.sources(tmp_path)
    assert sorted(found) == sorted([(tmp_path / "ct.nii.gz",), (bad,), (folder,)])
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        list(preparer.items((bad,)))


def test_crops_pad_small_volumes_and_follow_the_seed() -> None:
    """A volume smaller than the crop is zero-padded around its centre; samples_per_volume
    crops per item; the same seed gives the same crops."""
    rng = np.random.default_rng(0)
    small = rng.uniform(0.1, 1.0, size=(1, 10, 12, 8)).astype(np.float16)
    crops = VolumeCrops(views=RandomCrop(crop_size=16), samples_per_volume=3)
    samples = crops({"image": small}, torch.Generator().manual_seed(0))
    assert len(samples) == 3
    expected = torch.zeros(1, 16, 16, 16)
    expected[:, 3:13, 2:14, 4:12] = torch.from_numpy(small.astype(np.float32))
    for sample in samples:
        torch.testing.assert_close(sample["input"], expected, rtol=0, atol=0)

    big = {"image": rng.uniform(size=(1, 40, 40, 40)).astype(np.float32)}
    crops = VolumeCrops(views=RandomCrop(crop_size=8), samples_per_volume=4)
    first = crops(big, torch.Generator().manual_seed(7))
    again = crops(big, torch.Generator().manual_seed(7))
    other = crops(big, torch.Generator().manual_seed(8))
    assert len(first) == 4
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["origin"], b["origin"])
    assert any(not torch.equal(a["origin"], b["origin"]) for a, b in zip(first, other, strict=True))
    volume = torch.from_numpy(big["image"])
    for sample in first:  # each crop is the volume at its origin
        d, h, w = sample["origin"].tolist()
        torch.testing.assert_close(sample["input"], volume[:, d : d + 8, h : h + 8, w : w + 8])
    with pytest.raises(ValueError, match="samples_per_volume"):
        VolumeCrops(views=RandomCrop(crop_size=8), samples_per_volume=0)


def test_manifest_stats_are_over_every_prepared_voxel(data_root: Path, tmp_path: Path) -> None:
    """prepare_shards over two CTs: the manifest's mean/std are those of the concatenated
    prepared images, and the chunks read back as the prepared items."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "full.nii.gz").symlink_to(data_root / CT)
    (src / "small.nii.gz").symlink_to(data_root / CT_SMALL)
    preparer = VolumePreparer(spacing=3.0)
    summary = prepare_shards(preparer, src, tmp_path / "out", num_workers=1)
    assert sorted(summary.prepared) == ["full.nii.gz", "small.nii.gz"] and not summary.skipped

    items = {n: _one(preparer, src / n) for n in ("full.nii.gz", "small.nii.gz")}
    values = np.concatenate([i["image"].astype(np.float64).ravel() for i in items.values()])
    manifest = read_manifest(tmp_path / "out")
    assert manifest["domain"] == "medical3d" and manifest["totals"]["items"] == 2
    assert manifest["stats"]["count"] == [values.size]
    np.testing.assert_allclose(manifest["stats"]["mean"], [values.mean()], rtol=1e-9)
    np.testing.assert_allclose(manifest["stats"]["std"], [values.std()], rtol=1e-6)
    mean, std = channel_stats(manifest)  # type: ignore[misc]
    np.testing.assert_allclose(mean, [values.mean()], rtol=1e-9)
    np.testing.assert_allclose(std, [values.std()], rtol=1e-6)
    for name, item in items.items():
        assert manifest["sources"][name]["shapes"]["image"] == [list(item["image"].shape)]

    def keep(item: dict[str, Any], generator: torch.Generator) -> dict[str, Any]:
        return {"image": torch.as_tensor(item["image"]), "source": item["source"]}

    streamed = StreamingSamples(shards=tmp_path / "out", sample_maker=keep, shuffle=False)
    assert len(streamed) == 2
    for k in range(2):
        (sample,) = streamed[k]
        assert torch.equal(sample["image"], torch.from_numpy(items[sample["source"]]["image"]))


class _Recorder(VolumeViews):
    """A view maker that records the foreground coordinates it is given."""

    def __init__(self, crop: int) -> None:
        self.crop_size = (crop, crop, crop)
        self.seen: list[torch.Tensor] = []

    @property
    def min_size(self) -> tuple[int, ...]:
        return self.crop_size

    def __call__(self, volume, *, generator=None, foreground=None):  # type: ignore[no-untyped-def]
        self.seen.append(foreground)
        return {"input": volume[:, : self.crop_size[0], : self.crop_size[1], : self.crop_size[2]]}


def test_stored_foreground_is_used_and_shifted_with_the_padding(data_root: Path) -> None:
    """The prepared item carries the foreground voxels of its image; VolumeCrops passes them
    (shifted by any padding) to the view maker, and each still points at foreground."""
    path = data_root / "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
    (item,) = VolumePreparer(spacing=3.0, modality="ct", dtype="float32").items((path,))
    image = torch.from_numpy(item["image"])
    expected = foreground_coords(image, 0.05)
    assert torch.equal(torch.from_numpy(item["foreground"]).long(), expected)

    views = _Recorder(crop=64)  # the item is 30 slices deep: padded to 64
    VolumeCrops(views=views, samples_per_volume=1)(item, torch.Generator().manual_seed(0))
    (given,) = views.seen
    padded_depth = 64 - image.shape[-1]
    assert torch.equal(
        given[:, 2] - expected[:, 2], torch.full_like(given[:, 2], padded_depth // 2)
    )
    padded = torch.nn.functional.pad(image, (padded_depth // 2, padded_depth - padded_depth // 2))
    assert bool((padded[0][given[:, 0], given[:, 1], given[:, 2]] > 0.05).all())
