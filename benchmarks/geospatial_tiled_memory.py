"""Peak memory of tiled, streamed GeoTIFF prediction on a raster of at least 20k x 20k pixels.

The raster is synthetic in size only: real Landsat pixels (``RGB.byte.tif`` from the example
data, 3 bands uint8) tiled to ``--size`` x ``--size`` and written block by block as a tiled,
deflate-compressed GeoTIFF with the scene's CRS. :func:`predict_raster` then segments it with a
small convolutional model (3 → 16 → 16 → K channels, 3x3 convs; the memory of interest is the
pipeline's, not the model's) in tiles of ``--tile`` pixels with 25 % overlap and Hann blending,
writing a uint8 label GeoTIFF.

The prediction runs in a fresh subprocess; reported are its peak resident set (``ru_maxrss``)
and the resident set just before the call (interpreter + torch + model), the tile count,
accumulator shape and time. For scale, holding the whole raster's float32 logits in memory (what
an untiled or mosaic-in-memory approach needs) would take ``size^2 * K * 4`` bytes, printed
next to it. Goal: peak < 2 GB.

Usage::

    python benchmarks/geospatial_tiled_memory.py                  # 20480^2, writes results/
    python benchmarks/geospatial_tiled_memory.py --quick          # 2048^2 smoke run, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
NAME = "geospatial_tiled_memory"
GOAL_BYTES = 2 * 1024**3


def write_big_raster(path: Path, size: int) -> dict[str, Any]:
    """``size`` x ``size`` x 3 uint8 GeoTIFF of real Landsat pixels, written by block rows."""
    import numpy as np
    import rasterio
    from rasterio.windows import Window

    from domainfm.data.data_root import resolve_data_path

    source = resolve_data_path("geospatial/rasterio_landsat_rgb/RGB.byte.tif")
    with rasterio.open(source) as src:
        scene = src.read()  # (3, 718, 791)
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": 3,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": 0,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "zlevel": 1,  # fast to write; the input's compression does not change the result
            "BIGTIFF": "IF_SAFER",
        }
    _, h, w = scene.shape
    reps = -(-size // w)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 256):
            rows = min(256, size - row)
            idx = (np.arange(row, row + rows) % h)[:, None]
            strip = np.tile(scene[:, idx[:, 0], :], (1, 1, reps))[:, :, :size]  # (3, rows, size)
            dst.write(strip, window=Window(0, row, size, rows))
    return {"source": str(source), "bytes_on_disk": path.stat().st_size}


CHILD = r"""
import json, resource, sys, time, torch
from torch import nn
from domainfm.domains.geospatial import predict_raster
torch.set_num_threads(int(sys.argv[4]))
torch.manual_seed(0)
k = 3
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                      nn.ReLU(), nn.Conv2d(16, k, 1)).eval()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
report = {}
start = time.perf_counter()
predict_raster(model, sys.argv[1], sys.argv[2], tile=int(sys.argv[3]), overlap=0.25,
               mean=[100.0] * 3, std=[50.0] * 3, batch_size=8, report=report)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak_rss_bytes": peak, "rss_before_bytes": before, "seconds": seconds,
                  "classes": k, "report": {k2: (list(v) if isinstance(v, tuple) else v)
                                           for k2, v in report.items()}}))
"""


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=20480, help="raster side in pixels")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="where the raster goes")
    parser.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--quick", action="store_true", help="2048^2 smoke run; writes nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.size = 2048
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        src, dst = Path(tmp) / "big.tif", Path(tmp) / "pred.tif"
        t0 = time.perf_counter()
        written = write_big_raster(src, args.size)
        write_seconds = time.perf_counter() - t0
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(src), str(dst), str(args.tile), str(args.threads)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"prediction failed:\n{proc.stderr[-3000:]}")
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        import rasterio

        with rasterio.open(src) as a, rasterio.open(dst) as b:
            same_grid = a.crs == b.crs and a.transform == b.transform and a.shape == b.shape
        output_bytes = dst.stat().st_size
    in_memory = args.size**2 * child["classes"] * 4
    result = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": args.threads,
            "python": platform.python_version(),
        },
        "settings": {"size": args.size, "tile": args.tile, "overlap": 0.25, "blend": "hann"},
        "raster": {
            **written,
            "write_seconds": write_seconds,
            "output_bytes": output_bytes,
            "same_crs_transform_shape": same_grid,
        },
        "prediction": child,
        "whole_raster_logits_bytes": in_memory,
        "goal_bytes": GOAL_BYTES,
        "parent_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    text = render(result)
    print(text)
    if not args.quick:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"{NAME}.txt").write_text(text)
        (args.out_dir / f"{NAME}.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def render(r: dict[str, Any]) -> str:
    gib = 1024**3
    p = r["prediction"]
    peak = p["peak_rss_bytes"]
    return (
        "\n".join(
            [
                "geospatial: peak memory of tiled, streamed GeoTIFF prediction (predict_raster)",
                f"{r['date']}  {r['machine']['cpu']}  {r['machine']['cores']} cores, "
                f"{r['machine']['threads']} torch threads",
                f"raster {r['settings']['size']} x {r['settings']['size']} x 3 uint8 (real Landsat "
                f"pixels tiled; {r['raster']['bytes_on_disk'] / gib:.2f} GiB deflate on disk, "
                f"written in {r['raster']['write_seconds']:.0f} s)",
                f"tiles {r['settings']['tile']} px, overlap 25 %, Hann blending, "
                f"{p['report'].get('tiles')} tiles, "
                f"accumulator {p['report'].get('accumulator_shape')}",
                f"prediction time {p['seconds']:.0f} s; output on the input's CRS/transform/shape: "
                f"{r['raster']['same_crs_transform_shape']}",
                "",
                f"peak RSS of the prediction process: {peak / gib:.3f} GiB "
                f"(before the call: {p['rss_before_bytes'] / gib:.3f} GiB)",
                f"whole-raster float32 logits alone would take: "
                f"{r['whole_raster_logits_bytes'] / gib:.2f} GiB",
                f"goal: peak < 2 GiB -> {'met' if peak < r['goal_bytes'] else 'NOT met'}",
            ]
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
