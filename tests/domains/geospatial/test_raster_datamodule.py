"""RasterDataModule: the raster data modules take its arguments through ``**kwargs`` (as
LightningCLI sees them), compute their statistics once over the real Sentinel-2 files and
record them, with the release, input scale and window, as a standardize RasterContract."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

from domainfm.domains.geospatial import (
    SENTINEL2_L1C_BANDS,
    RasterPretrainDataModule,
    RasterSegDataModule,
)
from domainfm.domains.geospatial.raster_datamodule import RasterDataModule

S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
BASE_ARGS = {"size", "bands", "band_names", "stats_cache", "released_input", "input_scale"}


@pytest.mark.parametrize("cls", [RasterPretrainDataModule, RasterSegDataModule])
def test_subclasses_take_the_base_arguments(cls: type) -> None:
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "data")
    defaults = vars(parser.get_defaults().data)
    assert BASE_ARGS | {"batch_size", "num_workers", "seed"} <= set(defaults)
    assert defaults["size"] == 32 and defaults["input_scale"] == 1.0


def test_statistics_become_the_contract(data_root: Path, tmp_path: Path) -> None:
    dm = RasterDataModule(
        size=16,
        bands=["B04", "B08"],
        band_names=SENTINEL2_L1C_BANDS,
        stats_cache=str(tmp_path / "stats.json"),
    )
    with pytest.raises(RuntimeError, match="after setup"):
        dm.raster_contract()
    files = sorted((data_root / S2_DIR).glob("*.tif"))
    stats = dm.compute_stats(files)
    assert dm.stats is stats and stats.band_names == ("B04", "B08")
    assert (tmp_path / "stats.json").is_file()
    contract = dm.raster_contract(class_names=["a", "b"], extra={"k": 1})
    assert contract.bands == ["B04", "B08"] and contract.window == 16
    assert contract.normalization == {
        "type": "standardize",
        "mean": list(stats.mean),
        "std": list(stats.std),
    }
    assert contract.released_input is None and contract.input_scale == 1.0
    assert contract.class_names == ["a", "b"] and contract.extra == {"k": 1}
