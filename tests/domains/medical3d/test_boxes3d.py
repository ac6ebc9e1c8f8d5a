"""Boxes of 3D objects: voxel edges ↔ world RAS mm through the affine (half-voxel convention,
oblique grids), connected-region boxes against a per-voxel loop, MONAI detection JSON (cccwhd,
LPS) with errors naming the file, and the shipped BRATS whole tumour: every labelled voxel's
centre inside its region's world box."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from domainfm.domains.medical3d.boxes3d import (
    component_boxes,
    label_map_boxes,
    read_box_json,
    voxel_to_world,
    world_to_voxel,
)

BRATS_CASE = "medical/brats2015_deepmedic/train/brats_2013_pat0006_1"


def _oblique_affine(seed: int) -> np.ndarray:
    """A rotated, anisotropic, flipped, shifted voxel → world affine."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    affine = np.eye(4)
    affine[:3, :3] = q @ np.diag([0.8, 1.5, 3.0]) @ np.diag([-1.0, 1.0, 1.0])
    affine[:3, 3] = rng.normal(scale=50.0, size=3)
    return affine


def test_voxel_edges_are_half_a_voxel_from_centres() -> None:
    """A box around voxels 3..5 (edges 3, 6) spans the world from centre 3 - 1/2 to 5 + 1/2."""
    affine = np.diag([2.0, -3.0, 1.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    world = voxel_to_world(np.array([[3.0, 0.0, 1.0, 6.0, 2.0, 4.0]]), affine)
    expected = [10 + 2 * 2.5, 20 - 3 * 1.5, 30 + 0.5, 10 + 2 * 5.5, 20 + 3 * 0.5, 30 + 3.5]
    np.testing.assert_allclose(world[0], expected)
    np.testing.assert_allclose(world_to_voxel(world, affine), [[3, 0, 1, 6, 2, 4]], atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_world_box_is_the_envelope_of_the_corners(seed: int) -> None:
    affine = _oblique_affine(seed)
    box = np.array([[2.0, 3.0, 1.0, 7.0, 5.0, 9.0]])
    world = voxel_to_world(box, affine)[0]
    corners = np.array(list(itertools.product([1.5, 6.5], [2.5, 4.5], [0.5, 8.5])))
    moved = corners @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(world[:3], moved.min(0))
    np.testing.assert_allclose(world[3:], moved.max(0))
    back = world_to_voxel(world, affine)[0]  # the envelope again: contains the original
    assert (back[:3] <= box[0, :3] + 1e-9).all() and (back[3:] >= box[0, 3:] - 1e-9).all()


def test_component_boxes_match_a_voxel_loop() -> None:
    gen = torch.Generator().manual_seed(3)
    label = (torch.rand(7, 8, 9, generator=gen) < 0.12).long() * torch.randint(1, 4, (7, 8, 9))
    boxes, classes, voxels = component_boxes(label, objects={1: 0, 2: 0, 3: 1}, min_voxels=2)
    assert len(boxes) and set(classes.tolist()) <= {0, 1}
    for box, cls, count in zip(boxes.tolist(), classes.tolist(), voxels.tolist(), strict=True):
        values = [1, 2] if cls == 0 else [3]
        lo, hi = [int(v) for v in box[:3]], [int(v) for v in box[3:]]
        inside = [
            (i, j, k)
            for i in range(lo[0], hi[0])
            for j in range(lo[1], hi[1])
            for k in range(lo[2], hi[2])
            if int(label[i, j, k]) in values
        ]
        assert count >= 2 and len(inside) >= count  # the region's voxels lie in its box
        for axis in range(3):  # and touch every face of it
            assert min(p[axis] for p in inside) == lo[axis]
            assert max(p[axis] for p in inside) == hi[axis] - 1


def test_component_boxes_separate_regions_and_drop_small_ones() -> None:
    label = torch.zeros(10, 10, 10, dtype=torch.long)
    label[1:4, 1:3, 1:2] = 2  # 6 voxels
    label[6:9, 6:9, 6:9] = 1  # 27 voxels, touching nothing
    label[6, 0, 0] = 1  # 1 voxel
    boxes, classes, voxels = component_boxes(label, objects={1: 0, 2: 0}, min_voxels=2)
    assert boxes.tolist() == [[1, 1, 1, 4, 3, 2], [6, 6, 6, 9, 9, 9]]
    assert classes.tolist() == [0, 0] and voxels.tolist() == [6, 27]
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        component_boxes(torch.zeros(4, 4), objects={1: 0})


def test_read_box_json_modes_spaces_and_relative_images(tmp_path: Path) -> None:
    path = tmp_path / "boxes.json"
    path.write_text(
        json.dumps(
            {
                "training": [
                    {"image": "a.nii.gz", "box": [[10, 20, 30, 4, 6, 8]], "label": [0]},
                    {"image": "/abs/b.nii.gz", "box": [], "label": []},
                ]
            }
        )
    )
    found = read_box_json(path)
    assert list(found) == [tmp_path / "a.nii.gz", Path("/abs/b.nii.gz")]
    np.testing.assert_allclose(found[tmp_path / "a.nii.gz"][0], [[8, 17, 26, 12, 23, 34]])
    assert found[Path("/abs/b.nii.gz")][0].shape == (0, 6)
    lps = read_box_json(path, space="LPS")[tmp_path / "a.nii.gz"][0]
    np.testing.assert_allclose(lps, [[-12, -23, 26, -8, -17, 34]])  # x, y mirrored
    corners = read_box_json(path, box_mode="xyzxyz")[tmp_path / "a.nii.gz"][0]
    np.testing.assert_allclose(corners, [[4, 6, 8, 10, 20, 30]])  # sorted per axis
    assert read_box_json(path, key="validation", missing_ok=True) == {}


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        ("{not json", "not valid JSON"),
        ('{"validation": []}', "no list under 'training'"),
        ('{"training": [{"box": [[1,2,3,4,5,6]]}]}', r"training\[0\] is not an object"),
        ('{"training": [{"image": "x", "box": [[1,2,3]], "label": [0]}]}', "6 numbers"),
        ('{"training": [{"image": "x", "box": [[1,2,3,4,5,6]], "label": []}]}', "6 numbers"),
        ('{"training": [{"image": "x", "box": [[1,2,3,4,5,6]], "label": [-1]}]}', "label < 0"),
    ],
)
def test_read_box_json_errors_name_the_file(tmp_path: Path, content: str, pattern: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=pattern) as info:
        read_box_json(path)
    assert str(path) in str(info.value)


def test_brats_whole_tumour_voxels_lie_in_their_world_box(data_root: Path) -> None:
    """The shipped case's label map: regions of >= 1 cm³ of labels 1-4 (its tumour), each
    labelled voxel centre (through the file's own affine) inside its region's world box, and
    the box no larger than the voxels' extent plus one voxel."""
    path = data_root / BRATS_CASE / "OTMultiClass.nii.gz"
    world, classes = label_map_boxes(path, objects={1: 0, 2: 0, 3: 0, 4: 0}, min_volume_mm3=1000)
    assert world.shape == (1, 6) and classes.tolist() == [0]
    image = nib.load(path)
    index = np.argwhere(np.asarray(image.dataobj) > 0)
    centres = index @ image.affine[:3, :3].T + image.affine[:3, 3]
    inside = ((centres >= world[0, :3]) & (centres <= world[0, 3:])).all(axis=1)
    assert inside.mean() > 0.999  # all but a stray voxel or two (regions under 1 cm³)
    np.testing.assert_allclose(world[0, 3:] - world[0, :3], np.ptp(centres, axis=0) + 1.0)
