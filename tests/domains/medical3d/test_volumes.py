from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import pytest
import torch

from domainfm.core.masking import MaskingSpec, keep_indices
from domainfm.domains.medical3d import (
    VolumeCropDataset,
    VolumePretrainDataModule,
    load_volume,
    volume_transform,
)
from domainfm.domains.medical3d import volumes as volumes_module
from domainfm.domains.medical3d.io import VolumeSkippedWarning

CT = "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz"
CT_SMALL = "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz"
MR_LPS = "medical/totalsegmentator_examples/mr_labeled/example_mr_sm.nii.gz"


def test_ct_crops_are_windowed_and_ras(data_root: Path) -> None:
    ds = VolumeCropDataset(files=[data_root / CT], crop_size=32, samples_per_volume=4)
    volume = ds.volumes[0]
    raw = nib.load(data_root / CT)
    assert nib.aff2axcodes(raw.affine) == ("R", "A", "S")
    assert tuple(volume.shape[1:]) == raw.shape  # 3 mm already: same grid
    hu = np.asarray(raw.dataobj, dtype=np.float32)
    expected = np.clip((hu + 1000.0) / 2000.0, 0.0, 1.0)
    np.testing.assert_allclose(volume[0].numpy(), expected, atol=1e-5)
    item = ds[0]["input"]
    assert item.shape == (1, 32, 32, 32)
    assert float(item.min()) >= 0.0 and float(item.max()) <= 1.0


def test_lps_mri_is_reoriented_to_ras(data_root: Path) -> None:
    raw = nib.load(data_root / MR_LPS)
    assert nib.aff2axcodes(raw.affine) != ("R", "A", "S")
    ds = VolumeCropDataset(files=[data_root / MR_LPS], crop_size=16, modality="mri")
    ras = nib.as_closest_canonical(raw)
    assert tuple(ds.volumes[0].shape[1:]) == ras.shape
    data = np.asarray(ras.dataobj, dtype=np.float32)
    lo, hi = np.percentile(data, [0.5, 99.5])
    expected = np.clip((data - lo) / (hi - lo), 0, 1)
    np.testing.assert_allclose(ds.volumes[0][0].numpy(), expected, atol=1e-4)


def test_short_volume_is_padded_to_crop(data_root: Path) -> None:
    ds = VolumeCropDataset(files=[data_root / CT_SMALL], crop_size=64)
    assert ds.volumes[0].shape[-1] == 64  # 30 slices padded
    assert ds[0]["input"].shape == (1, 64, 64, 64)


def test_datamodule_batches_with_masks(data_root: Path) -> None:
    dm = VolumePretrainDataModule(
        files=[CT],
        crop_size=32,
        masking=MaskingSpec(patch_size=16, ratio=0.75),
        batch_size=2,
        samples_per_volume=2,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input"].shape == (2, 1, 32, 32, 32)
    assert batch["mask"].shape == (2, 8) and int(batch["mask"][0].sum()) == 6
    torch.testing.assert_close(batch["keep_idx"], keep_indices(batch["mask"]))


def test_bad_files_name_the_file(tmp_path: Path, data_root: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.nii\.gz"):  # even when not strict
        VolumeCropDataset(files=[data_root / CT_SMALL, tmp_path / "nope.nii.gz"])
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti file at all")
    with pytest.raises(ValueError, match=r"could not load volume .*corrupt.nii.gz"):
        VolumeCropDataset(files=[data_root / CT_SMALL, corrupt], strict=True)


def test_bad_files_are_skipped_and_counted(tmp_path: Path, data_root: Path) -> None:
    corrupt = tmp_path / "corrupt.nii.gz"
    corrupt.write_bytes(b"not a nifti file at all")
    blank = tmp_path / "blank.nii"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.int16), np.eye(4)), str(blank))
    with pytest.warns(VolumeSkippedWarning) as record:
        ds = VolumeCropDataset(
            files=[corrupt, data_root / CT_SMALL, blank], crop_size=16, samples_per_volume=3
        )
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert messages[0].startswith(f"skipping volume {corrupt}: could not read {corrupt}")
    assert messages[1].startswith(f"skipping volume {blank}: {blank} is constant")
    assert ds.files == [data_root / CT_SMALL] and len(ds.volumes) == 1 and len(ds) == 3
    assert [path for path, _ in ds.skipped] == [str(corrupt), str(blank)]
    assert "could not read" in ds.skipped[0][1] and "as NIfTI" in ds.skipped[0][1]
    assert "is constant" in ds.skipped[1][1]
    assert ds[2]["input"].shape == (1, 16, 16, 16)
    with pytest.warns(VolumeSkippedWarning), pytest.raises(ValueError) as err:
        VolumeCropDataset(files=[corrupt, blank])
    assert "could not load any of the 2 volumes" in str(err.value)
    assert str(corrupt) in str(err.value) and str(blank) in str(err.value)


