"""Hostile rasters through ``domainfm segment`` / ``detect`` (API: ``predict_raster``,
``read_raster``), ``domainfm prepare geospatial`` and a raster fine-tuning config: truncated and
corrupt GeoTIFFs, no CRS, all-nodata, band mismatches with the checkpoint, mixed CRSs, a
200000² sparse raster, bad options."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from hostile_files import (
    empty,
    garbage,
    huge_sparse_geotiff,
    truncate,
    write_geotiff,
)
from hostile_spec import Case, Ctx, Run, prepare_case, source_folder
from rasterio.transform import Affine

from domainfm.domains.geospatial import open_aligned, predict_raster, read_raster

G = "geospatial"
PENDING_TILES = "lazy tile positions / size guard for any raster size"
BANDS = ["B1", "B2", "B3", "B4"]

SEG_FIT = """\
seed_everything: 0
trainer: {{max_steps: 1, accelerator: cpu, logger: false, enable_progress_bar: false,
          default_root_dir: {root}}}
model:
  class_path: domainfm.tasks.finetune_module.FinetuneModule
  init_args:
    task: segmentation
    num_classes: 2
    backbone:
      class_path: domainfm.core.vit.VisionTransformerND
      init_args: {{in_chans: 4, spatial_dims: 2, patch_size: 8, embed_dim: 16, depth: 1,
                   num_heads: 2}}
data:
  class_path: domainfm.domains.geospatial.RasterSegDataModule
  init_args: {{images: [{image}], label: {label}, size: 16, samples_per_epoch: 4,
               batch_size: 2, num_workers: 0}}
