"""TilingArgs: the tiling keywords tiled segmentation and detection share take their
defaults from TILING_DEFAULTS and are checked into one TileSetup; an unknown keyword is
refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from domainfm.domains.geospatial import detect_raster, predict_raster
from domainfm.domains.geospatial.tiling_args import TILING_DEFAULTS, check_tiling

LANDSAT = "geospatial/rasterio_landsat_rgb/RGB.byte.tif"


def test_defaults_fill_what_is_not_given(data_root: Path, tmp_path: Path) -> None:
    setup = check_tiling(None, data_root / LANDSAT, tmp_path / "o.tif", {"tile": 64})
    assert setup.tile == 64 and setup.stride == 48  # overlap 0.25
    assert setup.batch_size == TILING_DEFAULTS["batch_size"] == 4
    assert setup.gdal_cache_mb == 64 and setup.device == torch.device("cpu")
    assert setup.names == ("B1", "B2", "B3")  # every band


def test_unknown_tiling_keywords_are_refused(data_root: Path, tmp_path: Path) -> None:
    src, model = data_root / LANDSAT, torch.nn.Conv2d(3, 2, 1)
    wrong: dict[str, object] = {"tiles": 64}
    with pytest.raises(TypeError, match="tiles"):
        check_tiling(None, src, tmp_path / "o.tif", wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="overlaps"):
        predict_raster(model, src, tmp_path / "o.tif", overlaps=0.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="tile_size"):
        detect_raster(model, src, tmp_path / "o.geojson", tile_size=8)  # type: ignore[call-arg]
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o.geojson").exists()
