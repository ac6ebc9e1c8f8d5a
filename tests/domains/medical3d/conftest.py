"""Fixtures of the medical3d tests: the shipped BRATS cases made small for benchmark tests."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BRATS = "medical/brats2015_deepmedic"
BRATS_SUBJECTS = (
    "train/brats_2013_pat0005_1",
    "train/brats_2013_pat0006_1",
    "validation/brats_2013_pat0003_1",
    "validation/brats_2013_pat0004_1",
)
BRATS_FILES = {
    "flair": "Flair_subtrMeanDivStd",
    "t1c": "T1c_subtrMeanDivStd",
    "seg": "OTMultiClass",
}
MINI_STEP = 4
"""Every 4th voxel of the 1 mm BRATS grid: 60 x 60 x 39 voxels of 4 mm."""


@pytest.fixture(scope="session")
def brats_mini(
    data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict[str, Path]]:
    """The 4 shipped BRATS subjects (FLAIR, T1c, OTMultiClass labels 0-4) subsampled to 4 mm,
    as ``{case: {"flair", "t1c", "seg": path}}`` (real voxels, real labels; reading a case
    takes milliseconds)."""
    out = tmp_path_factory.mktemp("brats_mini")
    cases: dict[str, dict[str, Path]] = {}
    for subject in BRATS_SUBJECTS:
        case = Path(subject).name
        cases[case] = {}
        for kind, stem in BRATS_FILES.items():
            image = nib.load(data_root / BRATS / subject / f"{stem}.nii.gz")
            array = np.asarray(image.dataobj)[::MINI_STEP, ::MINI_STEP, ::MINI_STEP]
            affine = image.affine @ np.diag([MINI_STEP, MINI_STEP, MINI_STEP, 1.0])
            dtype = np.uint8 if kind == "seg" else np.float32
            path = out / f"{case}_{kind}.nii.gz"
            nib.save(nib.Nifti1Image(array.astype(dtype), affine), path)
            cases[case][kind] = path
    return cases