"""


def _segment(make: Callable[[Ctx], Path], *extra: str, api: bool = True, **run: Any):
    """``domainfm segment`` with the 4-band model (API: ``predict_raster``)."""

    def build(ctx: Ctx) -> Run:
        src = make(ctx)
        out = ctx.root / "labels.tif"

        def call() -> object:
            return predict_raster(
                ctx.models.geo_module,
                src,
                ctx.root / "api_labels.tif",
                tile=32,
                bands=BANDS,
                device="cpu",
            )

        run.setdefault("names", (src.name,))
        return Run(
            ["segment", str(ctx.models.geo_seg), str(src), str(out), "--no-progress", *extra],
            api=call if api else None,
            outputs=(out,),
            unchanged=(src,) if src.is_file() else (),
            **run,
        )

    return build


def _detect(
    make: Callable[[Ctx], Path], *extra: str, api: bool = True, **run: Any
) -> Callable[[Ctx], Run]:
    """``domainfm detect`` with the 4-band detector (API: ``read_raster`` of the bands)."""

    def build(ctx: Ctx) -> Run:
        src = make(ctx)
        out = ctx.root / "boxes.geojson"
        run.setdefault("names", (src.name,))
        return Run(
            ["detect", str(ctx.models.geo_detect), str(src), str(out), "--no-progress", *extra],
            api=(lambda: read_raster(src, bands=BANDS)) if api else None,
            outputs=(out,),
            **run,
        )

    return build


def _tif(name: str = "scene.tif", **kw: Any) -> Callable[[Ctx], Path]:
    return lambda ctx: write_geotiff(ctx.path(name), **kw)


def _then(make: Callable[[Ctx], Path], edit: Callable[[Path], Any]) -> Callable[[Ctx], Path]:
    def both(ctx: Ctx) -> Path:
        path = make(ctx)
        edit(path)
        return path

    return both


def _filled(value: float, bands: int = 4) -> np.ndarray:
    return np.full((bands, 48, 48), value, np.float32)


def _described(ctx: Ctx) -> Path:
    path = write_geotiff(ctx.path("named.tif"))
    with rasterio.open(path, "r+") as ds:
        for i, name in enumerate(["red", "green", "blue", "nir"], start=1):
            ds.set_band_description(i, name)
    return path


def _huge(ctx: Ctx) -> Path:
    return huge_sparse_geotiff(ctx.path("huge.tif"), 200_000)


ODD = os.fsdecode(b"sc\xe8ne \xff.tif")


def _mixed_crs_fit(ctx: Ctx) -> Run:
    image = write_geotiff(ctx.path("image.tif"))
    label = write_geotiff(
        ctx.path("label.tif"),
        data=np.ones((1, 48, 48), np.uint8),
        crs="EPSG:4326",
        transform=Affine(1e-4, 0, 14.5, 0, -1e-4, 45.8),
    )
    config = ctx.path("seg.yaml")
    config.write_text(SEG_FIT.format(root=ctx.root, image=image, label=label))
    return Run(
        ["fit", "--config", str(config)],
        names=("label.tif",),
        api=lambda: open_aligned([image, label]),
        allowed_new=("checkpoints/*", "config.yaml", "lightning_logs/*"),
    )


def _file_cases() -> list[Case]:
    good = _tif()
    return [
        Case("tif_good_segments", G, _segment(good), code=0),
        Case("tif_good_detects", G, _detect(good), code=0),
        Case("tif_truncated_segment", G, _segment(_then(good, lambda p: truncate(p, 0.5)))),
        Case("tif_truncated_detect", G, _detect(_then(good, lambda p: truncate(p, 0.5)))),
        Case("tif_header_only", G, _segment(_then(good, lambda p: truncate(p, 200)))),
        Case("tif_garbage", G, _segment(lambda ctx: garbage(ctx.path("noise.tif")))),
        Case("tif_empty_file", G, _segment(lambda ctx: empty(ctx.path("empty.tif")))),
        Case("tif_is_a_folder", G, _segment(lambda ctx: ctx.path("folder.tif", "x").parent)),
        Case("tif_missing", G, _segment(lambda ctx: ctx.root / "absent.tif")),
        Case(
            "tif_png_disguised",
            G,
            _segment(
                _then(_tif("photo.tif"), lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)))
            ),
        ),
        Case("tif_odd_name", G, _segment(lambda ctx: garbage(ctx.root / ODD))),
        Case("tif_no_crs_segment", G, _segment(_tif(crs=None)), pattern="CRS|crs"),
        Case("tif_no_crs_detect", G, _detect(_tif(crs=None)), pattern="CRS|crs"),
        Case("tif_no_transform", G, _segment(_tif(crs=None, transform=Affine.identity()))),
        # nothing valid in: a nodata label map / no boxes out, or a named refusal
        Case(
            "tif_all_nodata_segment", G, _segment(_tif(data=_filled(0.0), nodata=0.0)), code=(0, 2)
        ),
        Case("tif_all_nodata_detect", G, _detect(_tif(data=_filled(0.0), nodata=0.0)), code=(0, 2)),
        Case("tif_all_nan", G, _segment(_tif(data=_filled(np.nan))), code=(0, 2)),
        Case("tif_three_bands_segment", G, _segment(_tif(bands=3)), pattern="B4"),
        Case("tif_three_bands_detect", G, _detect(_tif(bands=3)), pattern="B4"),
        Case("tif_band_names_differ", G, _segment(_described), pattern="B1"),
        Case("tif_five_bands_picks_four", G, _segment(_tif(bands=5)), code=0),
        Case(
            "tif_complex_pixels",
            G,
            _segment(_tif(data=_filled(1.0).astype(np.complex64))),
            pending="complex or unsupported dtypes refused (rasters as well as NIfTI)",
        ),
        Case(
            "tif_geographic_crs",
            G,
            _segment(_tif(crs="EPSG:4326", transform=Affine(1e-4, 0, 14.5, 0, -1e-4, 45.8))),
            code=0,
        ),
        Case("tif_one_pixel", G, _segment(_tif(size=(1, 1))), code=(0, 2)),
        Case(
            "tif_200000_squared_segment_streams",
            G,
            _segment(_huge, api=False),
            code=(0, 2),
            pattern=r"GiB|TiB|max-alloc",
            timeout=10,
            timeout_ok=True,
            pending=PENDING_TILES,
        ),
        Case(
            "tif_200000_squared_segment_guarded",
            G,
            lambda ctx: _limited(_segment(_huge, api=False)(ctx), "0.01"),
            pattern=r"huge\.tif.*MiB.*max-alloc-gb",
            pending=PENDING_TILES,
        ),
        Case(
            "tif_200000_squared_detect_streams",
            G,
            _detect(_huge, api=False),
            code=(0, 2),
            pattern=r"GiB|TiB|max-alloc",
            timeout=10,
            timeout_ok=True,
            pending=PENDING_TILES,
        ),
        Case(
            "tif_200000_squared_read_raster",
            G,
            lambda ctx: Run(None, names=("huge.tif",), api=lambda: read_raster(_huge(ctx))),
            pending="size guard in read_raster",
        ),
        Case("tif_mixed_crs_fit", G, _mixed_crs_fit, pattern="CRS"),
    ]


def _limited(run: Run, gib: str) -> Run:
    """``run`` with ``--max-alloc-gb GIB`` (a global flag, before the command)."""
    assert run.argv is not None
    run.argv = ["--max-alloc-gb", gib, *run.argv]
    return run


def _option(command: str, *extra: str, pattern: str) -> Case:
    name = f"{command}_geo_option_" + "_".join(e.strip("-").replace("-", "") for e in extra)[:30]
    make = _segment if command == "segment" else _detect
    build = make(_tif(), *extra, names=())
    return Case(name, G, lambda ctx: _no_api(build(ctx)), pattern=pattern)


def _no_api(run: Run) -> Run:
    run.api = None
    return run


def _option_cases() -> list[Case]:
    return [
        _option("segment", "--roi-size", "0", pattern="roi|tile"),
        _option("segment", "--overlap", "1.5", pattern="overlap"),
        _option("segment", "--sw-batch-size", "0", pattern="batch"),
        Case(
            "segment_geo_option_roi_huge",
            G,
            lambda ctx: _no_api(_segment(_tif(), "--roi-size", "300000", names=())(ctx)),
            pattern=r"GiB|TiB|max-alloc",
            pending=PENDING_TILES,
        ),
        _option("detect", "--overlap", "1.0", pattern="overlap"),
        _option("detect", "--batch-size", "0", pattern="batch"),
        _option("detect", "--nms-iou", "2", pattern="iou"),
    ]


_prepare = prepare_case("geospatial", ("--chip-size", "16"))
_src = source_folder


def _good(src: Path) -> Any:
    return write_geotiff(src / "good.tif")


def _elsewhere(k: int) -> Affine:
    """A grid ``k`` × 10 km east of the default one (its own place for ``prepare``)."""
    return Affine(10.0, 0.0, 465180.0 + 10000.0 * k, 0.0, -10.0, 5080250.0)


def _prepare_cases() -> list[Case]:
    bad = (  # each on its own grid: one place each
        _good,
        lambda s: truncate(write_geotiff(s / "cut.tif", transform=_elsewhere(1)), 0.5),
        lambda s: write_geotiff(s / "nocrs.tif", crs=None),
        lambda s: write_geotiff(
            s / "blank.tif", data=_filled(0.0), nodata=0.0, transform=_elsewhere(2)
        ),
    )
    dates = (  # one place, three dates, one of them cut short
        _good,
        lambda s: write_geotiff(s / "date2.tif"),
        lambda s: truncate(write_geotiff(s / "date3.tif"), 0.5),
    )
    return [
        Case(
            "prepare_geo_skips_bad",
            G,
            _prepare(_src(*bad), bad=("cut.tif", "nocrs.tif", "blank.tif")),
            code=0,
            slow=True,
        ),
        Case(
            "prepare_geo_time_series_one_bad_date",
            G,
            _prepare(_src(*dates), bad=("date3.tif",)),
            code=(0, 2),
            slow=True,
        ),
        Case("prepare_geo_chip_zero", G, _prepare(_src(_good), "--chip-size", "0"), pattern="chip"),
        Case(
            "prepare_geo_min_valid_two",
            G,
            _prepare(_src(_good), "--min-valid", "2"),
            pattern="min_valid",
        ),
        Case(
            "prepare_geo_bad_date_regex",
            G,
            _prepare(_src(_good), "--date-pattern", "(unclosed"),
            pattern="date",
        ),
    ]


CASES: list[Case] = [*_file_cases(), *_option_cases(), *_prepare_cases()]
