"""Whole-volume 3D object detection written as world boxes: MONAI JSON, CSV, a NIfTI box mask.

:func:`detect_volume` reads a NIfTI file or DICOM series folder once
(:func:`~domainfm.domains.medical3d.io.load_volume`: errors name the file), preprocesses it
exactly as in training (RAS, the model's spacing, intensity), and runs a detector over it —
a :class:`~domainfm.tasks.detection3d_module.Detection3DModule` searches a volume larger than
its window with sliding windows and merges the windows' boxes (blended head maps, then
class-wise NMS). The boxes found on the preprocessed grid go to **world RAS millimetres**
with that grid's own affine (:func:`~domainfm.domains.medical3d.boxes3d.voxel_to_world`)
and are written, by decreasing score:

* **JSON** in MONAI's detection format — ``{"detection": [{"image", "box", "label",
  "score", "class_name"}]}`` with ``box`` in ``box_mode`` ``cccwhd`` (centre x, y, z and
  sizes, mm) and ``space`` ``RAS`` recorded at the top level; it reads back with
  :func:`~domainfm.domains.medical3d.boxes3d.read_box_json` (``key="detection"``);
* **CSV**: one row per box: ``image, label, class_name, score``, the corners
  ``x_min … z_max`` and the centre and size (RAS mm);
* optionally a **box mask**: a NIfTI on the *input's* voxel grid with the input's affine
  (sform and qform), each voxel whose centre lies inside a box set to the box's class + 1
  (0: no box; where boxes overlap, the higher score wins).

Every file is written atomically; the caller refuses outputs that are the input
(:func:`~domainfm.domains.plugin.check_output`).

**Size guard**: before any computation the resampled volume and the sliding-window head
maps (``anchors × (classes + 6)`` float32 values per location of every pyramid level, and
the blending weights) are estimated and refused above the per-allocation limit, naming the
file.

Example::

    >>> module, meta = load_detector3d("runs/.../last.ckpt")
    >>> contract = VolumeContract(modality="mri", spacing_mm=4.0)
    >>> detect_volume(module, "flair.nii.gz", "flair_boxes.json", contract=contract,
    ...               box_mask="flair_boxes.nii.gz")
    [PosixPath('flair_boxes.json'), PosixPath('flair_boxes.csv'), PosixPath('flair_boxes.nii.gz')]
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from domainfm.core.checkpoint_io import atomic_write
from domainfm.core.grid import to_ntuple
from domainfm.core.size_guard import check_allocation
from domainfm.domains.medical3d.boxed_volumes import preprocess_channels
from domainfm.domains.medical3d.boxes3d import voxel_to_world, world_to_voxel
from domainfm.domains.medical3d.contract import VolumeContract
from domainfm.domains.medical3d.io import load_volume
from domainfm.domains.medical3d.preprocess import check_resample
from domainfm.domains.medical3d.volume_types import Geometry

JSON_KEY = "detection"
"""The list of the written JSON (MONAI data lists use ``training`` / ``validation``)."""
CSV_COLUMNS = (
    "image", "label", "class_name", "score",
    "x_min", "y_min", "z_min", "x_max", "y_max", "z_max",
    "center_x", "center_y", "center_z", "size_x", "size_y", "size_z",
)  # fmt: skip
"""The CSV header (coordinates in RAS mm)."""


def _check_head_maps(model: Any, source: Path, shape: Sequence[float]) -> None:
    """Refuse whole-volume head maps (every level's anchors × (classes + 6) float32 values
    per location) plus the blending weights above the per-allocation limit."""
    detector = getattr(model, "detector", None)
    strides = getattr(
        getattr(getattr(detector, "network", None), "feature_extractor", None), "strides", None
    )
    if detector is None or strides is None:
        return
    per_location = detector.num_anchors_per_loc * (detector.num_classes + 6) + 1
    voxels = sum(float(np.prod([n / s for n, s in zip(shape, st, strict=True)])) for st in strides)
    check_allocation(
        4.0 * per_location * voxels,
        what=f"the sliding-window head maps ({len(strides)} pyramid levels)",
        source=source,
    )


def _mask(
    world: np.ndarray, labels: np.ndarray, shape: Sequence[int], affine: np.ndarray
) -> np.ndarray:
    """``shape`` uint8/uint16 array: voxels whose centre (through ``affine``) lies inside a
    world box take its class + 1, painted from the lowest score up."""
    dtype = np.uint8 if labels.size == 0 or labels.max() < 255 else np.uint16
    mask = np.zeros(tuple(shape), dtype=dtype)
    for box, label in zip(world[::-1], labels[::-1], strict=True):  # lowest score first
        edges = world_to_voxel(box[None], affine)[0]  # the envelope on the input grid
        low = np.clip(np.ceil(edges[:3] - 0.5), 0, shape).astype(int)
        high = np.clip(np.ceil(edges[3:] - 0.5), 0, shape).astype(int)
        if (high <= low).any():
            continue
        axes = [np.arange(lo, hi) for lo, hi in zip(low, high, strict=True)]
        index = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)  # (a, b, c, 3)
        centres = index @ affine[:3, :3].T + affine[:3, 3]
        inside = ((centres >= box[:3]) & (centres <= box[3:])).all(axis=-1)
        region = mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]]
        region[inside] = int(label) + 1
    return mask


@dataclass(frozen=True)
class FoundBoxes:
    """The detections of one volume in world RAS mm, by decreasing score, and their writers
    (every file written atomically).

    Attributes:
        world: ``(N, 6)`` boxes, RAS ``xyzxyz`` mm.
        labels: ``(N,)`` object classes (0-based).
        scores: ``(N,)`` scores.
        image: the input's name, written with the boxes.
        class_names: names of the object classes (class 0 first); ``None``: the ids.
    """

    world: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    image: str
    class_names: Sequence[str] | None = None

    def names(self) -> list[str]:
        """Each box's class name."""
        if self.class_names is None:
            return [str(int(v)) for v in self.labels]
        if len(self.labels) and self.labels.max() >= len(self.class_names):
            top = int(self.labels.max())
            raise ValueError(f"label {top} has no name in {len(self.class_names)} names")
        return [self.class_names[int(v)] for v in self.labels]

    def centres_and_sizes(self) -> np.ndarray:
        """``(N, 6)``: centre x, y, z and size x, y, z (MONAI's ``cccwhd``)."""
        low, high = self.world[:, :3], self.world[:, 3:]
        return np.concatenate([(low + high) / 2, high - low], axis=1)

    def write_json(self, path: str | Path) -> Path:
        """MONAI's detection JSON (``cccwhd`` boxes under ``"detection"``)."""
        entry = {
            "image": self.image,
            "box": self.centres_and_sizes().round(4).tolist(),
            "label": [int(v) for v in self.labels],
            "score": [round(float(v), 6) for v in self.scores],
            "class_name": self.names(),
        }
        data = {"box_mode": "cccwhd", "space": "RAS", "units": "mm", JSON_KEY: [entry]}
        return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))

    def write_csv(self, path: str | Path) -> Path:
        """One row per box (:data:`CSV_COLUMNS`, RAS mm)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        rows = zip(
            self.world,
            self.centres_and_sizes(),
            self.labels,
            self.scores,
            self.names(),
            strict=True,
        )
        for box, extent, label, score, name in rows:
            coords = [f"{v:.4f}" for v in (*box, *extent)]
            writer.writerow([self.image, int(label), name, f"{float(score):.6f}", *coords])
        text = buffer.getvalue()
        return atomic_write(path, lambda tmp: tmp.write_text(text))

    def write_mask(self, path: str | Path, shape: Sequence[int], affine: Any) -> Path:
        """A NIfTI mask on a grid of ``shape`` with ``affine`` (sform and qform code 1, mm;
        gzip-compressed for ``.nii.gz``): voxel values class + 1 (see :func:`_mask`)."""
        import nibabel as nib

        matrix = np.asarray(affine, dtype=np.float64)
        image = nib.Nifti1Image(_mask(self.world, self.labels, shape, matrix), matrix)
        image.set_sform(matrix, code=1)
        image.set_qform(matrix, code=1)
        image.header.set_xyzt_units("mm")
        data = image.to_bytes()
        if str(path).endswith(".gz"):
            data = gzip.compress(data, compresslevel=6)
        return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def detect_volume(
    model: Callable[[Tensor], Any],
    image: str | Path,
    out_path: str | Path,
    *,
    contract: VolumeContract,
    geometry: Geometry = "strict",
    csv_path: str | Path | None = None,
    box_mask: str | Path | None = None,
    roi_size: int | Sequence[int] | None = None,
    device: str | torch.device | None = None,
    report: dict[str, Any] | None = None,
) -> list[Path]:
    """Detect objects in a NIfTI volume or DICOM series and write them as world boxes.

    Args:
        model: ``(1, C, D, H, W)`` → a list with one dict ``{"boxes": (K, 6) voxel-edge
            xyzxyz, "labels": (K,), "scores": (K,)}`` (a ``Detection3DModule`` in eval mode,
            its inference settings already chosen).
        image: input NIfTI path or DICOM series folder (one channel).
        out_path: the JSON to write (MONAI's detection format).
        contract: the model's input contract: the preprocessing it was trained with
            (spacing, modality, HU window) and its object classes' names (class 0 first).
        geometry: which transform places the voxels of a NIfTI whose qform and sform
            disagree (see :func:`~domainfm.domains.medical3d.io.load_volume`).
        csv_path: the CSV to write (default: ``out_path`` with ``.csv``).
        box_mask: a NIfTI box mask on the input's grid to write as well.
        roi_size: the model's window: a smaller volume is padded to it as the training
            volumes were (default: no padding).
        device: where the model runs (default: the model's device, else CPU).
        report: filled with ``boxes`` (count), ``grid`` (preprocessed shape) and
            ``spacing``.

    Returns:
        The files written: JSON, CSV and (when asked) the box mask.

    Raises:
        FileNotFoundError: ``image`` does not exist.
        ValueError: an invalid input or argument, naming it;
            :class:`~domainfm.core.size_guard.AllocationTooLarge` when the resampled volume
            or the head maps would exceed the per-allocation limit.
    """
    source = Path(image)
    volume = load_volume(source, geometry=geometry)  # (1, D, H, W) on the input's grid
    pixdim = contract.spacing
    grid = check_resample(source, volume.shape, volume.affine, pixdim, channels=1)
    roi = to_ntuple(roi_size, 3, name="roi_size") if roi_size is not None else None
    _check_head_maps(
        model, source, [max(n, float(r)) for n, r in zip(grid, roi or grid, strict=True)]
    )
    x, affine = preprocess_channels(  # padded to the window as in training
        [volume],
        spacing=pixdim,
        modality=contract.modality,
        hu_window=contract.window,
        min_size=roi,
    )
    if device is None:
        params = getattr(model, "parameters", None)
        first = next(iter(params()), None) if callable(params) else None
        device = first.device if first is not None else torch.device("cpu")
    with torch.no_grad():
        answer = model(x[None].to(device))
    if not isinstance(answer, list | tuple) or len(answer) != 1 or not isinstance(answer[0], dict):
        raise ValueError(
            f"the model returned {type(answer).__name__} for {source}; a volume detector returns "
            "one dict with 'boxes', 'labels' and 'scores' per volume (a Detection3DModule)"
        )
    out = answer[0]
    order = torch.argsort(out["scores"].detach().float().cpu(), descending=True)
    boxes = out["boxes"].detach().float().cpu()[order].reshape(-1, 6)
    labels = out["labels"].detach().cpu().long()[order].numpy()
    scores = out["scores"].detach().float().cpu()[order].numpy()
    found = FoundBoxes(
        voxel_to_world(boxes, affine),
        labels,
        scores,
        image=source.name,
        class_names=contract.class_names,
    )
    target = Path(out_path)
    written = [
        found.write_json(target),
        found.write_csv(Path(csv_path) if csv_path is not None else target.with_suffix(".csv")),
    ]
    if box_mask is not None:
        written.append(found.write_mask(box_mask, volume.shape, volume.affine))
    if report is not None:
        report.update(boxes=len(labels), grid=tuple(x.shape[1:]), spacing=pixdim)
    return written
