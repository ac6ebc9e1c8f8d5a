"""Huge rasters are refused up front with the estimate and the file's name, or run in bounded
memory: the tile plan is generated lazily, width-sized buffers and windowed reads are
estimated before they are allocated (issue 16).

Every raster here is a sparse GeoTIFF written at test time (no pixel data: a 200000² one is
under 1 MB on disk)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import rasterio.warp
import torch
from rasterio._err import CPLE_AppDefinedError
from rasterio.transform import from_origin
from torch import Tensor, nn

from domainfm.cli import main
from domainfm.core.size_guard import LIMIT_ENV, AllocationTooLarge
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial import window_grid
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.raster_align import open_aligned
from domainfm.domains.geospatial.raster_header import open_raster, raster_info, resolve_bands
from domainfm.domains.geospatial.raster_read import read_dataset_window, read_raster
from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.domains.geospatial.tiled_detection import detect_raster
from domainfm.domains.geospatial.tiled_inference import predict_raster
from domainfm.domains.geospatial.window_grid import WindowStarts, valid_grid_windows
from domainfm.tasks.finetune_module import FinetuneModule
from domainfm.tasks.task_module import checkpoint_metadata

HUGE = 200_000
"""Pixels on a side of the hostile raster (4·10¹⁰ pixels)."""


def _sparse(path: Path, width: int = HUGE, height: int = HUGE, *, crs: str = "EPSG:32633") -> Path:
    """A one-band uint8 GeoTIFF of ``width × height`` pixels with no block written."""
    block = 1024 if min(width, height) >= 1024 else 256
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        crs=crs,
        transform=from_origin(500_000, 5_000_000, 10, 10),
        tiled=True,
        blockxsize=block,
        blockysize=block,
        sparse_ok=True,
        BIGTIFF="YES",
    ):
        pass
    assert path.stat().st_size < 4 * 2**20
    return path


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _sparse(tmp_path_factory.mktemp("huge") / "huge.tif")


class _Stop(Exception):
    """Raised by the stub models after a few forward passes: the run got that far."""


class _Segmenter(nn.Module):
    """``(B, 1, t, t) → (B, K, t, t)`` zeros; raises :class:`_Stop` after ``stop_after`` calls."""

    def __init__(self, classes: int, *, declare: bool = True, stop_after: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1)
        self.classes, self.stop_after, self.calls = classes, stop_after, 0
        if declare:
            self.num_classes = classes

    def forward(self, x: Tensor) -> Tensor:
        self.calls += 1
        if self.calls > self.stop_after:
            raise _Stop
        return x.new_zeros(x.shape[0], self.classes, *x.shape[2:])


def _left_in(folder: Path, *keep: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p not in keep)


def test_window_starts_are_lazy_and_match_the_list() -> None:
    starts = WindowStarts(HUGE, 1, 1)  # 200000 starts, nothing listed
    assert len(starts) == HUGE and starts[-1] == HUGE - 1 and starts.index(123_456) == 123_456
    assert list(WindowStarts(101, 64, 48)) == [0, 37] and WindowStarts(20, 32, 8)[:] == [0]


def test_predict_raster_refuses_a_too_wide_raster_before_any_forward(
    huge: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(LIMIT_ENV, "0.05")  # 51.2 MiB
    model = _Segmenter(2)
    dst = tmp_path / "labels.tif"
    with pytest.raises(AllocationTooLarge) as caught:
        predict_raster(model, huge, dst, tile=256)
    message = str(caught.value)
    assert message.startswith(f"{huge}: the blended logits of 256 full-width rows")
    assert "2 classes x 256 x 200000 float32" in message
    assert "would need about 390.6 MiB" in message and "--max-alloc-gb" in message
    assert model.calls == 0 and _left_in(tmp_path) == []


def test_predict_raster_rechecks_with_the_classes_of_the_first_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _sparse(tmp_path / "wide.tif", width=50_000, height=300)
    monkeypatch.setenv(LIMIT_ENV, "0.1")  # 1 class would fit (48.8 MiB), 8 do not
    model = _Segmenter(8, declare=False)
    with pytest.raises(AllocationTooLarge, match=r"8 classes x 256 x 50000 float32") as caught:
        predict_raster(model, src, tmp_path / "labels.tif", tile=256)
    assert str(caught.value).startswith(f"{src}: ") and "390.6 MiB" in str(caught.value)
    assert model.calls == 1 and _left_in(tmp_path, src) == []  # no partial or temp output


def test_detect_raster_refuses_a_too_large_batch_before_any_read(
    huge: Path, tmp_path: Path
) -> None:
    calls: list[int] = []

    def detector(x: Tensor) -> list[dict[str, Tensor]]:
        calls.append(x.shape[0])
        raise _Stop

    with pytest.raises(AllocationTooLarge, match=r"a batch of 4 tiles \(4 x 1 x 60000") as caught:
        detect_raster(detector, huge, tmp_path / "boxes.geojson", tile=60_000)
    assert str(caught.value).startswith(f"{huge}: ") and "GiB" in str(caught.value)
    assert calls == [] and _left_in(tmp_path) == []


_MEMORY_PROBE = r"""
import json, resource, sys
import torch, torchvision.ops  # mapped before the baseline
from domainfm.domains.geospatial.tiled_detection import detect_raster
from domainfm.domains.geospatial.tiled_inference import predict_raster

