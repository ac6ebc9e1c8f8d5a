"""Rebuild the detector a fine-tuning checkpoint holds, whatever its kind: what ``domainfm
detect`` loads before handing the model to the domain of its input contract.

A checkpoint's ``domainfm`` recipe names its task: ``detect`` (2D Faster R-CNN,
:class:`~domainfm.tasks.detection_module.DetectionModule`) or ``detect3d`` (3D RetinaNet,
:class:`~domainfm.tasks.detection3d_module.Detection3DModule`). :func:`load_any_detector`
rebuilds that module (strictly, no code unpickled) and applies the command's score threshold
to the detector's own cut.

Example::

    >>> module, meta = load_any_detector("runs/.../last.ckpt", score_threshold=0.1)
    >>> type(module).__name__
    'Detection3DModule'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from domainfm.core.checkpoint_io import safe_torch_load
from domainfm.tasks.detection3d_module import RECIPE_KEY, load_detector3d
from domainfm.tasks.detection_module import load_detector


def detector_task(path: str | Path) -> str:
    """``"detect"`` or ``"detect3d"``: the detection task a checkpoint's recipe records.

    Raises:
        ValueError: naming the file when it records neither.
    """
    if Path(path).is_dir():
        raise ValueError(
            f"{path} is a folder: an export holds only the backbone, detection needs the "
            "fine-tuned .ckpt of a DetectionModule or Detection3DModule run"
        )
    ckpt = safe_torch_load(path)
    meta = ckpt.get("domainfm") if isinstance(ckpt, dict) else None
    recipe = meta.get("recipe") if isinstance(meta, dict) else None
    found = [t for t in (RECIPE_KEY, "detect") if isinstance(recipe, dict) and t in recipe]
    if not found:
        raise ValueError(
            f"{path} is not a checkpoint written by DetectionModule or Detection3DModule (no "
            "domainfm detect metadata); pass the .ckpt of a `domainfm fit` detection run"
        )
    return found[0]


def load_any_detector(
    path: str | Path, *, score_threshold: float | None = None
) -> tuple[Any, dict[str, Any]]:
    """The detector of a fine-tuning checkpoint (2D or 3D, see the module docstring) in eval
    mode and its ``domainfm`` metadata; ``score_threshold`` (when given) is the detector's
    own lowest kept score."""
    if detector_task(path) == RECIPE_KEY:
        module, meta = load_detector3d(path)
        if score_threshold is not None:
            module.configure_inference(score_threshold=float(score_threshold))
        return module, meta
    module2d, meta = load_detector(path)
    if score_threshold is not None:
        module2d.model.roi_heads.score_thresh = score_threshold  # the detector's own cut too
    return module2d, meta
