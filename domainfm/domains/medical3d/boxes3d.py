"""3D object boxes on volumes: from label maps or MONAI detection JSON, between voxel and world
coordinates.

**Voxel boxes** are ``(N, 6)`` ``(x0, y0, z0, x1, y1, z1)`` over the array's three spatial
axes (MONAI's ``StandardMode`` / ``"xyzxyz"``) in voxel *edges*: voxel ``i`` spans
``[i, i + 1)``, so a box around voxels 3..5 of an axis is ``3, 6`` and its volume is its voxel
count — the convention of MONAI's ``convert_mask_to_box`` and of the detector's targets.
**World boxes** are ``(N, 6)`` ``(x0, y0, z0, x1, y1, z1)`` in **RAS millimetres**.

A volume's ``affine`` maps voxel *centres* ``(i, j, k, 1)`` to world (nibabel's and MONAI's
convention), so voxel edge ``e`` is index ``e - 1/2``: a voxel box goes to the world as the
envelope of its 8 corners at indices ``edge - 1/2`` through the affine, and back through the
inverse (:func:`voxel_to_world`, :func:`world_to_voxel`); a rotated or oblique grid gives the
axis-aligned envelope. (MONAI's ``AffineBoxToWorldCoordinate`` applies the affine to the
edges themselves, half a voxel off this.) The conversion always uses the volume's own affine:
nothing is guessed from the file's orientation codes.

* :func:`component_boxes` — the voxel box, class and size of every connected region
  (:func:`~domainfm.core.connected_components.label_components`) of chosen label values, e.g.
  BRATS whole tumour = values 1-4.
* :func:`label_map_boxes` — the same read from a label file, as world boxes.
* :func:`read_box_json` — world boxes per image from a MONAI detection JSON
  (``{"training": [{"image": ..., "box": [[...]], "label": [...]}]}``, box mode ``cccwhd``
  by default, RAS or LPS world).

Example::

    >>> label = torch.zeros(6, 6, 6, dtype=torch.long); label[1:3, 2:5, 0:2] = 4
    >>> boxes, classes, voxels = component_boxes(label, objects={4: 0})
    >>> boxes.tolist(), classes.tolist(), voxels.tolist()
    ([[1.0, 2.0, 0.0, 3.0, 5.0, 2.0]], [0], [12])
    >>> voxel_to_world(boxes, np.diag([2.0, 2.0, 2.0, 1.0]))
    array([[ 1.,  3., -1.,  5.,  9.,  3.]])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from domainfm.core.connected_components import Connectivity, label_components
from domainfm.domains.medical3d.io import load_volume
from domainfm.domains.medical3d.volume_types import Geometry

BoxMode = Literal["cccwhd", "xyzxyz"]
"""How a MONAI detection JSON writes one box: centre and size, or the two corners."""
WorldSpace = Literal["RAS", "LPS"]
"""The world frame of a JSON's boxes: RAS (nibabel, MONAI) or LPS (DICOM, ITK; LUNA16)."""


def _as_array(boxes: Tensor | np.ndarray) -> np.ndarray:
    data = boxes.detach().cpu().numpy() if isinstance(boxes, Tensor) else boxes
    return np.asarray(data, dtype=np.float64).reshape(-1, 6)