@pytest.mark.parametrize(("path", "modality"), [(CT, "ct"), (MR_LPS, "mri")])
def test_dataset_preprocessing_equals_monai_loader(
    data_root: Path, path: str, modality: Literal["ct", "mri"]
) -> None:
    """load_volume + volume_transform(load=False) = the MONAI LoadImage path, exactly."""
    ds = VolumeCropDataset(files=[data_root / path], crop_size=32, modality=modality)
    transform = volume_transform(spacing=(3.0,) * 3, modality=modality, min_size=(32, 32, 32))
    expected = transform(str(data_root / path))
    assert torch.equal(ds.volumes[0], expected.as_tensor())


def test_preprocessed_volumes_are_cached(
    tmp_path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    kwargs: dict[str, Any] = {"files": [data_root / CT_SMALL], "crop_size": 16, "spacing": 3.0}
    first = VolumeCropDataset(**kwargs, cache_dir=cache)
    assert len(list(cache.glob("example_ct_sm.nii.gz.*.npy"))) == 1

    calls: list[Path] = []

    def counting_load(path: Path, **kw: Any) -> Any:
        calls.append(path)
        return load_volume(path, **kw)

    monkeypatch.setattr(volumes_module, "load_volume", counting_load)
    second = VolumeCropDataset(**kwargs, cache_dir=cache)
    assert calls == []  # read from the cache
    assert torch.equal(second.volumes[0], first.volumes[0])
    torch.testing.assert_close(second.foreground[0], first.foreground[0])

    finer = VolumeCropDataset(**{**kwargs, "spacing": 4.0}, cache_dir=cache)
    assert calls == [data_root / CT_SMALL]  # another spacing misses the cache
    assert finer.volumes[0].shape != first.volumes[0].shape
    VolumeCropDataset(**kwargs, hu_window=(-500.0, 500.0), cache_dir=cache)
    assert len(calls) == 2 and len(list(cache.glob("*.npy"))) == 3
    copy = tmp_path / "ct.nii.gz"
    shutil.copy(data_root / CT_SMALL, copy)
    VolumeCropDataset(**{**kwargs, "files": [copy]}, cache_dir=cache)
    os.utime(copy, ns=(copy.stat().st_atime_ns, copy.stat().st_mtime_ns + 10**9))  # touched
    VolumeCropDataset(**{**kwargs, "files": [copy]}, cache_dir=cache)
    assert calls[2:] == [copy, copy]


def test_two_views_overlap_and_follow_the_seed(data_root: Path) -> None:
    ds = VolumeCropDataset(files=[data_root / CT], crop_size=32, views=2, max_shift=0.25)
    a, b = ds[(0, 123)], ds[(0, 123)]
    for key in ("input", "view1", "view2", "origin2", "seed"):
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(ds[(0, 124)]["view2"], a["view2"])
    vol = ds.volumes[0]
    o1, o2 = a["origin1"].tolist(), a["origin2"].tolist()
    crop1 = vol[:, o1[0] : o1[0] + 32, o1[1] : o1[1] + 32, o1[2] : o1[2] + 32]
    crop2 = vol[:, o2[0] : o2[0] + 32, o2[1] : o2[1] + 32, o2[2] : o2[2] + 32]
    assert torch.equal(a["input"], crop1)
    assert all(abs(p - q) <= 8 for p, q in zip(o1, o2, strict=True))  # 25 % of 32
    # each view is its crop under an affine intensity map with scale and shift within 10 %
    for view, crop in ((a["view1"], crop1), (a["view2"], crop2)):
        design = torch.stack([crop.flatten(), torch.ones(crop.numel())], dim=1).double()
        coef = torch.linalg.lstsq(design, view.flatten().double()[:, None]).solution[:, 0]
        scale, shift = coef.tolist()
        assert 0.9 <= scale <= 1.1 and -0.1 <= shift <= 0.1, (scale, shift)
        torch.testing.assert_close(view, crop * scale + shift, atol=1e-5, rtol=0)
    with pytest.raises(
        ValueError, match="views must be 1, 2 or a VolumeViews view maker, got views=3"
    ):
        VolumeCropDataset(files=[data_root / CT], views=3)  # type: ignore[arg-type]
