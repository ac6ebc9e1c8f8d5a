"""Patches/s from GeoTIFFs: domainfm's raster window pipeline vs TorchGeo, same run.

Both sides produce float32 batches ``(B, 13, S, S)`` (all 13 Sentinel-2 L1C bands) of random
S x S pixel windows, read from the same files, through a ``DataLoader`` with the same number
of workers and the same batch size; ``--patches`` windows are timed after one warm-up batch
(worker start-up and the first reads, excluded on both sides).

Baseline (TorchGeo, optional dependency: ``pip install torchgeo``): a ``RasterDataset``
subclass over the files (``filename_regex`` with a ``date`` group for the dated scenes, so that
a query reads one acquisition; ``all_bands`` = the 13 band names, every band read),
``RandomGeoSampler(size=S, length=B + patches, units=Units.PIXELS)`` and
``DataLoader(batch_size=B, sampler=..., collate_fn=stack_samples)``; batch key ``"image"``.
TorchGeo keeps one open rasterio handle per file and worker (an LRU cache), and reads every
query through ``rasterio.merge.merge``. It applies no normalization.

Ours: :class:`~domainfm.domains.geospatial.windows.RasterWindowDataset` (``size=S``,
``band_names`` = the 13 names, ``samples_per_epoch = B + patches``, per-band ``stats`` computed
once beforehand and cached, so windows come out normalized ``(x - mean) / std`` with a
validity mask) through :func:`~domainfm.data.sampling.seeded_loader` (``SeededSampler``,
``StatefulDataLoader``, default collate: no MAE masking; the data module adds
``MaskingCollate`` on top). Batch key ``"input"``. Windows are read through a
:class:`~domainfm.domains.geospatial.raster_reader.RasterReader`: handles opened and cached
per worker process (never pickled or inherited), so headers and GDAL's decompressed blocks
are reused across windows, as TorchGeo does with its per-worker handles.

Data sets:
(a) the 5 shipped dated 13-band S2 scenes (101 x 100 px, float32 reflectance, strip-organized
    deflate GTiffs), S = 32 by default;
(b) a mosaic of their real pixels: the 5 scenes mirror-tiled (tile (i, j) = date (i + j) mod 5,
    flipped on odd rows/columns) to ``--mosaic-size``^2 x 13 float32, written as a Cloud-
    Optimized GeoTIFF (GDAL ``COG`` driver: 512 x 512 blocks, DEFLATE with the floating-point
    predictor, overviews) in a temporary directory, on the scenes' CRS (EPSG:32633) and
    top-left origin with 10 m pixels; S = 64 by default. (Exactly 10 m: with the scenes'
    9.995 x 9.997 m pixels, TorchGeo 0.8's ``calculate_default_transform`` round trip differs
    in the last digits and it would read the mosaic through a bilinear ``WarpedVRT``.)
Before timing, a check (outside the clock) reads a few windows through both and compares the
raw pixels (ours read with ``read_raster``), and records whether TorchGeo warps the file
(``WarpedVRT``) or reads it directly.

Every measurement runs in a fresh subprocess (one side, one data set, one worker count), so
no GDAL cache or open handle carries over between runs; the order of the two sides alternates.
Reported: patches/s over the timed patches ("steady"), and over their second half (TorchGeo's
per-worker GDAL block cache warms up during a run on the COG; ours re-opens and re-decodes),
and the ratio ours / TorchGeo per data set and worker count. Goal: >= 3x at the default
worker count on both data sets. ``--profile-samples`` adds a cProfile of ours' ``__getitem__``
in the main process.

Usage::

    python benchmarks/geospatial_pipeline.py                 # writes benchmarks/results/
    python benchmarks/geospatial_pipeline.py --quick         # < 1 min smoke run, prints only
    python benchmarks/geospatial_pipeline.py --workers 4 0 --patches 4000 --out-dir /tmp/b
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import rasterio  # noqa: E402
import rasterio.shutil  # noqa: E402
import torch  # noqa: E402
from rasterio.env import get_gdal_config  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from domainfm.data.data_root import example_data_root  # noqa: E402
from domainfm.data.sampling import seeded_loader  # noqa: E402
from domainfm.domains.geospatial import SENTINEL2_L1C_BANDS, read_raster  # noqa: E402
from domainfm.domains.geospatial.stats import compute_band_stats  # noqa: E402
from domainfm.domains.geospatial.windows import RasterWindowDataset  # noqa: E402

NAME = "geospatial_pipeline"
S2_GLOB = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/S2_L1C_*.tif"
MOSAIC_NAME = "S2_L1C_mosaic.tif"
SIDES = ("torchgeo", "ours")
GOAL = 3.0  # ours / TorchGeo patches/s we aim for
SETTINGS = (
    "patches",
    "batch_size",
    "workers",
    "scene_size",
    "mosaic_size",
    "mosaic_window",
    "mosaic_blocksize",
    "repeats",
    "threads",
    "profile_samples",
)


# -- data -------------------------------------------------------------------------------------
def scene_files() -> list[Path]:
    files = sorted(example_data_root().glob(S2_GLOB))
    if not files:
        raise FileNotFoundError(f"no file matches {S2_GLOB} under {example_data_root()}")
    return files


def write_mosaic(path: Path, scenes: list[Path], size: int, blocksize: int) -> dict[str, Any]:
    """``size`` x ``size`` x 13 float32 COG of the scenes' pixels, mirror-tiled (10 m pixels
    from the first scene's top-left corner, its CRS)."""
    stack = []
    for f in scenes:
        with rasterio.open(f) as src:
            stack.append(src.read())  # (13, 101, 100)
            crs, origin = src.crs, (src.transform.c, src.transform.f)
    count, h, w = stack[0].shape
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": count,
        "dtype": "float32",
        "crs": crs,
        "transform": rasterio.Affine(10.0, 0.0, origin[0], 0.0, -10.0, origin[1]),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "BIGTIFF": "IF_SAFER",
    }
    t0 = time.perf_counter()
    plain = path.with_name(path.stem + "_plain.tif")
    with rasterio.open(plain, "w", **profile) as dst:
        dst.descriptions = SENTINEL2_L1C_BANDS
        for i in range(-(-size // h)):  # one row of tiles at a time
            r0, rows = i * h, min(h, size - i * h)
            strip = np.empty((count, rows, size), dtype=np.float32)
            for j in range(-(-size // w)):
                tile = stack[(i + j) % len(stack)]
                tile = tile[:, ::-1] if i % 2 else tile  # mirror: no seams within a date
                tile = tile[:, :, ::-1] if j % 2 else tile
                c0 = j * w
                strip[:, :, c0 : c0 + w] = tile[:, :rows, : min(w, size - c0)]
            dst.write(strip, window=Window(0, r0, size, rows))
    rasterio.shutil.copy(
        plain,
        path,
        driver="COG",
        BLOCKSIZE=blocksize,
        COMPRESS="DEFLATE",
        PREDICTOR="YES",
        BIGTIFF="IF_SAFER",
    )
    plain.unlink()
    with rasterio.open(path) as src:
        layout = src.tags(ns="IMAGE_STRUCTURE")
        overviews = src.overviews(1)
    return {
        "path": str(path),
        "shape": [count, size, size],
        "bytes_on_disk": path.stat().st_size,
        "write_s": time.perf_counter() - t0,
        "blocksize": blocksize,
        "layout": layout,
        "overviews": overviews,
        "crs": str(crs),
        "transform": list(profile["transform"])[:6],
    }


# -- the two pipelines ------------------------------------------------------------------------
def torchgeo_dataset(files: list[Path]) -> Any:
    """A TorchGeo ``RasterDataset`` over the scenes (dated) or the mosaic (undated)."""
    from torchgeo.datasets import RasterDataset

    class S2Scenes(RasterDataset):  # type: ignore[misc]
        filename_glob = "S2_L1C_*.tif"
        filename_regex = r"^S2_L1C_(?P<date>\d{4}-\d{2}-\d{2})\.tif$"
        date_format = "%Y-%m-%d"
        is_image = True
        separate_files = False
        all_bands = SENTINEL2_L1C_BANDS
        rgb_bands = ("B04", "B03", "B02")

    class S2Mosaic(S2Scenes):
        filename_glob = MOSAIC_NAME
        filename_regex = ".*"

    cls = S2Mosaic if files[0].name == MOSAIC_NAME else S2Scenes
    return cls(paths=[str(f) for f in files])


def build_torchgeo(spec: dict[str, Any]) -> Any:
    from torch.utils.data import DataLoader
    from torchgeo.datasets import stack_samples
    from torchgeo.samplers import RandomGeoSampler, Units

    dataset = torchgeo_dataset([Path(f) for f in spec["files"]])
    sampler = RandomGeoSampler(
        dataset,
        size=spec["size"],
        length=spec["batch_size"] + spec["patches"],
        units=Units.PIXELS,
        generator=torch.Generator().manual_seed(0),
    )
    return DataLoader(
        dataset,
        batch_size=spec["batch_size"],
        sampler=sampler,
        num_workers=spec["workers"],
        collate_fn=stack_samples,
    )


def ours_dataset(files: list[Path], size: int, n: int, stats_cache: str) -> RasterWindowDataset:
    stats = compute_band_stats(files, cache=stats_cache, band_names=SENTINEL2_L1C_BANDS)
    return RasterWindowDataset(
        files=files,
        size=size,
        band_names=SENTINEL2_L1C_BANDS,
        stats=stats,
        samples_per_epoch=n,
    )


def build_ours(spec: dict[str, Any]) -> Any:
    dataset = ours_dataset(
        [Path(f) for f in spec["files"]],
        spec["size"],
        spec["batch_size"] + spec["patches"],
        spec["stats_cache"],
    )
    return seeded_loader(
        dataset, batch_size=spec["batch_size"], seed=0, num_workers=spec["workers"]
    )


BUILDERS = {"torchgeo": (build_torchgeo, "image"), "ours": (build_ours, "input")}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """One run (in a child process): build the loader, one warm-up batch, time the rest."""
    torch.set_num_threads(spec["threads"])
    build, key = BUILDERS[spec["side"]]
    t0 = time.perf_counter()
    loader = build(spec)
    setup_s = time.perf_counter() - t0
    stamps: list[float] = []
    shape, dtype, patches = None, None, 0
    t1 = time.perf_counter()
    for batch in loader:
        x = batch[key]
        stamps.append(time.perf_counter())
        if shape is None:
            shape, dtype = list(x.shape), str(x.dtype)
            continue
        patches += x.shape[0]
    warmup_s, steady_s = stamps[0] - t1, stamps[-1] - stamps[0]
    half = (len(stamps) - 1) // 2  # batches in the first half of the timed ones
    late = (len(stamps) - 1 - half) * spec["batch_size"]
    late_s = stamps[-1] - stamps[half]
    return {
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "steady_s": steady_s,
        "patches": patches,
        "batch_shape": shape,
        "dtype": dtype,
        "patches_per_s": patches / steady_s,
        "second_half_patches_per_s": late / late_s,
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['side']} run failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# -- checks and profile (main process, outside the clock) -------------------------------------
def pixel_check(files: list[Path], size: int) -> dict[str, Any]:
    """Raw pixels of a few windows through TorchGeo vs ``read_raster``; does TorchGeo warp?"""
    from rasterio.vrt import WarpedVRT

    dataset = torchgeo_dataset(files)
    rng = np.random.default_rng(0)
    diffs, warped = [], []
    for f in files:
        handle = dataset._load_warp_file(str(f))
        warped.append(isinstance(handle, WarpedVRT))
        handle.close()
    for k in range(4):
        f = files[k % len(files)]
        with rasterio.open(f) as src:
            tr, height, width = src.transform, src.height, src.width
        row, col = int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
        x0, y1 = tr * (col, row)
        x1, y0 = tr * (col + size, row + size)
        when = dataset.index.index[list(dataset.index.filepath).index(str(f))]
        query = (slice(x0, x1), slice(y0, y1), slice(when.left, when.right))
        theirs = dataset[query]["image"].numpy()
        mine = read_raster(f, (row, col, size, size), band_names=SENTINEL2_L1C_BANDS).array
        same = theirs.shape == mine.shape
        diffs.append(float(np.abs(theirs - mine).max()) if same else float("inf"))
    return {"windows": len(diffs), "max_abs_diff_raw": max(diffs), "torchgeo_warps": any(warped)}


def profile_ours(files: list[Path], size: int, n: int, stats_cache: str) -> dict[str, Any]:
    """cProfile of ``n`` windows of ours in this process (workers 0): own time per function."""
    dataset = ours_dataset(files, size, n, stats_cache)
    dataset[(0, 0)]
    t0 = time.perf_counter()
    for i in range(n):
        dataset[(i, i)]
    plain_ms = (time.perf_counter() - t0) / n * 1000
    prof = cProfile.Profile()
    prof.enable()
    for i in range(n):
        dataset[(i, i)]
    prof.disable()
    st = pstats.Stats(prof)
    total = st.total_tt  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:10]  # type: ignore[attr-defined]
    top = [
        {
            "function": f"{Path(file).name}:{line}({func})",
            "own_ms_per_window": own / n * 1000,
            "share": own / total,
        }
        for (file, line, func), (_, _, own, _, _) in rows
    ]
    return {
        "windows": n,
        "ms_per_window": plain_ms,
        "ms_per_window_profiled": total / n * 1000,
        "top_own_time": top,
    }


# -- report -----------------------------------------------------------------------------------
def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    import torchgeo

    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        model = next(
            (
                s.split(":", 1)[1].strip()
                for s in Path("/proc/cpuinfo").read_text().splitlines()
                if s.startswith("model name")
            ),
            model,
        )
    cachemax = get_gdal_config("GDAL_CACHEMAX")
    if isinstance(cachemax, int | float) or str(cachemax).isdigit():
        cachemax = f"{int(cachemax) / 2**20:.0f} MiB"  # GDAL's default: 5 % of the RAM
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "torch_threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchgeo": torchgeo.__version__,
        "rasterio": rasterio.__version__,
        "gdal": rasterio.__gdal_version__,
        "numpy": np.__version__,
        "gdal_cachemax": cachemax,
        "load_avg_start": os.getloadavg(),
    }


def render(report: dict[str, Any]) -> str:
    m, st = report["machine"], report["settings"]
    busy = max(m["load_avg_start"][0], m["load_avg_end"][0]) > 0.5 * m["cpus_available"]
    lines = [
        "domainfm RasterWindowDataset + seeded_loader vs TorchGeo RasterDataset + "
        "RandomGeoSampler: patches/s from GeoTIFFs",
        f"command: {report['command']}",
        f"date: {report['date']}",
        f"machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['cpus_available']} "
        f"available), torch threads {m['torch_threads']} (loader workers 1 each)",
        f"versions: python {m['python']}, torch {m['torch']}, torchgeo {m['torchgeo']}, "
        f"rasterio {m['rasterio']}, GDAL {m['gdal']}, numpy {m['numpy']}; GDAL_CACHEMAX "
        f"{m['gdal_cachemax']} per process",
        f"load average at start {tuple(round(v, 2) for v in m['load_avg_start'])}, at end "
        f"{tuple(round(v, 2) for v in m['load_avg_end'])}"
        + (
            ": the machine was shared with other jobs (the ratio is measured in the same run)"
            if busy
            else ""
        ),
        f"settings: batch {st['batch_size']}, {st['patches']} timed patches after 1 warm-up "
        f"batch, workers {st['workers']}, {st['repeats']} repeat(s) (median), every run in a "
        "fresh subprocess, sides alternating",
        "TorchGeo: RasterDataset (all 13 bands, no normalization) + RandomGeoSampler(size=S, "
        "units=PIXELS) + DataLoader(collate_fn=stack_samples); handles cached per worker, "
        "reads via rasterio.merge.",
        "ours: RasterWindowDataset (all 13 bands, normalized with per-band stats computed "
        "beforehand, validity mask) + seeded_loader (no MAE masking); handles cached per "
        "worker (RasterReader).",
    ]
    for ds in report["datasets"]:
        ck = ds["pixel_check"]
        lines += ["", f"== {ds['name']}: {ds['description']}"]
        lines.append(
            f"   pixel check, {ck['windows']} windows: max |torchgeo - ours raw| "
            f"{ck['max_abs_diff_raw']:g}; TorchGeo warps the file: {ck['torchgeo_warps']}; "
            f"ours' band stats computed in {ds['stats_s']:.2f} s (once, cached, untimed)"
        )
        lines.append(
            f"   {'workers':>7} {'pipeline':<9}{'patches':>8}{'setup s':>9}{'warm-up s':>10}"
            f"{'timed s':>9}{'patches/s':>11}{'2nd half/s':>11}{'ours/tg':>9}{'2nd half':>9}"
        )
        for w, row in ds["summary"].items():
            for side in SIDES:
                s = row[side]
                ratio = (
                    f"{row['ratio']:>9.2f}{row['second_half_ratio']:>9.2f}"
                    if side == "ours"
                    else ""
                )
                lines.append(
                    f"   {w:>7} {side:<9}{s['patches']:>8}{s['setup_s']:>9.2f}"
                    f"{s['warmup_s']:>10.2f}{s['steady_s']:>9.2f}{s['patches_per_s']:>11.1f}"
                    f"{s['second_half_patches_per_s']:>11.1f}{ratio}"
                )
        prof = ds.get("profile")
        if prof:
            lines.append(
                f"   profile of ours (main process, {prof['windows']} windows): "
                f"{prof['ms_per_window']:.2f} ms/window ({prof['ms_per_window_profiled']:.2f} "
                "under cProfile); own time (_read_open's includes rasterio's Cython "
                "DatasetReader.read, i.e. GDAL's block decode):"
            )
            for r in prof["top_own_time"][:6]:
                lines.append(
                    f"      {r['share']:>5.0%} {r['own_ms_per_window']:>6.2f} ms  {r['function']}"
                )
    head = report["headline_ratio"]
    met = min(head.values()) >= GOAL
    lines += [
        "",
        f"HEADLINE patches/s ours / TorchGeo, {st['workers'][0]} workers: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in head.items())
        + f"  (goal >= {GOAL:.0f}x: {'met' if met else 'NOT met'})",
    ]
    return "\n".join(lines) + "\n"


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    keys = ("setup_s", "warmup_s", "steady_s", "patches_per_s", "second_half_patches_per_s")
    out: dict[str, Any] = {}
    for side in SIDES:
        out[side] = {k: statistics.median(r[k] for r in runs[side]) for k in keys}
        out[side]["patches"] = runs[side][0]["patches"]
        out[side]["batch_shape"] = runs[side][0]["batch_shape"]
        out[side]["dtype"] = runs[side][0]["dtype"]
    for key, name in (
        ("patches_per_s", "ratio"),
        ("second_half_patches_per_s", "second_half_ratio"),
    ):
        out[name] = statistics.median(
            o[key] / t[key] for o, t in zip(runs["ours"], runs["torchgeo"], strict=True)
        )
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patches", type=int, default=2048, help="timed patches per run")
    p.add_argument("--batch-size", type=int, default=32, help="windows per batch (both)")
    p.add_argument(
        "--workers", type=int, nargs="+", default=[2, 0], help="loader workers; first: headline"
    )
    p.add_argument("--scene-size", type=int, default=32, help="window S on the 101x100 scenes")
    p.add_argument("--mosaic-size", type=int, default=4096, help="mosaic side in pixels")
    p.add_argument("--mosaic-window", type=int, default=64, help="window S on the mosaic")
    p.add_argument("--mosaic-blocksize", type=int, default=512, help="COG block size")
    p.add_argument("--repeats", type=int, default=1, help="runs per side and setting (median)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (both)")
    p.add_argument("--profile-samples", type=int, default=300, help="0: no cProfile of ours")
    p.add_argument("--workdir", default=None, help="where the temporary mosaic goes")
    p.add_argument("--quick", action="store_true", help="< 1 min smoke run; prints only")
    p.add_argument(
        "--out-dir",
        default=None,
        help=f"where {NAME}.txt/.json go (default benchmarks/results; nothing written with "
        "--quick unless given)",
    )
    if p.parse_known_args(argv)[0].quick:  # tiny defaults; flags given explicitly still win
        p.set_defaults(patches=96, batch_size=16, workers=[0], mosaic_size=1024, profile_samples=0)
    args = p.parse_args(argv)
    for name in ("patches", "batch_size", "scene_size", "mosaic_window", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {name}={getattr(args, name)}")
    if args.patches % args.batch_size:
        raise ValueError(
            f"patches={args.patches} must be a multiple of batch_size={args.batch_size}"
        )
    if any(w < 0 for w in args.workers):
        raise ValueError(f"workers must be >= 0, got workers={args.workers}")
    if args.mosaic_size < max(args.mosaic_window, 512):
        raise ValueError(f"mosaic_size must be >= 512 and the window, got {args.mosaic_size}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    raw = sys.argv[1:] if argv is None else argv
    if raw[:1] == ["--child"]:
        print(json.dumps(measure(json.loads(raw[1]))))
        return {}
    args = parse_args(argv)
    try:
        import torchgeo  # noqa: F401
    except ImportError as err:
        raise SystemExit(
            f"this benchmark needs TorchGeo as the baseline: pip install torchgeo ({err})"
        ) from err
    report: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]) if argv is None else f"main({argv})",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(args),
        "settings": {k: getattr(args, k) for k in SETTINGS},
        "datasets": [],
    }
    scenes = scene_files()
    with tempfile.TemporaryDirectory(prefix="domainfm-bench-geo-", dir=args.workdir) as tmp:
        print(f"writing the {args.mosaic_size}^2 COG mosaic", file=sys.stderr, flush=True)
        mosaic = write_mosaic(
            Path(tmp) / MOSAIC_NAME, scenes, args.mosaic_size, args.mosaic_blocksize
        )
        datasets = [
            (
                "scenes",
                scenes,
                args.scene_size,
                f"{len(scenes)} shipped S2 L1C scenes, 13 x 101 x 100 float32 each, "
                f"S = {args.scene_size}",
                None,
            ),
            (
                "mosaic",
                [Path(mosaic["path"])],
                args.mosaic_window,
                f"COG mosaic of the scenes' pixels, 13 x {args.mosaic_size} x "
                f"{args.mosaic_size} float32, {args.mosaic_blocksize}^2 blocks, DEFLATE + "
                f"float predictor, {mosaic['bytes_on_disk'] / 2**20:.0f} MiB, written in "
                f"{mosaic['write_s']:.0f} s, S = {args.mosaic_window}",
                mosaic,
            ),
        ]
        for name, files, size, description, extra in datasets:
            stats_cache = str(Path(tmp) / f"stats_{name}.json")
            t0 = time.perf_counter()
            compute_band_stats(files, cache=stats_cache, band_names=SENTINEL2_L1C_BANDS)
            stats_s = time.perf_counter() - t0
            entry: dict[str, Any] = {
                "name": name,
                "description": description,
                "files": [str(f) for f in files],
                "window": size,
                "stats_s": stats_s,
                "pixel_check": pixel_check(files, size),
                "runs": {},
                "summary": {},
            }
            if extra is not None:
                entry["mosaic"] = extra
            k = 0
            for workers in args.workers:
                runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
                for r in range(args.repeats):
                    order = SIDES if k % 2 == 0 else SIDES[::-1]
                    k += 1
                    for side in order:
                        print(
                            f"[{name}] workers {workers} repeat {r}: {side}",
                            file=sys.stderr,
                            flush=True,
                        )
                        spec = {
                            "side": side,
                            "files": entry["files"],
                            "size": size,
                            "batch_size": args.batch_size,
                            "patches": args.patches,
                            "workers": workers,
                            "threads": args.threads,
                            "stats_cache": stats_cache,
                        }
                        runs[side].append(run_child(spec))
                entry["runs"][str(workers)] = runs
                entry["summary"][str(workers)] = summarize(runs)
            if args.profile_samples:
                print(f"[{name}] profile of ours", file=sys.stderr, flush=True)
                entry["profile"] = profile_ours(files, size, args.profile_samples, stats_cache)
            report["datasets"].append(entry)
    report["machine"]["load_avg_end"] = os.getloadavg()
    head = str(args.workers[0])
    report["headline_ratio"] = {d["name"]: d["summary"][head]["ratio"] for d in report["datasets"]}
    report["goal"] = GOAL
    report["goal_met"] = min(report["headline_ratio"].values()) >= GOAL
    text = render(report)
    print(text)
    out = args.out_dir or (None if args.quick else str(REPO / "benchmarks" / "results"))
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{NAME}.txt").write_text(text)
        (Path(out) / f"{NAME}.json").write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {Path(out) / NAME}.txt and .json", file=sys.stderr)
    return report


if __name__ == "__main__":
    main()
