"""SpatioTemporalIndex on the real rasters: acquisition dates from tags and file names,
places by footprint across grids and CRSs, and windows of one place read across grids."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from domainfm.domains.geospatial import SENTINEL2_L1C_BANDS, RasterWindowDataset
from domainfm.domains.geospatial.temporal_index import (
    SpatioTemporalIndex,
    acquisition_date,
    footprint_iou,
)

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def _s2(data_root: Path) -> list[Path]:
    return sorted((data_root / S2).glob("S2_L1C_*.tif"))


def _copy(
    src: Path,
    dst: Path,
    *,
    window: Window | None = None,
    tags: dict | None = None,
    crs: str | None = None,
) -> Path:
    """A copy of ``src`` (a window of it, or warped to ``crs``) with its own tags."""
    with rasterio.open(src) as ds:
        profile = ds.profile.copy()
        if crs is None:
            win = window or Window(0, 0, ds.width, ds.height)
            data = ds.read(window=win)
            profile.update(
                width=int(win.width), height=int(win.height), transform=ds.window_transform(win)
            )
        else:
            transform, width, height = calculate_default_transform(
                ds.crs, crs, ds.width, ds.height, *ds.bounds
            )
            data = np.zeros((ds.count, height, width), dtype=ds.dtypes[0])
            reproject(
                ds.read(),
                data,
                src_transform=ds.transform,
                src_crs=ds.crs,
                dst_transform=transform,
                dst_crs=crs,
                resampling=Resampling.nearest,
            )
            profile.update(crs=crs, transform=transform, width=width, height=height)
    with rasterio.open(dst, "w", **profile) as out:
        out.write(data)
        if tags is not None:
            out.update_tags(**tags)
    return dst


def test_dates_come_from_tags_then_file_names(data_root: Path, tmp_path: Path) -> None:
    with open(data_root / S2 / "dates.csv") as f:
        expected = {row["file"]: row["acquisition_datetime"] for row in csv.DictReader(f)}
    for path in _s2(data_root):
        assert acquisition_date(path) == dt.datetime.fromisoformat(expected[path.name])
    src = data_root / LANDSAT  # no date tag
    named = _copy(src, tmp_path / "LE07_20000312T153015_rgb.tif")
    assert acquisition_date(named) == dt.datetime(2000, 3, 12, 15, 30, 15)
    plain = _copy(src, tmp_path / "scene_2001-07-04.tif")
    assert acquisition_date(plain) == dt.datetime(2001, 7, 4)
    tagged = _copy(
        src, tmp_path / "scene_2001-07-04b.tif", tags={"TIFFTAG_DATETIME": "2003:02:01 10:11:12"}
    )
    assert acquisition_date(tagged) == dt.datetime(2003, 2, 1, 10, 11, 12)  # the tag wins
    custom = _copy(src, tmp_path / "scene_d123_y2005.tif")
    pattern = r"d(?P<day>\d{2})(?P<month>\d)_y(?P<year>\d{4})"
    assert acquisition_date(custom, pattern=pattern) == dt.datetime(2005, 3, 12)
    with pytest.raises(ValueError, match=r"RGB\.byte\.tif: no acquisition date"):
        acquisition_date(src)


def test_places_group_footprints_across_grids_and_crs(data_root: Path, tmp_path: Path) -> None:
    dates = _s2(data_root)
    cropped = _copy(
        dates[0],
        tmp_path / "cropped.tif",
        window=Window(3, 2, 97, 99),
        tags={"ACQUISITION_DATETIME": "2016-01-01T00:00:00"},
    )
    warped = _copy(
        dates[1],
        tmp_path / "warped_lonlat.tif",
        crs="EPSG:4326",
        tags={"ACQUISITION_DATETIME": "2014-01-01T00:00:00"},
    )
    landsat = _copy(data_root / LANDSAT, tmp_path / "landsat_1999-10-01.tif")
    files = [landsat, *dates, cropped, warped]
    index = SpatioTemporalIndex(files, date_pattern=None)
    assert len(index.places) == 2  # the Landsat scene, and the Slovenian patch
    s2_place = next(p for p in index.places if len(p) > 1)
    assert [index.files[i].name for i in s2_place] == [
        "warped_lonlat.tif",
        *[d.name for d in dates],
        "cropped.tif",  # by date
    ]
    assert not index.same_grid(s2_place) and index.same_grid(s2_place[1:6])
    assert footprint_iou(index.footprints[1], index.footprints[6]) > 0.9
    assert footprint_iou(index.footprints[0], index.footprints[1]) == 0.0


def test_pairs_across_grids_are_the_same_place(data_root: Path, tmp_path: Path) -> None:
    original = _s2(data_root)[0]
    cropped = _copy(
        original,
        tmp_path / "cropped.tif",
        window=Window(3, 2, 97, 99),
        tags={"ACQUISITION_DATETIME": "2016-01-01T00:00:00"},
    )
    kwargs = dict(
        files=[original, cropped],
        size=16,
        band_names=SENTINEL2_L1C_BANDS,
        views=2,
        places="footprint",
        min_valid=0.0,
    )
    with pytest.raises(ValueError, match="different grids; pass reproject=True"):
        RasterWindowDataset(**kwargs)  # type: ignore[arg-type]
    ds = RasterWindowDataset(**kwargs, reproject=True)  # type: ignore[arg-type]
    assert ds.groups == [[0, 1]]
    checked = 0
    for seed in range(20):
        sample = ds[(0, seed)]
        a, b = sample["view1"], sample["view2"]  # the same date's pixels via two grids
        both = (a.abs().sum(0) > 0) & (b.abs().sum(0) > 0)  # outside the copy: invalid -> 0
        assert torch.equal(sample["valid"][0], both)
        assert torch.equal(a[:, both], b[:, both])  # same place -> same pixels, no offset
        checked += int(both.sum() > 100)
    assert checked > 5