src, out, cap = sys.argv[1], sys.argv[2], float(sys.argv[3])
torch.set_num_threads(1)

def vm_size():
    for line in open("/proc/self/status"):
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024

class Stop(Exception):
    pass

def stopping(result):
    calls = []
    def model(x):
        calls.append(1)
        if len(calls) > 3:
            raise Stop
        return result(x)
    return model, calls

segmenter, seg_calls = stopping(lambda x: x.new_zeros(x.shape[0], 2, *x.shape[2:]))
empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
         "scores": torch.zeros(0)}
detector, det_calls = stopping(lambda x: [dict(empty) for _ in range(x.shape[0])])
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
limit = vm_size() + int(cap)
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
result = {}
for name, run, calls in (
    ("segment", lambda: predict_raster(segmenter, src, out + "/l.tif", tile=32), seg_calls),
    ("detect", lambda: detect_raster(detector, src, out + "/b.geojson", tile=32), det_calls),
):
    try:
        run()
        result[name] = "finished"
    except Stop:
        result[name] = len(calls)
    except MemoryError as err:
        result[name] = f"MemoryError {err}"
result["rss_growth"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
print(json.dumps(result))
"""


def test_tiling_a_huge_raster_needs_bounded_memory(huge: Path, tmp_path: Path) -> None:
    """Tiles of 32 px over 200000² are 69 million positions (about 5 GB as a list): with the
    plan generated lazily, segmentation and detection reach the model in a process whose
    address space may grow by only 2 GiB, and its resident memory grows by far less."""
    env = {**os.environ, "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": "1"}
    env.pop(LIMIT_ENV, None)  # the default limit
    done = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(huge), str(tmp_path), str(2 * 2**30)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["segment"] == 4 and result["detect"] == 4, result  # stopped by the model
    assert result["rss_growth"] < 600 * 2**20, result
    assert _left_in(tmp_path) == []


def _checkpoint(path: Path) -> Path:
    """A one-band segmentation checkpoint for ``domainfm segment`` (tiles of 32 px)."""
    torch.manual_seed(0)
    backbone = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=16, embed_dim=16, depth=1, num_heads=2
    )
    module = FinetuneModule(backbone=backbone, task="segmentation", num_classes=2)
    meta = checkpoint_metadata(backbone, None, module.checkpoint_recipe())
    meta["input"] = RasterContract(bands=["B1"], window=32).to_dict()
    torch.save({"state_dict": module.state_dict(), "domainfm": meta}, path)
    return path


def test_segment_cli_refuses_a_huge_raster_up_front(
    huge: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _checkpoint(tmp_path / "seg.ckpt")
    forwards: list[int] = []

    def forward(self: FinetuneModule, x: Tensor) -> Tensor:
        forwards.append(int(x.shape[0]))
        raise _Stop

    monkeypatch.setattr(FinetuneModule, "forward", forward)
    monkeypatch.setenv(LIMIT_ENV, "8")  # restored after the CLI sets it
    out = tmp_path / "labels.tif"
    argv = ["--max-alloc-gb", "0.01", "segment", str(ckpt), str(huge), str(out), "--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert err.startswith(f"domainfm segment: error: {huge}: the blended logits of 32")
    assert "2 classes x 32 x 200000 float32) would need about 48.8 MiB" in err
    assert len(err.strip().splitlines()) == 1 and forwards == []
    assert _left_in(tmp_path, ckpt) == []


@pytest.mark.parametrize("how", ["read_raster", "RasterReader", "AlignedRasters"])
def test_a_huge_window_read_is_refused_naming_the_file(huge: Path, how: str) -> None:
    window = (0, 0, HUGE, HUGE)
    with pytest.raises(AllocationTooLarge) as caught:
        if how == "read_raster":
            read_raster(huge, window)
        elif how == "RasterReader":
            RasterReader().read(huge, window)
        else:
            open_aligned([huge]).read(0)  # the whole raster
    message = str(caught.value)
    assert message.startswith(f"{huge}: the window (row_off=0, col_off=0, height=200000, ")
    assert "1 band(s) (uint8 read as float32" in message and "would need about 223.5 GiB" in message


def test_a_small_window_of_a_huge_raster_still_reads(huge: Path) -> None:
    r = read_raster(huge, (HUGE - 8, HUGE - 16, 8, 16))
    assert r.array.shape == (1, 8, 16) and r.mask.all()


def test_valid_grid_windows_refuses_huge_plans(huge: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_read(*args: Any, **kwargs: Any) -> Any:
        raise _Stop  # refused before any read, or this fails at once

    monkeypatch.setattr(window_grid, "read_raster", no_read)
    with pytest.raises(AllocationTooLarge, match="12500 x 12500 grid windows") as caught:
        valid_grid_windows(huge, size=16)  # 156 million windows at the default limit
    assert str(caught.value).startswith(f"{huge}: ")
    monkeypatch.setenv(LIMIT_ENV, "2")
    with pytest.raises(AllocationTooLarge, match=r"counts per 8 x 8 cell \(int64\)"):
        valid_grid_windows(huge, size=8, stride=64)  # a 25001² table of counts: 4.7 GiB


def test_gdal_errors_while_reading_name_the_file(huge: Path) -> None:
    info = raster_info(huge)
    indexes = resolve_bands(info, None)

    class Failing:
        """The open dataset, whose pixel reads fail inside GDAL (a ``CPLE_*`` error)."""

        def __init__(self, ds: Any) -> None:
            self.ds = ds

        def __getattr__(self, name: str) -> Any:
            return getattr(self.ds, name)

        def read(self, *args: Any, **kwargs: Any) -> np.ndarray:
            raise CPLE_AppDefinedError(1, 1, "TIFFReadEncodedTile() failed")

    with open_raster(huge) as ds, pytest.raises(ValueError) as caught:
        read_dataset_window(huge, Failing(ds), info, (0, 0, 8, 8), indexes, ("1",), False, None)
    message = str(caught.value)
    assert message.startswith(f"{huge}: could not read its pixels")
    assert "TIFFReadEncodedTile() failed" in message


def test_gdal_errors_while_reprojecting_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = _sparse(tmp_path / "a.tif", 64, 64)
    b = _sparse(tmp_path / "b.tif", 64, 64, crs="EPSG:32632")

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise CPLE_AppDefinedError(1, 1, "Reprojection failed")

    monkeypatch.setattr(rasterio.warp, "transform_bounds", failing)
    with pytest.raises(ValueError) as caught:
        open_aligned([a, b], reproject=True)
    assert str(caught.value).startswith(f"{b}: could not reproject its footprint from EPSG:32632")
    assert "Reprojection failed" in str(caught.value)
