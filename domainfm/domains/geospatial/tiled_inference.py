"""Tiled, streamed inference over a raster of any size, written as a georeferenced GeoTIFF.

:func:`predict_raster` runs a dense model (``(B, C, h, w)`` bands → ``(B, K, h, w)`` logits,
e.g. a segmentation :class:`~domainfm.tasks.finetune_module.FinetuneModule`) over a whole
raster and writes labels or class probabilities on the input's exact grid (CRS, transform,
width, height).

* **Tiles** and **normalization** (:mod:`~domainfm.domains.geospatial.tile_setup`): squares
  of ``tile × tile`` pixels with stride ``int(tile * (1 - overlap))`` (at least 1) along each
  axis; the last row/column of tiles is shifted back to end on the raster's edge, so every
  pixel is covered and no tile reaches outside. A raster smaller than a tile along an axis
  gets one tile there, read ``boundless`` and **padded** with invalid pixels: the model
  always sees ``tile × tile`` inputs (the size it was trained at; a ViT needs a multiple of
  its patch size), and the padding is cropped away. Bands are normalized as in training,
  ``(x - mean) / std`` per band (``std`` floored at ``1e-6``), then every invalid pixel
  (nodata, masked, non-finite in any band, see
  :func:`~domainfm.domains.geospatial.raster_read.read_raster`) set to 0.
* **Blending**: each tile's logits are weighted by a window ``w(i, j) = h(i) h(j)`` and the
  sum over tiles is divided by the summed weights, so overlapping tiles meet without seams.
  ``blend="hann"``: ``h(i) = sin²(π (i + ½) / tile)`` (a Hann taper sampled at pixel centres:
  largest in the middle, never 0, so every pixel has a positive weight); ``"constant"``:
  ``h = 1`` (plain average). A pixel covered by one tile gets that tile's logits exactly.
  Labels are the argmax of the blended logits, probabilities their softmax.
* **Streaming, bounded memory** (:mod:`~domainfm.domains.geospatial.geotiff_writer`): tiles
  are visited row of tiles by row of tiles. The accumulators (blended logits ``(K, tile, W)``,
  weights, validity) only span the rows a tile can still touch: when the next row of tiles
  starts at row ``r``, every row above ``r`` is final, is turned into labels/probabilities and
  written in whole rows of output blocks (each compressed block written once). Peak memory
  is ``O(K × tile × W)``, independent of the raster's height; nothing of raster size is ever
  allocated, and the input is read one tile window at a time. The tile plan is not listed
  either: positions are generated row-major and batches drawn from that iterator
  (:meth:`~domainfm.domains.geospatial.tile_setup.TileSetup.positions`).
* **Size guard**: the buffers that grow with the raster's width (the strip's logits, the
  writer's rows; :func:`~domainfm.domains.geospatial.geotiff_writer.check_prediction_buffers`),
  a batch of tiles and the blend window are estimated before any model forward and refused
  above the per-allocation limit (:func:`~domainfm.core.size_guard.check_allocation`; 8 GiB
  unless ``DOMAINFM_MAX_ALLOC_GB`` / ``--max-alloc-gb`` says otherwise) with the estimate
  and the file's name. ``K`` is the model's ``num_classes`` when it declares one (else at
  least 1); the estimate is checked again with the ``K`` of the first forward pass, before
  the accumulators are allocated.
  GDAL's block cache (by default 5 % of the machine's RAM: 1.2 GiB on a 24 GiB machine,
  filled with decompressed input blocks as a large raster is read) is bounded for the call
  by ``gdal_cache_mb`` through ``rasterio.Env(GDAL_CACHEMAX=...)``; each input block is
  read about once per row of tiles, so a small cache costs nothing.
* **Output**: a tiled GeoTIFF (blocks of 256 or smaller, see
  :func:`~domainfm.domains.geospatial.geotiff_writer.create_prediction_geotiff`), ``compress``
  (deflate by default), ``BIGTIFF=IF_SAFER``. ``output="labels"``: one band,
  uint8 with nodata 255 (uint16 with nodata 65535 when ``K > 255``), nodata wherever the
  input pixel is invalid, band description ``"labels"`` and tags ``class_<k>=<name>`` when
  ``class_names`` are given. ``output="probabilities"``: ``K`` float32 bands (softmax),
  nodata NaN where the input is invalid, band descriptions = class names (``class_<k>``
  without them). Written to a temporary file next to ``dst`` and renamed atomically
  (:func:`~domainfm.core.checkpoint_io.atomic_write`): a crash never leaves half a GeoTIFF.

Example::

    >>> model = FinetuneModule(backbone=vit, task="segmentation", num_classes=4).eval()
    >>> stats = compute_band_stats("s2_l1c_13band/", cache="s2_stats.json")
    >>> predict_raster(model, "S2_L1C_2015-07-11.tif", "landcover.tif", tile=64, overlap=0.5,
    ...                stats=stats, class_names=["water", "forest", "field", "urban"])
    PosixPath('landcover.tif')
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Unpack

import torch
from torch import Tensor

from domainfm.core.checkpoint_io import atomic_write
from domainfm.core.size_guard import check_allocation
from domainfm.domains.geospatial.geotiff_writer import (
    BlockRowWriter,
    LogitStrip,
    check_prediction_buffers,
    create_prediction_geotiff,
    prediction_finisher,
)
from domainfm.domains.geospatial.raster_header import open_raster
from domainfm.domains.geospatial.tile_setup import TileSetup
from domainfm.domains.geospatial.tiling_args import TilingArgs, check_tiling


def blend_window(tile: int, blend: Literal["hann", "constant"]) -> Tensor:
    """The ``(tile, tile)`` float32 weights of one tile's logits: ``h(i) h(j)`` with
    ``h(i) = sin²(π (i + ½) / tile)`` for ``"hann"`` (positive everywhere), 1 for
    ``"constant"``."""
    if blend == "constant":
        return torch.ones(tile, tile)
    centres = (torch.arange(tile, dtype=torch.float64) + 0.5) / tile
    taper = torch.sin(math.pi * centres) ** 2  # (tile,), > 0
    return torch.outer(taper, taper).to(torch.float32)  # (tile, tile)


def predict_raster(
    model: Callable[[Tensor], Tensor],
    src: str | Path,
    dst: str | Path,
    *,
    blend: Literal["hann", "constant"] = "hann",
    output: Literal["labels", "probabilities"] = "labels",
    class_names: Sequence[str] | None = None,
    progress: bool = False,
    compress: str | None = "deflate",
    report: dict[str, Any] | None = None,
    **tiling: Unpack[TilingArgs],
) -> Path:
    """Predict every pixel of ``src`` tile by tile and write the result as a GeoTIFF on its
    grid (see the module docstring).

    Args:
        model: ``(B, C, tile, tile) → (B, K, tile, tile)`` logits. An ``nn.Module`` is put in
            eval mode for the call (its mode is restored after) and must already be on
            ``device``.
        src: input raster (GeoTIFF or anything GDAL reads).
        dst: output GeoTIFF (written atomically; its folder is created).
        blend: ``"hann"`` (seamless taper) or ``"constant"`` weights of overlapping tiles.
        output: ``"labels"`` (argmax, one band) or ``"probabilities"`` (softmax, K bands).
        class_names: ``K`` names, written as band descriptions (probabilities) or tags
            (labels).
        progress: print progress over rows of tiles (a tqdm bar when tqdm is installed).
        compress: GeoTIFF compression (``"deflate"``, ``"lzw"``, ``"zstd"``, ... or
            ``None``).
        report: a dict filled with what was done: ``tiles``, ``tile_grid`` (rows, columns of
            tiles), ``batches``, ``stride``, ``accumulator_shape`` (``(K, rows, W)``, rows
            at most ``tile``), ``max_buffered_rows`` (finished rows waiting for a whole block
            row), ``num_classes``, ``dtype``, ``nodata``.
        **tiling: ``tile``, ``overlap``, ``bands``, ``band_names``, ``mean``, ``std``,
            ``stats``, ``batch_size`` (tiles of consecutive rows share batches), ``device``,
            ``gdal_cache_mb``: see :class:`~domainfm.domains.geospatial.tiling_args.TilingArgs`.

    Returns:
        ``dst`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: naming the file: an unreadable or ungeoreferenced input, unknown bands,
            ``mean``/``std``/``stats`` or the model's input channels not matching the
            selected bands, a model that fails on the first tiles or returns another shape
            than ``(B, K, tile, tile)``, wrong ``class_names``; and bad arguments (``tile``
            < 1, ``overlap`` outside ``[0, 1)``, ...), naming the argument.
        AllocationTooLarge: (a ``ValueError``) naming the file and the estimate, when a
            buffer would exceed the per-allocation limit (a raster too wide, a tile too
            large); before any model forward when the model declares ``num_classes``.
    """
    if blend not in ("hann", "constant"):
        raise ValueError(f"blend={blend!r}: must be 'hann' or 'constant'")
    if output not in ("labels", "probabilities"):
        raise ValueError(f"output={output!r}: must be 'labels' or 'probabilities'")
    setup = check_tiling(model, src, dst, tiling)
    check_allocation(
        float(setup.tile) ** 2 * 8,
        what=f"the {setup.tile} x {setup.tile} blend window (float64)",
        source=setup.source,
    )
    declared = _declared_classes(model)
    check_prediction_buffers(
        setup.source,
        setup.info,
        tile=setup.tile,
        output=output,
        num_classes=declared or 1,
        exact=declared is not None,
    )
    job = _Job(
        model=model,
        setup=setup,
        weights=blend_window(setup.tile, blend),
        output=output,
        class_names=None if class_names is None else tuple(class_names),
        progress=progress,
        compress=compress,
        report=report if report is not None else {},
    )
    with setup.session(model):
        return atomic_write(Path(dst), job.run)


@dataclass(eq=False)
class _Job:
    """One prediction run (arguments checked); :meth:`run` writes the GeoTIFF to a path."""

    model: Callable[[Tensor], Tensor]
    setup: TileSetup
    weights: Tensor
    output: Literal["labels", "probabilities"]
    class_names: tuple[str, ...] | None
    progress: bool
    compress: str | None
    report: dict[str, Any]

    def run(self, path: Path) -> None:
        info, tile = self.setup.info, self.setup.tile
        rows, cols = self.setup.tile_starts()
        self.report.update(
            tiles=len(rows) * len(cols), tile_grid=(len(rows), len(cols)), stride=self.setup.stride
        )
        strip: LogitStrip | None = None
        writer: BlockRowWriter | None = None
        batches = 0
        weights = self.weights.to(self.setup.device)
        with open_raster(self.setup.source) as ds:
            try:
                # row-major positions, generated lazily: rows of tiles in order
                for batch, inputs, masks in self.setup.batches(ds, self.setup.positions()):
                    # inputs (B, C, t, t), masks a list of (t, t)
                    logits = self._forward(inputs, first=batches == 0)  # (B, K, t, t)
                    batches += 1
                    if strip is None:
                        writer = self._create(path, int(logits.shape[1]))
                        strip = LogitStrip(
                            num_classes=int(logits.shape[1]),
                            height=min(tile, info.height),
                            width=info.width,
                            device=self.setup.device,
                            finish=prediction_finisher(writer, self.output),
                        )
                    for (row, col), tile_logits, mask in zip(batch, logits, masks, strict=True):
                        if row > strip.origin:
                            self._tick(rows, strip.origin)
                            strip.advance(row)
                        strip.add(row, col, tile_logits, weights, mask)
                assert strip is not None and writer is not None  # at least one tile
                self._tick(rows, strip.origin)
                strip.advance(info.height)
                writer.close()
            finally:
                if writer is not None:
                    writer.dataset.close()
        assert strip is not None and writer is not None
        self.report.update(
            batches=batches,
            accumulator_shape=tuple(strip.logits.shape),
            max_buffered_rows=writer.max_buffered,
        )

    def _forward(self, inputs: Tensor, *, first: bool) -> Tensor:
        x = inputs.to(self.setup.device)
        shape = f"(B={x.shape[0]}, C={x.shape[1]}, {self.setup.tile}, {self.setup.tile})"
        with torch.no_grad():
            try:
                logits = self.model(x)
            except torch.OutOfMemoryError:
                raise
            except (RuntimeError, ValueError, TypeError) as err:
                if not first:
                    raise
                raise ValueError(
                    f"the model failed on the first tiles {shape} of {self.setup.source} (bands "
                    f"{list(self.setup.names)}); does it take {x.shape[1]} bands and "
                    f"{self.setup.tile}x{self.setup.tile} tiles? {type(err).__name__}: {err}"
                ) from err
        if (
            not isinstance(logits, Tensor)
            or logits.ndim != 4
            or logits.shape[0] != x.shape[0]
            or tuple(logits.shape[2:]) != (self.setup.tile, self.setup.tile)
        ):
            got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(
                f"the model returned {got} for tiles {shape} of {self.setup.source}; expected "
                f"logits (B, K, {self.setup.tile}, {self.setup.tile})"
            )
        return logits.float()

    def _create(self, path: Path, num_classes: int) -> BlockRowWriter:
        """Open the output GeoTIFF (needs ``K``, known after the first forward pass)."""
        if self.class_names is not None and len(self.class_names) != num_classes:
            raise ValueError(
                f"class_names has {len(self.class_names)} names but the model predicts "
                f"{num_classes} classes on {self.setup.source}"
            )
        check_prediction_buffers(  # K is known now: before the accumulators exist
            self.setup.source,
            self.setup.info,
            tile=self.setup.tile,
            output=self.output,
            num_classes=num_classes,
        )
        writer = create_prediction_geotiff(
            path,
            self.setup.info,
            output=self.output,
            num_classes=num_classes,
            class_names=self.class_names,
            compress=self.compress,
        )
        dataset = writer.dataset
        self.report.update(
            num_classes=num_classes, dtype=str(dataset.dtypes[0]), nodata=float(dataset.nodata)
        )
        return writer

    def _tick(self, rows: Sequence[int], origin: int) -> None:
        if not self.progress:
            return
        done = bisect.bisect_right(rows, origin)  # rows of tiles starting at or above origin
        print(f"{self.setup.source.name}: row of tiles {done}/{len(rows)}", file=sys.stderr)


def _declared_classes(model: Any) -> int | None:
    """The number of classes ``model`` declares (an integer ``num_classes`` >= 1, as a
    :class:`~domainfm.tasks.finetune_module.FinetuneModule` has); ``None``: unknown."""
    value = getattr(model, "num_classes", None)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    return None
