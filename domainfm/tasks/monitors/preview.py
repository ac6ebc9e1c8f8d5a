"""Reconstruction previews for masked objectives: a PNG grid ``input | masked | reconstruction``.

MAE (He et al. 2022, arXiv:2111.06377) shows reconstructions to judge pretraining by eye.
:class:`ReconstructionPreview` calls the module's ``reconstruct_preview(batch)`` every
``every_n_steps`` (under the same no-grad / eval / forked-RNG context as the other monitors,
see :mod:`domainfm.tasks.monitors.callbacks`) and writes ``previews/step_XXXXXXX.png``
atomically, plus a TensorBoard image when a TensorBoard logger is attached.

Example::

    >>> trainer = L.Trainer(callbacks=[ReconstructionPreview(every_n_steps=100, max_images=4)])
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image, ImageDraw
from torch import Tensor

from domainfm.core.checkpoint_io import atomic_write
from domainfm.tasks.monitors.callbacks import EveryNSteps, _inference, _require

__all__ = ["ReconstructionPreview", "render_preview"]

PREVIEW_KEYS = ("input", "masked", "reconstruction")
BACKGROUND = 48  # grey level of the gaps between panels


def _unit_panel(unit: Tensor, three_views: bool, line_height: int, max_line_width: int) -> Any:
    """``(c, *spatial)`` values in ``[0, 1]`` → ``(h, w, 3)`` uint8 panel."""
    spatial = unit.ndim - 1
    if spatial == 1:
        values = unit[0, :: math.ceil(unit.shape[1] / max_line_width)].tolist()
        canvas = Image.new("L", (len(values), line_height), 0)
        top = line_height - 1
        points = [(j, round((1.0 - v) * top)) for j, v in enumerate(values)]
        draw = ImageDraw.Draw(canvas)
        if len(points) > 1:
            draw.line(points, fill=255, width=1)
        else:
            draw.point(points, fill=255)
        return np.repeat(np.asarray(canvas)[..., None], 3, axis=2)
    if spatial == 2:
        rgb = unit.permute(1, 2, 0) if unit.shape[0] == 3 else unit[0, ..., None].expand(-1, -1, 3)
        return (rgb * 255).round().to(torch.uint8).numpy()
    volume = unit[0]
    d, h, w = volume.shape
    views = [volume[d // 2]]  # (H, W)
    if three_views:
        views += [volume[:, h // 2], volume[:, :, w // 2]]  # (D, W), (D, H)
    height = max(v.shape[0] for v in views)
    gap = np.full((height, 2), BACKGROUND, dtype=np.uint8)
    parts: list[Any] = []
    for view in views:
        part = np.full((height, view.shape[1]), BACKGROUND, dtype=np.uint8)
        part[: view.shape[0]] = (view * 255).round().to(torch.uint8).numpy()
        parts += [part, gap]
    return np.repeat(np.concatenate(parts[:-1], axis=1)[..., None], 3, axis=2)


def render_preview(
    input: Tensor,
    masked: Tensor,
    reconstruction: Tensor,
    *,
    max_images: int = 4,
    three_views: bool = True,
    zoom: int = 1,
    pad: int = 2,
    line_height: int = 64,
    max_line_width: int = 1024,
) -> Any:
    """A ``(H, W, 3)`` uint8 grid: one row per sample, columns input | masked | reconstruction.

    Each row is scaled to ``[0, 255]`` with its input's min and max (values outside clipped),
    so the masked input and the reconstruction are comparable with the input. Channel 0 is
    shown, or RGB for a 2D input with 3 channels. 2D inputs are shown as they are; 3D volumes
    ``(D, H, W)`` as their middle slice along ``D`` or, with ``three_views``, the middle slices
    along ``D``, ``H`` and ``W`` side by side (``pad``-wide gaps, bottom-padded to a common
    height); 1D signals as a line plot ``line_height`` pixels high, subsampled to at most
    ``max_line_width`` points. Panels are enlarged ``zoom`` times (nearest neighbour) and
    separated by ``pad`` pixels of grey (``BACKGROUND``).

    Shapes::

        input, masked, reconstruction   (B, C, *spatial), 1-3 spatial dims, same shape
        returned grid                   (n * ph + (n + 1) * pad, 3 * pw + 4 * pad, 3)
                                        n = min(B, max_images), (ph, pw) the panel size

    Raises:
        ValueError: on mismatched shapes or an unsupported number of dims.
    """
    tensors = [input, masked, reconstruction]
    if any(t.shape != input.shape for t in tensors):
        raise ValueError(
            "input, masked and reconstruction must have the same shape, got "
            f"{[tuple(t.shape) for t in tensors]}"
        )
    if not 3 <= input.ndim <= 5 or input.shape[0] == 0 or input.shape[1] == 0:
        raise ValueError(f"expected (B, C, *spatial) with 1-3 spatial dims, got {input.shape}")
    if zoom < 1 or pad < 0 or max_images < 1:
        raise ValueError(f"need zoom >= 1, pad >= 0, max_images >= 1; got {zoom}, {pad}")
    x, m, r = (t.detach()[:max_images].float().cpu() for t in tensors)
    channels = slice(0, 3) if x.ndim == 4 and x.shape[1] == 3 else slice(0, 1)
    rows = []
    for i in range(x.shape[0]):
        ref = x[i, channels]
        finite = ref[torch.isfinite(ref)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
        scale = hi - lo if hi > lo else 1.0
        row = []
        for t in (x, m, r):
            unit = torch.nan_to_num((t[i, channels] - lo) / scale, nan=0.0).clamp(0.0, 1.0)
            panel = _unit_panel(unit, three_views, line_height, max_line_width)
            row.append(np.repeat(np.repeat(panel, zoom, axis=0), zoom, axis=1))
        rows.append(row)
    ph, pw = rows[0][0].shape[:2]
    grid = np.full(
        (len(rows) * ph + (len(rows) + 1) * pad, 3 * pw + 4 * pad, 3), BACKGROUND, dtype=np.uint8
    )
    for i, row in enumerate(rows):
        top = pad + i * (ph + pad)
        for j, panel in enumerate(row):
            left = pad + j * (pw + pad)
            grid[top : top + ph, left : left + pw] = panel
    return grid


class ReconstructionPreview(EveryNSteps):
    """Write ``input | masked | reconstruction`` PNG grids during masked pretraining.

    Every ``every_n_steps`` optimizer steps (at ``on_train_batch_end``) it calls
    ``pl_module.reconstruct_preview(batch)`` on the current training batch (eval mode, no
    grad; on every process, so sharded models work), renders the first ``max_images``
    samples with :func:`render_preview` and, on global rank zero, writes
    ``<out_dir or trainer.log_dir>/previews/step_{global_step:07d}.png`` atomically and adds
    the image to every :class:`~lightning.pytorch.loggers.TensorBoardLogger` under ``name``.

    Args:
        every_n_steps: write every this many optimizer steps.
        max_images: samples (rows) per grid.
        out_dir: folder holding ``previews/``; default ``trainer.log_dir``.
        three_views: for 3D inputs, middle slices along all three axes (else the first only).
        zoom: integer nearest-neighbour enlargement of every panel.
        name: TensorBoard image tag.

    Attributes:
        last_path: the last PNG written, ``None`` before the first.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        max_images: int = 4,
        out_dir: str | os.PathLike[str] | None = None,
        *,
        three_views: bool = True,
        zoom: int = 1,
        name: str = "monitor/reconstruction",
    ) -> None:
        if every_n_steps < 1 or max_images < 1 or zoom < 1:
            raise ValueError(
                "every_n_steps, max_images and zoom must be >= 1, got "
                f"{every_n_steps}, {max_images}, {zoom}"
            )
        super().__init__(every_n_steps)
        self.max_images = max_images
        self.out_dir = out_dir
        self.three_views = three_views
        self.zoom = zoom
        self.name = name
        self.last_path: Path | None = None

    def act(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, step: int) -> None:
        """Render the batch's preview; write it (global rank zero)."""
        preview = _require(pl_module, "reconstruct_preview", type(self).__name__)
        with _inference(trainer, pl_module):
            out = preview(batch)
        if not isinstance(out, Mapping) or any(
            not isinstance(out.get(key), Tensor) for key in PREVIEW_KEYS
        ):
            raise TypeError(
                f"reconstruct_preview(batch) must return a dict of tensors with keys "
                f"{PREVIEW_KEYS}, got {type(out).__name__}"
                + (f" with keys {sorted(out)}" if isinstance(out, Mapping) else "")
            )
        if not trainer.is_global_zero:
            return
        image = render_preview(
            *(out[key] for key in PREVIEW_KEYS),
            max_images=self.max_images,
            three_views=self.three_views,
            zoom=self.zoom,
        )
        default = trainer.log_dir or trainer.default_root_dir
        root = Path(self.out_dir if self.out_dir is not None else default)
        path = root / "previews" / f"step_{step:07d}.png"
        atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, format="PNG"))
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.name, image, global_step=step, dataformats="HWC")