def _envelope(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The axis-aligned envelope of each box's 8 corners through the 4 × 4 ``matrix``."""
    picks = np.array([[x, y, z] for x in (0, 3) for y in (1, 4) for z in (2, 5)])
    corners = boxes[:, picks]  # (N, 8, 3)
    moved = corners @ matrix[:3, :3].T + matrix[:3, 3]  # (N, 8, 3)
    return np.concatenate([moved.min(axis=1), moved.max(axis=1)], axis=1)


def voxel_to_world(boxes: Tensor | np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Voxel-edge boxes ``(N, 6)`` → world boxes ``(N, 6)`` (float64, RAS mm) with the
    volume's ``affine`` (voxel centres → world)."""
    return _envelope(_as_array(boxes) - 0.5, np.asarray(affine, dtype=np.float64))


def world_to_voxel(boxes: Tensor | np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World boxes ``(N, 6)`` (RAS mm) → voxel-edge boxes ``(N, 6)`` (float64) on the grid
    of ``affine``."""
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return _envelope(_as_array(boxes), inverse) + 0.5


def component_boxes(
    label: Tensor | np.ndarray,
    *,
    objects: Mapping[int, int],
    min_voxels: int = 1,
    connectivity: Connectivity = "full",
) -> tuple[Tensor, Tensor, Tensor]:
    """Voxel boxes of the connected regions of each object class of a label map.

    Args:
        label: ``(D, H, W)`` (or ``(1, D, H, W)``) label values.
        objects: label value → object class (0-based, MONAI's detection labels); the values
            of one class are joined before the regions are found (``{1: 0, 2: 0, 3: 0, 4: 0}``:
            BRATS whole tumour). Values not listed are background.
        min_voxels: regions with fewer voxels are dropped.
        connectivity: ``"full"`` (26 neighbours) or ``"face"`` (6).

    Returns:
        ``boxes`` ``(N, 6)`` float32 voxel-edge ``xyzxyz``, ``classes`` ``(N,)`` int64 and
        ``voxels`` ``(N,)`` int64 region sizes, by class then by each region's first voxel.
    """
    values = torch.as_tensor(np.asarray(label) if not isinstance(label, Tensor) else label)
    if values.ndim == 4 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 3:
        raise ValueError(f"label must be (D, H, W) or (1, D, H, W), got {tuple(values.shape)}")
    values = torch.round(values.float()).long()
    all_boxes, all_classes, all_sizes = [], [], []
    for cls in sorted(set(int(c) for c in objects.values())):
        raw = [int(v) for v, c in objects.items() if int(c) == cls]
        regions, count = label_components(
            torch.isin(values, torch.tensor(raw)), connectivity=connectivity
        )
        if count == 0:
            continue
        where = regions.nonzero()  # (M, 3)
        ids = regions[where[:, 0], where[:, 1], where[:, 2]] - 1
        sizes = torch.bincount(ids, minlength=count)
        low = torch.stack(
            [
                torch.full((count,), 1 << 62).scatter_reduce(0, ids, where[:, a], "amin")
                for a in range(3)
            ],
            dim=1,
        )
        high = torch.stack(
            [
                torch.full((count,), -1).scatter_reduce(0, ids, where[:, a], "amax")
                for a in range(3)
            ],
            dim=1,
        )
        keep = sizes >= min_voxels
        all_boxes.append(torch.cat([low, high + 1], dim=1)[keep].float())
        all_classes.append(torch.full((int(keep.sum()),), cls, dtype=torch.long))
        all_sizes.append(sizes[keep])
    if not all_boxes:
        return torch.zeros(0, 6), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.cat(all_boxes), torch.cat(all_classes), torch.cat(all_sizes)


def label_map_boxes(
    path: str | Path,
    *,
    objects: Mapping[int, int],
    min_volume_mm3: float = 0.0,
    connectivity: Connectivity = "full",
    geometry: Geometry = "strict",
) -> tuple[np.ndarray, np.ndarray]:
    """World boxes ``(N, 6)`` (RAS mm) and classes ``(N,)`` of the connected regions of a
    label file (NIfTI or DICOM folder, read by
    :func:`~domainfm.domains.medical3d.io.load_volume`), found on the file's own grid;
    regions smaller than ``min_volume_mm3`` are dropped (see :func:`component_boxes`)."""
    volume = load_volume(path, allow_constant=True, geometry=geometry)
    voxel_mm3 = float(abs(np.linalg.det(volume.affine[:3, :3])))
    min_voxels = max(1, int(np.ceil(float(min_volume_mm3) / voxel_mm3 - 1e-9)))
    boxes, classes, _ = component_boxes(
        volume.array[0], objects=objects, min_voxels=min_voxels, connectivity=connectivity
    )
    return voxel_to_world(boxes, volume.affine), classes.numpy()


def _world_ras(box: np.ndarray, mode: BoxMode, space: WorldSpace) -> np.ndarray:
    """JSON boxes ``(N, 6)`` in ``mode`` and ``space`` → RAS ``xyzxyz``."""
    if mode == "cccwhd":
        centre, size = box[:, :3], np.abs(box[:, 3:])
        box = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    elif mode != "xyzxyz":
        raise ValueError(f"box_mode={mode!r}: must be 'cccwhd' or 'xyzxyz'")
    if space == "LPS":  # x and y flip sign (the min/max below swaps their corners)
        box = box * np.array([-1.0, -1.0, 1.0, -1.0, -1.0, 1.0])
    elif space != "RAS":
        raise ValueError(f"space={space!r}: must be 'RAS' or 'LPS'")
    low, high = box[:, :3], box[:, 3:]
    return np.concatenate([np.minimum(low, high), np.maximum(low, high)], axis=1)


def _entry_boxes(entry: Any, source: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(entry, dict) or "image" not in entry:
        raise ValueError(f"{source}: {where} is not an object with an 'image'")
    boxes = np.asarray(entry.get("box", []), dtype=np.float64)
    labels = np.asarray(entry.get("label", []), dtype=np.int64).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 6)
    if boxes.ndim != 2 or boxes.shape[1] != 6 or len(labels) != len(boxes):
        raise ValueError(
            f"{source}: {where} ({entry['image']}) needs 'box' as N lists of 6 numbers and "
            f"'label' as N class ids; got box shape {boxes.shape} and {len(labels)} labels"
        )
    if not np.isfinite(boxes).all() or (labels < 0).any():
        raise ValueError(
            f"{source}: {where} ({entry['image']}) has a non-finite box or a label < 0"
        )
    return boxes, labels


def read_box_json(
    path: str | Path,
    *,
    key: str = "training",
    box_mode: BoxMode = "cccwhd",
    space: WorldSpace = "RAS",
    missing_ok: bool = False,
) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """World boxes per image from a MONAI detection JSON.

    The file holds ``{key: [{"image": path, "box": [[6 numbers], ...], "label": [ids]}]}``
    (MONAI's LUNA16 data lists, and what ``domainfm detect`` writes, with ``key``
    ``"detection"``). Image paths are resolved against the JSON's folder.

    Args:
        path: the JSON file.
        key: the list to read (``"training"``, ``"validation"``, ...).
        box_mode: ``"cccwhd"`` (centre x, y, z and sizes, MONAI's world default) or
            ``"xyzxyz"`` (two corners).
        space: ``"RAS"`` or ``"LPS"`` (ITK/DICOM world, e.g. LUNA16's boxes).
        missing_ok: a file without ``key`` gives no images instead of an error.

    Returns:
        ``{image path: (boxes (N, 6) RAS xyzxyz mm, labels (N,))}``.

    Raises:
        ValueError: naming the file and the entry for anything malformed.
    """
    source = Path(path)
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err})") from err
    entries = data.get(key) if isinstance(data, dict) else None
    if missing_ok and isinstance(data, dict) and key not in data:
        return {}
    if not isinstance(entries, list):
        found = ", ".join(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{source}: no list under {key!r} (found: {found})")
    out: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for number, entry in enumerate(entries):
        boxes, labels = _entry_boxes(entry, source, f"{key}[{number}]")
        image = Path(str(entry["image"]))
        image = image if image.is_absolute() else source.parent / image
        out[image] = (_world_ras(boxes, box_mode, space), labels)
    return out
