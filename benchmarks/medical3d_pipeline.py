"""SSL crops/s from NIfTI: domainfm's volume pipeline vs a plain MONAI pipeline, same run.

Baseline ("plain MONAI"): ``monai.data.Dataset`` over ``[{"image": path}, ...]`` with
``Compose([LoadImaged, EnsureChannelFirstd, Orientationd("RAS"), Spacingd(spacing,
"bilinear", dtype=float32), ScaleIntensityRanged(-1000, 1000 -> 0, 1, clip) | for MRI
ScaleIntensityRangePercentilesd(0.5, 99.5 -> 0, 1, clip, channel_wise), SpatialPadd(crop),
RandSpatialCropSamplesd(crop, num_samples=K)])`` through a ``torch.utils.data.DataLoader``
(batch 1 volume = K crops, ``list_data_collate``, MONAI's ``worker_init_fn``). Every item
re-reads and re-resamples its volume: an epoch is len(files) loads x K crops.
Orientationd and SpatialPadd are in the baseline so that both pipelines apply identical
preprocessing (checked below: max |baseline - ours| on the first file).

Ours: ``VolumePretrainDataModule`` (same spacing, crop, samples_per_volume = K, batch K,
workers): ``VolumeCropDataset`` preprocesses every volume once at construction ("setup"),
then its ``StatefulDataLoader`` (``SeededSampler``, ``MaskingCollate``: masks drawn too) cuts
crops from memory. With a ``cache_dir`` argument (when the dataset has one), the row
"ours, warm cache" constructs the dataset from a cache filled beforehand.

Timing: same ``torch.set_num_threads`` in the main process (loader workers use 1 thread each,
as PyTorch sets), same workers (persistent in both). The first batch (worker start-up and
one batch) is warm-up, excluded for both. (a) steady = crops after the warm-up / their time;
(b) end-to-end = the same crops / (setup + their time): the headline. Pipelines run in an
order rotating across ``--repeats``; medians are reported, ratios are medians of per-repeat
(paired) ratios. A projection gives (b) at other run lengths from the measured setup and
steady rates (ours' setup preprocesses the volumes once, in as many threads as loader
workers; MONAI spreads its loads over the workers, so (b) grows with E towards (a)). Peak RSS
(approx.): growth of the main process (VmHWM reset through /proc/self/clear_refs) and the
largest loader worker's VmHWM (pages shared with the main process counted too).

Usage::

    python benchmarks/medical3d_pipeline.py                 # writes benchmarks/results/
    python benchmarks/medical3d_pipeline.py --quick         # tiny smoke run, prints only
    python benchmarks/medical3d_pipeline.py --epochs 10 --workers 4 --out-dir /tmp/bench
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import monai  # noqa: E402
import torch  # noqa: E402
from monai import transforms as mt  # noqa: E402
from monai.data import Dataset, list_data_collate, worker_init_fn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from domainfm.core.masking import MaskingSpec  # noqa: E402
from domainfm.data.data_root import example_data_root, resolve_data_path  # noqa: E402
from domainfm.domains.medical3d import VolumePretrainDataModule  # noqa: E402
from domainfm.domains.medical3d.volumes import VolumeCropDataset  # noqa: E402

NAME = "medical3d_pipeline"
CT_FILES = [
    "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz",
    "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz",
]
MNI_T1 = "medical/mni152_2009_nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
BRATS_GLOB = "medical/brats2015_deepmedic/*/*/Flair_subtrMeanDivStd.nii.gz"
INTENSITY = {
    "ct": "ScaleIntensityRanged(a_min=-1000, a_max=1000, b_min=0, b_max=1, clip=True)",
    "mri": "ScaleIntensityRangePercentilesd(lower=0.5, upper=99.5, b_min=0, b_max=1, "
    "clip=True, channel_wise=True)",
}
SETTINGS = ("crop", "spacing", "samples_per_volume", "epochs", "workers", "repeats", "max_files")
TIMES = (
    "setup_s",
    "warmup_s",
    "steady_s",
    "end_to_end_s",
    "steady_crops_per_s",
    "end_to_end_crops_per_s",
)
GOAL = 3.0  # the end-to-end speed-up we aim for


def row_files(max_files: int | None) -> dict[str, list[Path]]:
    brats = sorted(
        str(p.relative_to(example_data_root())) for p in example_data_root().glob(BRATS_GLOB)
    )
    rows = {"ct": CT_FILES, "mri": [MNI_T1, *brats]}
    return {k: [resolve_data_path(f) for f in v[:max_files]] for k, v in rows.items()}


# -- the two pipelines ------------------------------------------------------------------------
def baseline_transform(modality: str, args: argparse.Namespace, *, crop: bool = True) -> Any:
    k, size, pixdim = "image", (args.crop,) * 3, (args.spacing,) * 3
    intensity = (
        mt.ScaleIntensityRanged(keys=k, a_min=-1000, a_max=1000, b_min=0, b_max=1, clip=True)
        if modality == "ct"
        else mt.ScaleIntensityRangePercentilesd(
            keys=k, lower=0.5, upper=99.5, b_min=0, b_max=1, clip=True, channel_wise=True
        )
    )
    steps = [
        mt.LoadImaged(keys=k),
        mt.EnsureChannelFirstd(keys=k),
        mt.Orientationd(keys=k, axcodes="RAS"),
        # float32 as ours (MONAI's default computes in float64)
        mt.Spacingd(keys=k, pixdim=pixdim, mode="bilinear", dtype=torch.float32),
        intensity,
        mt.SpatialPadd(keys=k, spatial_size=size),
    ]
    if crop:
        steps.append(
            mt.RandSpatialCropSamplesd(
                keys=k, roi_size=size, random_size=False, num_samples=args.samples_per_volume
            )
        )
    return mt.Compose(steps)


def build_baseline(files: list[Path], modality: str, args: argparse.Namespace) -> DataLoader:
    dataset = Dataset([{"image": str(f)} for f in files], baseline_transform(modality, args))
    return DataLoader(
        dataset,
        batch_size=1,
        shuffle=True,
        num_workers=args.workers,
        collate_fn=list_data_collate,
        worker_init_fn=worker_init_fn,
        persistent_workers=args.workers > 0,
    )


def build_ours(
    files: list[Path], modality: str, args: argparse.Namespace, cache_dir: Path | None = None
) -> Any:
    dm = VolumePretrainDataModule(
        files=[str(f) for f in files],
        crop_size=args.crop,
        spacing=args.spacing,
        modality=modality,
        masking=MaskingSpec(patch_size=math.gcd(args.crop, 16), ratio=0.75),
        samples_per_volume=args.samples_per_volume,
        batch_size=args.samples_per_volume,
        num_workers=args.workers,
        seed=0,
        cache_dir=str(cache_dir) if cache_dir is not None else None,
    )
    dm.setup("fit")  # preprocesses the volumes (in `workers` threads) or reads the cache
    return dm.train_dataloader()


# -- measurement ------------------------------------------------------------------------------
def _status_kib(pid: int | str, key: str) -> int | None:
    with contextlib.suppress(OSError, StopIteration, ValueError):
        text = Path(f"/proc/{pid}/status").read_text().splitlines()
        return int(next(s for s in text if s.startswith(key + ":")).split()[1])
    return None


def run_pipeline(build: Callable[[], Any], key: str, epochs: int) -> dict[str, Any]:
    """Build a loader (setup, timed), then iterate ``epochs`` epochs; first batch = warm-up."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    rss0 = _status_kib("self", "VmRSS")
    t0 = time.perf_counter()
    loader = build()
    setup_s = time.perf_counter() - t0
    crops, shape, t_first, warmup_s = 0, None, 0.0, 0.0
    t1 = time.perf_counter()
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)  # as Lightning does
        for batch in loader:
            x = batch[key]
            if shape is None:
                shape, t_first = list(x.shape), time.perf_counter()
                warmup_s = t_first - t1
                continue
            crops += x.shape[0]
    steady_s = time.perf_counter() - t_first
    it = getattr(loader, "_iterator", None)
    workers = [w.pid for w in getattr(it, "_workers", [])]
    worker_kib = [k for k in (_status_kib(p, "VmHWM") for p in workers) if k is not None]
    with contextlib.suppress(AttributeError):
        it._shutdown_workers()  # type: ignore[union-attr]
    hwm = _status_kib("self", "VmHWM")
    del loader, it
    return {
        "setup_s": setup_s,
        "warmup_s": warmup_s,
        "steady_s": steady_s,
        "crops": crops,
        "batch_shape": shape,
        "steady_crops_per_s": crops / steady_s,
        "end_to_end_s": setup_s + steady_s,
        "end_to_end_crops_per_s": crops / (setup_s + steady_s),
        "main_peak_rss_growth_mib": (hwm - rss0) / 1024 if hwm and rss0 else None,
        "worker_peak_rss_mib": max(worker_kib) / 1024 if worker_kib else None,
    }


def preprocessing_check(
    files: list[Path], modality: str, args: argparse.Namespace, cache_dir: Path | None
) -> dict[str, Any]:
    """Outside the clock: fill the cache (if any) and compare both preprocessings on file 0."""
    extra = {"cache_dir": cache_dir} if cache_dir is not None else {}
    ours = VolumeCropDataset(
        files=files, crop_size=args.crop, spacing=args.spacing, modality=modality, **extra
    ).volumes[0]
    base = baseline_transform(modality, args, crop=False)({"image": str(files[0])})["image"]
    base = base.as_tensor().float()
    same = tuple(base.shape) == tuple(ours.shape)
    return {
        "file": str(files[0]),
        "shape": list(ours.shape),
        "same_shape": same,
        "max_abs_diff": float((base - ours).abs().max()) if same else None,
    }


def summarize(
    runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace, n_files: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    base = runs["monai"]
    for name, rs in runs.items():
        s = {k: statistics.median(r[k] for r in rs) for k in TIMES}
        s["crops"], s["batch_shape"] = rs[0]["crops"], rs[0]["batch_shape"]
        for k in ("steady_crops_per_s", "end_to_end_crops_per_s"):
            s[f"{k}_ratio_vs_monai"] = statistics.median(
                r[k] / b[k] for r, b in zip(rs, base, strict=True)
            )
        for k in ("main_peak_rss_growth_mib", "worker_peak_rss_mib"):
            vals = [r[k] for r in rs if r[k] is not None]
            s[k] = max(vals) if vals else None
        out[name] = s
    # projection of (b) to other run lengths from the measured setup and per-crop times
    per_epoch = n_files * args.samples_per_volume
    b = out["monai"]
    out["projected_end_to_end_ratio"] = {
        name: {
            str(e): (b["setup_s"] + per_epoch * e / b["steady_crops_per_s"])
            / (s["setup_s"] + per_epoch * e / s["steady_crops_per_s"])
            for e in (1, 3, 10, 100)
        }
        for name, s in out.items()
        if name != "monai"
    }
    return out


# -- report -----------------------------------------------------------------------------------
def machine_info(args: argparse.Namespace) -> dict[str, Any]:
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
    return {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "cpus_available": len(os.sched_getaffinity(0)),
        "torch_threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "load_avg_start": os.getloadavg(),
    }


def render(report: dict[str, Any]) -> str:
    m, st = report["machine"], report["settings"]
    lines = [
        "domainfm VolumePretrainDataModule vs plain MONAI pipeline: SSL crops/s from NIfTI",
        f"command: {report['command']}",
        f"date: {report['date']}",
        f"machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['cpus_available']} "
        f"available), torch threads {m['torch_threads']} (loader workers 1 each)",
        f"versions: python {m['python']}, torch {m['torch']}, monai {m['monai']}",
        f"load average at start {tuple(round(v, 2) for v in m['load_avg_start'])}, at end "
        f"{tuple(round(v, 2) for v in m['load_avg_end'])}",
        f"settings: crop {st['crop']}^3, spacing {st['spacing']} mm, K = {st['samples_per_volume']}"
        f" crops per volume per epoch, {st['epochs']} epochs, {st['workers']} workers, "
        f"{st['samples_per_volume']} crops per batch, {st['repeats']} repeats (median)",
        "Both pipelines: LoadImage, channel first, Orientation RAS, Spacing bilinear, intensity"
        " (below), SpatialPad to the crop: identical preprocessing. MONAI re-does it per volume"
        " load (K crops each, RandSpatialCropSamplesd); ours once at setup, then crops from "
        "memory + masks (MaskingCollate, ratio 0.75).",
        "(a) steady = crops after the warm-up batch / their time; (b) end-to-end = the same "
        "crops / (setup + their time). Headline: (b). Ours' setup preprocesses each volume "
        "once, in as many threads as loader workers; MONAI repeats it every epoch.",
    ]
    for row in report["rows"]:
        ck = row["preprocessing_check"]
        lines += [
            "",
            f"== {row['row']}: {len(row['files'])} files, baseline intensity "
            f"{INTENSITY[row['modality']]}",
            f"   preprocessing check on {Path(ck['file']).name}: shape {ck['shape']}, "
            f"same shape {ck['same_shape']}, max |monai - ours| {ck['max_abs_diff']}",
            f"   {'pipeline':<18}{'crops':>6}{'setup s':>9}{'steady s':>9}"
            f"{'(a) crops/s':>12}{'x monai':>8}{'e2e s':>8}{'(b) crops/s':>12}"
            f"{'x monai':>8}{'main dRSS':>10}{'worker RSS':>11}",
        ]
        for name, s in row["summary"].items():
            if name == "projected_end_to_end_ratio":
                continue
            rss = [
                f"{v:.0f} MiB" if v is not None else "n/a"
                for v in (s["main_peak_rss_growth_mib"], s["worker_peak_rss_mib"])
            ]
            lines.append(
                f"   {name:<18}{s['crops']:>6}{s['setup_s']:>9.2f}{s['steady_s']:>9.2f}"
                f"{s['steady_crops_per_s']:>12.1f}{s['steady_crops_per_s_ratio_vs_monai']:>8.2f}"
                f"{s['end_to_end_s']:>8.2f}{s['end_to_end_crops_per_s']:>12.1f}"
                f"{s['end_to_end_crops_per_s_ratio_vs_monai']:>8.2f}{rss[0]:>10}{rss[1]:>11}"
            )
        for name, proj in row["summary"]["projected_end_to_end_ratio"].items():
            lines.append(
                f"   projected (b) x monai for {name} at E epochs (from setup and (a)):"
                + ", ".join(f" E={e}: {v:.2f}" for e, v in proj.items())
            )
    head = report["headline_end_to_end_ratio"]
    lines += [
        "",
        f"HEADLINE (b) end-to-end crops/s, ours (cold, setup included) / MONAI, "
        f"{st['epochs']} epochs: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in head.items())
        + f"  (goal >= {GOAL:.0f}x: {'met' if min(head.values()) >= GOAL else 'not met'})",
    ]
    for label, name, key in (
        ("(a) steady crops/s, ours / MONAI", "ours", "steady"),
        ("(b) end-to-end, ours with a warm cache / MONAI", "ours, warm cache", "end_to_end"),
    ):
        ratios = {
            row["row"]: row["summary"][name][f"{key}_crops_per_s_ratio_vs_monai"]
            for row in report["rows"]
            if name in row["summary"]
        }
        if ratios:
            lines.append(
                f"         {label}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crop", type=int, default=64, help="crop edge in voxels (both)")
    p.add_argument("--spacing", type=float, default=1.5, help="target spacing in mm (both)")
    p.add_argument("--samples-per-volume", type=int, default=8, help="K: crops per volume load")
    p.add_argument("--epochs", type=int, default=3, help="E: epochs per run")
    p.add_argument("--workers", type=int, default=2, help="loader workers (both)")
    p.add_argument("--repeats", type=int, default=2, help="runs per pipeline, order rotating")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (both)")
    p.add_argument("--max-files", type=int, default=None, help="first N files of each row")
    p.add_argument("--quick", action="store_true", help="tiny smoke run; prints only")
    p.add_argument(
        "--out-dir",
        default=None,
        help="where medical3d_pipeline.txt/.json go "
        "(default benchmarks/results; nothing written with --quick unless given)",
    )
    if p.parse_known_args(argv)[0].quick:  # tiny defaults; flags given explicitly still win
        p.set_defaults(
            crop=32, spacing=3.0, samples_per_volume=2, epochs=2, workers=1, repeats=1, max_files=1
        )
    args = p.parse_args(argv)
    for name in ("crop", "samples_per_volume", "epochs", "repeats", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {name}={getattr(args, name)}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", module=r"monai\..*|pydicom\..*|nibabel\..*")
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]) if argv is None else f"main({argv})",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine_info(args),
        "settings": {k: getattr(args, k) for k in SETTINGS},
        "rows": [],
    }
    with tempfile.TemporaryDirectory(prefix="domainfm-bench-cache-") as tmp:
        for modality, files in row_files(args.max_files).items():
            if args.epochs * len(files) < 2:
                raise ValueError(
                    f"epochs={args.epochs} x {len(files)} files leaves no batch "
                    "after the warm-up batch: raise --epochs"
                )
            cache = Path(tmp) / modality
            builders: dict[str, tuple[Callable[[], Any], str]] = {
                "monai": (lambda f=files, m=modality: build_baseline(f, m, args), "image"),
                "ours": (lambda f=files, m=modality: build_ours(f, m, args), "input"),
            }
            builders["ours, warm cache"] = (
                lambda f=files, m=modality, c=cache: build_ours(f, m, args, c),
                "input",
            )
            print(f"[{modality}] preprocessing check / cache fill", file=sys.stderr, flush=True)
            check = preprocessing_check(files, modality, args, cache)
            names, runs = list(builders), {n: [] for n in builders}
            for r in range(args.repeats):
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    print(f"[{modality}] repeat {r}: {name}", file=sys.stderr, flush=True)
                    build, key = builders[name]
                    runs[name].append(run_pipeline(build, key, args.epochs))
            report["rows"].append(
                {
                    "row": modality.upper(),
                    "modality": modality,
                    "files": [str(f) for f in files],
                    "preprocessing_check": check,
                    "runs": runs,
                    "summary": summarize(runs, args, len(files)),
                }
            )
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["headline_end_to_end_ratio"] = {
        row["row"]: row["summary"]["ours"]["end_to_end_crops_per_s_ratio_vs_monai"]
        for row in report["rows"]
    }
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
