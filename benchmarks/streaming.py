"""Streaming from prepared shards vs the file-based data modules: samples/s and peak memory,
1x to 8x data, per domain, same run.

Paths compared (both produce MAE single samples with their masks, drawn in the loader
workers by ``MaskingCollate``; same batch size in samples, same ``num_workers``):

* **file** (the baseline): the domain's ``*PretrainDataModule.train_dataloader()`` over the
  raw files — medical: ``VolumePretrainDataModule`` (every volume loaded, resampled and held
  in memory at ``setup``, crops cut from memory); geospatial: ``RasterPretrainDataModule``
  (a windowed GeoTIFF read per sample); audio: ``AudioPretrainDataModule`` (seek + decode +
  resample of each segment).
* **streaming**: ``prepare_shards(<Domain>Preparer, corpus, shards, num_workers=W)`` once per
  size (timed separately, *not* part of samples/s), then
  ``Streaming<Domain>DataModule.train_dataloader()`` (LitData ``StreamingDataLoader``).

Equal work per sample (one epoch holds the same number of samples in both paths):

* medical (CT, spacing 3 mm, crop 64³, patch 16): ``samples_per_volume`` K crops per volume
  per epoch in both; streaming batches ``volumes_per_batch`` volumes × K crops, the file path
  batches the same number of crops.
* geospatial (S2 L1C, 13 bands; chip 32, window 32, patch 8): the streaming epoch is one
  window per prepared chip; the file path gets ``samples_per_epoch`` = that chip count.
* audio (librosa clips, BYOL-A log-mel at 16 kHz, 96 frames, patch 16; items of 10 s): the
  streaming epoch is one segment per prepared item; the file path gets ``samples_per_epoch``
  = that item count. Both normalize with the same statistics (the prepared manifest's; the
  file path would otherwise decode every file at ``setup`` to compute them).

Nx corpora: the real files N times under distinct names in a temporary folder. Medical and
audio: symlinks (``c<k>_<name>``). Geospatial: rasters on one grid are the dates of one
place, so N symlinks would make one place of 5N dates (the same 16 chips, each with more
dates); instead each copy ``place<k>/`` is written with rasterio with its transform shifted
east by ``k`` × (raster width + 1 km): N places of the 5 real dates, identical pixels.

Measurement: each (domain, size, path, repeat) runs in a fresh subprocess (``--child``):
build the data module, ``setup("fit")`` (timed: "setup s"), then iterate the train loader
for whole epochs (``set_epoch`` on the file path's sampler, as Lightning does): at least
``--min-epochs`` (12) and at least the domain's ``--*-samples``, the same number of epochs of
the same size in both paths. The first batch (worker start-up) is warm-up, excluded;
samples/s = the other samples / their time. At least 12 epochs because LitData (0.2.76)
keeps the readers of the last 10 epochs (each with its window of decoded rows and its chunk
mmaps) alive in every loader worker through ``functools.lru_cache(maxsize=10)`` on methods of
its ``Shuffle`` classes: streaming memory climbs over the first ~10 epochs and then stays,
and comparing sizes at different epoch counts would compare that climb instead. Paths
alternate order per repeat; medians over repeats; "x file" is the median of the per-repeat
(paired) ratios streaming / file.

Memory of the whole process tree (main + loader workers): the parent polls ``/proc`` every
50 ms for the summed ``Pss_Anon`` ("anon": heap and tensors, pages shared between the main
process and its forked workers — the file path's volumes — counted once; this decides
"flat") and summed ``Pss`` (also libraries and files, whose shares depend on other processes
mapping them too), and the child reports ``ΣVmHWM`` (main's + each worker's own peak RSS,
summed: shared pages counted per process, an upper bound; ~0.8 GB of torch, lightning,
LitData and MONAI per process). psutil is not installed; ``/proc`` is read directly.

Usage::

    python benchmarks/streaming.py                  # writes benchmarks/results/streaming.*
    python benchmarks/streaming.py --quick          # smoke run (1x, 2x; 1 repeat), prints only
    python benchmarks/streaming.py --domains audio --sizes 1 8 --repeats 3 --out-dir /tmp/b
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import shutil
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

NAME = "streaming"
DOMAINS = ("medical3d", "geospatial", "audio")
PATHS = ("file", "streaming")
CT_FILES = (
    "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz",
    "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz",
)
S2_DIR = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10")
S2_BANDS += ("B11", "B12")
AUDIO_GLOB = ("audio/librosa_example_clips", "*.ogg")
FLAT = 1.10  # "flat": 8x peak within 10 % of 1x
POLL_S = 0.05


# -- /proc readers (no psutil here) -----------------------------------------------------------
def _proc_kib(pid: int | str, name: str, key: str) -> int | None:
    with contextlib.suppress(OSError, StopIteration, ValueError, IndexError):
        text = Path(f"/proc/{pid}/{name}").read_text().splitlines()
        return int(next(s for s in text if s.startswith(key + ":")).split()[1])
    return None


def _rollup(pid: int) -> dict[str, int]:
    """``/proc/<pid>/smaps_rollup`` in kiB (``{}`` once the process is gone)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, _, rest = line.partition(":")
            with contextlib.suppress(ValueError, IndexError):
                out[key] = int(rest.split()[0])
    return out


def tree_pids(root: int) -> list[int]:
    """``root`` and every descendant (``/proc/<pid>/task/<tid>/children``)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo += [int(c) for c in (task / "children").read_text().split()]
    return out


# -- corpora ----------------------------------------------------------------------------------
def data_root() -> Path:
    from domainfm.data.data_root import example_data_root

    return Path(example_data_root())


def make_corpus(domain: str, n: int, work: Path) -> Path:
    """The Nx corpus of ``domain`` under ``work`` (see the module docstring)."""
    root = data_root()
    out = work / f"{domain}-{n}x"
    out.mkdir(parents=True)
    if domain == "medical3d":
        for k in range(n):
            for rel in CT_FILES:
                src = root / rel
                (out / f"c{k}_{src.name}").symlink_to(src)
    elif domain == "audio":
        folder, pattern = AUDIO_GLOB
        for k in range(n):
            for src in sorted((root / folder).glob(pattern)):
                (out / f"c{k}_{src.name}").symlink_to(src)
    else:
        for k in range(n):
            place = _shifted_place(k, work / "geo-places")
            (out / place.name).mkdir()
            for tif in sorted(place.glob("*.tif")):
                (out / place.name / tif.name).symlink_to(tif)
    return out


def _shifted_place(k: int, places: Path) -> Path:
    """The real S2 dates written again with the transform shifted east by ``k`` × (width +
    1 km) (written once, shared by every size)."""
    import rasterio

    place = places / f"place{k}"
    if place.exists():
        return place
    place.mkdir(parents=True)
    for src in sorted((data_root() / S2_DIR).glob("*.tif")):
        with rasterio.open(src) as r:
            profile, array, tags = r.profile, r.read(), r.tags()
            band_tags = [r.tags(b) for b in range(1, r.count + 1)]
            descriptions, t = r.descriptions, r.transform
        shift = k * (profile["width"] * t.a + 1000.0)
        profile["transform"] = rasterio.Affine(t.a, t.b, t.c + shift, t.d, t.e, t.f)
        with rasterio.open(place / src.name, "w", **profile) as w:
            w.write(array)
            w.update_tags(**tags)
            for b, bt in enumerate(band_tags, start=1):
                w.update_tags(b, **bt)
            w.descriptions = descriptions
    return place


def preparer(domain: str, args: argparse.Namespace) -> Any:
    if domain == "medical3d":
        from domainfm.domains.medical3d.shards import VolumePreparer

        return VolumePreparer(spacing=args.spacing, modality="ct")
    if domain == "geospatial":
        from domainfm.domains.geospatial.shards import ChipPreparer

        return ChipPreparer(chip_size=args.chip, band_names=S2_BANDS)
    from domainfm.domains.audio.shards import AudioPreparer

    return AudioPreparer(segment_s=args.segment_s)


def prepare(domain: str, corpus: Path, shards: Path, args: argparse.Namespace) -> dict[str, Any]:
    from domainfm.data.shards import prepare_shards, read_manifest

    prep = preparer(domain, args)
    t0 = time.perf_counter()
    summary = prepare_shards(
        prep, corpus, shards, num_workers=args.workers, chunk_bytes=args.chunk_bytes
    )
    seconds = time.perf_counter() - t0
    if summary.skipped:
        raise RuntimeError(f"prepare skipped sources: {summary.skipped}")
    manifest = read_manifest(shards)
    files = [p for p in corpus.rglob("*") if p.is_file()]
    return {
        "prepare_s": seconds,
        "sources": manifest["totals"]["sources"],
        "items": manifest["totals"]["items"],
        "chunks": manifest["totals"]["chunks"],
        "shard_mib": manifest["totals"]["bytes"] / 2**20,
        "corpus_files": len(files),
        "corpus_mib": sum(p.stat().st_size for p in files) / 2**20,
        "stats_mean": manifest.get("stats", {}).get("mean"),
        "stats_std": manifest.get("stats", {}).get("std"),
    }


# -- the child: one (path, size) measurement --------------------------------------------------
def build_module(spec: dict[str, Any]) -> Any:
    from domainfm.core.masking import MaskingSpec

    d, a = spec["domain"], spec["args"]
    common = {"num_workers": a["workers"], "seed": 0}
    streaming = spec["path"] == "streaming"
    if d == "medical3d":
        k, per_batch = a["samples_per_volume"], a["volumes_per_batch"]
        if streaming:
            from domainfm.domains.medical3d.shards import StreamingVolumeDataModule

            return StreamingVolumeDataModule(
                shards=spec["shards"],
                crop_size=a["crop"],
                samples_per_volume=k,
                masking=MaskingSpec(patch_size=a["medical_patch"]),
                batch_size=per_batch,
                **common,
            )
        from domainfm.domains.medical3d import VolumePretrainDataModule

        files = sorted(str(p) for p in Path(spec["corpus"]).iterdir())
        return VolumePretrainDataModule(
            files=files,
            crop_size=a["crop"],
            spacing=a["spacing"],
            modality="ct",
            masking=MaskingSpec(patch_size=a["medical_patch"]),
            samples_per_volume=k,
            batch_size=k * per_batch,
            **common,
        )
    if d == "geospatial":
        if streaming:
            from domainfm.domains.geospatial.shards import StreamingRasterDataModule

            return StreamingRasterDataModule(
                shards=spec["shards"],
                size=a["window"],
                views=1,
                masking=MaskingSpec(patch_size=a["geo_patch"]),
                batch_size=a["geo_batch"],
                **common,
            )
        from domainfm.domains.geospatial import RasterPretrainDataModule

        return RasterPretrainDataModule(
            files=[f"{spec['corpus']}/*/*.tif"],
            size=a["window"],
            band_names=list(S2_BANDS),
            masking=MaskingSpec(patch_size=a["geo_patch"]),
            views=1,
            samples_per_epoch=spec["items"],
            sampling="random",
            batch_size=a["geo_batch"],
            **common,
        )
    if streaming:
        from domainfm.domains.audio.shards import StreamingAudioDataModule

        return StreamingAudioDataModule(
            shards=spec["shards"],
            frames=a["frames"],
            views="single",
            masking=MaskingSpec(patch_size=a["audio_patch"]),
            batch_size=a["audio_batch"],
            **common,
        )
    from domainfm.domains.audio import AudioPretrainDataModule, LogMelFrontend

    frontend = LogMelFrontend().with_stats(spec["stats_mean"][0], spec["stats_std"][0])
    return AudioPretrainDataModule(
        files=[f"{spec['corpus']}/*.ogg"],
        frontend=frontend,
        frames=a["frames"],
        views="single",
        masking=MaskingSpec(patch_size=a["audio_patch"]),
        samples_per_epoch=spec["items"],
        batch_size=a["audio_batch"],
        **common,
    )


def child(spec: dict[str, Any]) -> None:
    """Build, set up, iterate ``epochs`` whole epochs (the first batch is warm-up); print the
    result as the last stdout line."""
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(spec["args"]["threads"])
    package = f"domainfm.domains.{spec['domain']}"
    for module in (package, f"{package}.shards"):  # both paths' modules, outside the clock
        importlib.import_module(module)
    t0 = time.perf_counter()
    dm = build_module(spec)
    dm.setup("fit")
    setup_s = time.perf_counter() - t0
    loader = dm.train_dataloader()
    t1 = time.perf_counter()
    samples, batches, shape, per_epoch = 0, 0, None, []
    t_first = None
    for epoch in range(spec["epochs"]):
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # as Lightning does (the file path's SeededSampler)
        drawn = 0
        for batch in loader:
            if batch is None:
                continue
            x = batch["input"]
            drawn += x.shape[0]
            if t_first is None:
                t_first, shape = time.perf_counter(), list(x.shape)
                continue
            samples += x.shape[0]
            batches += 1
        per_epoch.append(drawn)
    t_last = time.perf_counter()
    me = os.getpid()  # persistent workers: still alive here, in both paths
    workers_hwm = [v for p in tree_pids(me) if p != me and (v := _proc_kib(p, "status", "VmHWM"))]
    if t_first is None or not samples:
        raise RuntimeError(f"{spec['path']}: no batch after the warm-up batch")
    steady_s = t_last - t_first
    result = {
        "setup_s": setup_s,
        "warmup_s": t_first - t1,
        "steady_s": steady_s,
        "samples": samples,
        "batches": batches,
        "epochs": spec["epochs"],
        "samples_per_epoch": per_epoch,
        "batch_shape": shape,
        "samples_per_s": samples / steady_s,
        "main_hwm_mib": (_proc_kib("self", "status", "VmHWM") or 0) / 1024,
        "workers_hwm_mib": [v / 1024 for v in workers_hwm],
        "load_avg": os.getloadavg(),
    }
    result["hwm_sum_mib"] = result["main_hwm_mib"] + sum(result["workers_hwm_mib"])
    print("RESULT " + json.dumps(result), flush=True)
    it = getattr(loader, "_iterator", None)
    with contextlib.suppress(Exception):
        it._shutdown_workers()  # type: ignore[union-attr]


def measure(spec: dict[str, Any], work: Path, timeout_s: float) -> dict[str, Any]:
    """Run one child, polling its process tree's Pss and RSS; its result plus the peaks."""
    out, err = work / "child.out", work / "child.err"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    peak_pss = peak_anon = peak_rss = 0
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, cwd=REPO)
        t0 = time.perf_counter()
        while proc.poll() is None:
            pids = tree_pids(proc.pid)
            rollups = [_rollup(p) for p in pids]
            pss = sum(r.get("Pss", 0) for r in rollups)
            anon = sum(r.get("Pss_Anon", 0) for r in rollups)
            rss = sum(_proc_kib(p, "status", "VmRSS") or 0 for p in pids)
            peak_pss, peak_anon = max(peak_pss, pss), max(peak_anon, anon)
            peak_rss = max(peak_rss, rss)
            if time.perf_counter() - t0 > timeout_s:
                proc.kill()
                proc.wait()
                break
            time.sleep(POLL_S)
    lines = [s for s in out.read_text().splitlines() if s.startswith("RESULT ")]
    if proc.returncode != 0 and not lines:
        tail = err.read_text()[-3000:]
        raise RuntimeError(f"child {spec['domain']}/{spec['path']} failed:\n{tail}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["wall_s"] = time.perf_counter() - t0
    result["pss_peak_mib"] = peak_pss / 1024
    result["anon_peak_mib"] = peak_anon / 1024
    result["rss_peak_mib"] = peak_rss / 1024
    return result


# -- the run ----------------------------------------------------------------------------------
def epoch_plan(domain: str, items: int, args: argparse.Namespace) -> tuple[int, int]:
    """``(samples per epoch, epochs per run)``: whole epochs, at least ``--min-epochs`` and
    at least the domain's minimum sample count."""
    per_epoch = items * args.samples_per_volume if domain == "medical3d" else items
    least = {"medical3d": args.medical_samples, "geospatial": args.geo_samples}.get(
        domain, args.audio_samples
    )
    return per_epoch, max(args.min_epochs, -(-least // per_epoch))


def run_domain(domain: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    log = lambda s: print(f"[{domain}] {s}", file=sys.stderr, flush=True)  # noqa: E731
    sizes: dict[str, Any] = {}
    for n in args.sizes:
        corpus = make_corpus(domain, n, work)
        shards = work / f"{domain}-{n}x-shards"
        prep = prepare(domain, corpus, shards, args)
        log(f"{n}x: prepared {prep['items']} items in {prep['prepare_s']:.1f} s")
        sizes[str(n)] = {"corpus": str(corpus), "shards": str(shards), "prepare": prep}
    for n in args.sizes:
        entry = sizes[str(n)]
        prep = entry["prepare"]
        entry["samples_per_epoch"], entry["epochs"] = epoch_plan(domain, prep["items"], args)
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
        for r in range(args.repeats):
            order = PATHS if r % 2 == 0 else PATHS[::-1]
            for path in order:
                spec = {
                    "domain": domain,
                    "path": path,
                    "corpus": entry["corpus"],
                    "shards": entry["shards"],
                    "items": prep["items"],
                    "stats_mean": prep["stats_mean"],
                    "stats_std": prep["stats_std"],
                    "epochs": entry["epochs"],
                    "args": {k: v for k, v in vars(args).items() if k not in ("child",)},
                }
                res = measure(spec, work, args.child_timeout)
                log(
                    f"{n}x r{r} {path}: {res['samples_per_s']:.1f} samples/s, setup "
                    f"{res['setup_s']:.2f} s, anon {res['anon_peak_mib']:.0f} MiB, PSS "
                    f"{res['pss_peak_mib']:.0f} MiB, "
                    f"ΣVmHWM {res['hwm_sum_mib']:.0f} MiB"
                )
                runs[path].append(res)
        entry["runs"] = runs
        entry["summary"] = summarize(runs)
    # remove this domain's corpora and shards (keeps /tmp small)
    for n in args.sizes:
        shutil.rmtree(sizes[str(n)]["shards"], ignore_errors=True)
    return {"sizes": sizes, "growth": growth(sizes, args.sizes)}


MEM = ("anon_peak_mib", "pss_peak_mib", "hwm_sum_mib")
MED = ("setup_s", "warmup_s", "samples_per_s", "rss_peak_mib", *MEM)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, rs in runs.items():
        s = {k: statistics.median(r[k] for r in rs) for k in MED}
        s["samples"] = rs[0]["samples"]
        s["epochs"] = rs[0]["epochs"]
        s["batch_shape"] = rs[0]["batch_shape"]
        s["samples_per_s_each"] = [r["samples_per_s"] for r in rs]
        out[path] = s
    out["ratio_streaming_vs_file"] = statistics.median(
        s["samples_per_s"] / f["samples_per_s"]
        for s, f in zip(runs["streaming"], runs["file"], strict=True)
    )
    return out


def growth(sizes: dict[str, Any], ns: list[int]) -> dict[str, Any]:
    lo, hi = str(min(ns)), str(max(ns))
    out: dict[str, Any] = {"from": f"{lo}x", "to": f"{hi}x"}
    for path in PATHS:
        a, b = sizes[lo]["summary"][path], sizes[hi]["summary"][path]
        out[path] = {key: {"ratio": b[key] / a[key], "delta_mib": b[key] - a[key]} for key in MEM}
        out[path]["flat"] = out[path]["anon_peak_mib"]["ratio"] <= FLAT
        out[path]["samples_per_s_ratio"] = b["samples_per_s"] / a["samples_per_s"]
    x = [float(n) for n in ns]
    y = [sizes[str(n)]["prepare"]["prepare_s"] for n in ns]
    slope, intercept = statistics.linear_regression(x, y)
    out["prepare_fit"] = {"fixed_s": intercept, "per_1x_s": slope}
    return out


# -- report -----------------------------------------------------------------------------------
def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    import litdata
    import torch

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
        "nice": os.nice(0),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "litdata": litdata.__version__,
        "load_avg_start": os.getloadavg(),
    }


DESCRIBE = {
    "medical3d": lambda a: (
        f"CT {', '.join(Path(f).name for f in CT_FILES)} (N copies each), spacing "
        f"{a['spacing']} mm, crop {a['crop']}^3, patch {a['medical_patch']}, "
        f"{a['samples_per_volume']} crops per volume per epoch, batch "
        f"{a['samples_per_volume'] * a['volumes_per_batch']} crops (streaming: "
        f"{a['volumes_per_batch']} volume(s) x {a['samples_per_volume']}); file path holds "
        "float32 volumes, shards store float16; unit: crops"
    ),
    "geospatial": lambda a: (
        f"S2 L1C 13 bands, 5 dates x N places (shifted copies), chip {a['chip']}, window "
        f"{a['window']}, patch {a['geo_patch']}, batch {a['geo_batch']}; epoch = one window "
        "per prepared chip (file: samples_per_epoch = chips); unit: windows"
    ),
    "audio": lambda a: (
        f"{AUDIO_GLOB[0]}/{AUDIO_GLOB[1]} (N copies each), BYOL-A log-mel 16 kHz, "
        f"{a['frames']} frames, patch {a['audio_patch']}, batch {a['audio_batch']}, items of "
        f"{a['segment_s']} s; epoch = one segment per prepared item (file: samples_per_epoch "
        "= items); unit: segments"
    ),
}


def render(report: dict[str, Any]) -> str:
    m, a = report["machine"], report["settings"]
    lines = [
        "domainfm streaming from prepared shards vs file-based data modules: samples/s and "
        "peak memory, 1x-8x data",
        f"command: {report['command']}",
        f"date: {report['date']}",
        f"machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['cpus_available']} "
        f"available), nice {m['nice']}, torch threads {a['threads']} in the main process "
        "(loader workers 1 each)",
        f"versions: python {m['python']}, torch {m['torch']}, litdata {m['litdata']}",
        f"load average at start {tuple(round(v, 2) for v in m['load_avg_start'])}, at end "
        f"{tuple(round(v, 2) for v in m['load_avg_end'])} (other work may share the machine)",
        f"settings: sizes {a['sizes']}x, {a['workers']} loader workers (and prepare workers) "
        f"in both paths, {a['repeats']} repeats (median; order alternating). A run = whole "
        f"epochs, at least {a['min_epochs']} and at least {a['medical_samples']} crops / "
        f"{a['geo_samples']} windows / {a['audio_samples']} segments; samples/s over all "
        "batches after the first (warm-up: worker start-up) batch.",
        "Why >= 12 epochs: LitData 0.2.x keeps the readers of the last 10 epochs alive "
        "(lru_cache(maxsize=10) on its Shuffle methods); StreamingSamples now drops that memo "
        "at every epoch start, and runs still cover more than 10 epochs to show it holds. "
        f"Shards are prepared with chunk_bytes={a['chunk_bytes']} (below the 1x corpus), so "
        "more data means more chunks of the same size.",
        "file = *PretrainDataModule.train_dataloader() on the raw files (the baseline); "
        "streaming = Streaming*DataModule.train_dataloader() on shards prepared once per size "
        "(prepare s: not part of samples/s). Each (path, size, repeat) in a fresh subprocess.",
        "setup s: build + setup('fit') (file medical: loads and resamples every volume). "
        "Memory of main + loader workers, polled every 50 ms: anon = peak of the summed "
        "Pss_Anon (heap/tensors; pages shared by fork counted once; judges 'flat'), PSS = "
        "peak summed Pss (anon + libraries/files, shared pages split, also with processes "
        "outside the tree); ΣVmHWM = main's + each worker's own peak RSS, summed (shared "
        "pages counted per process; ~0.8 GB of torch etc. each).",
    ]
    for domain, res in report["domains"].items():
        lines += ["", f"== {domain}: {DESCRIBE[domain](a)}"]
        lines.append(
            f"   {'size':<5}{'files':>6}{'items':>7}{'chunks':>7}{'shard MiB':>10}{'prepare s':>10}"
        )
        for n, entry in res["sizes"].items():
            p = entry["prepare"]
            lines.append(
                f"   {n + 'x':<5}{p['corpus_files']:>6}{p['items']:>7}{p['chunks']:>7}"
                f"{p['shard_mib']:>10.1f}{p['prepare_s']:>10.1f}"
            )
        lines.append(
            f"   {'size':<5}{'path':<10}{'setup s':>8}{'warm-up s':>10}{'epochs':>7}"
            f"{'samples/s per repeat':>22}{'median':>8}{'x file':>8}{'anon MiB':>9}"
            f"{'PSS MiB':>9}{'ΣVmHWM MiB':>11}"
        )
        for n, entry in res["sizes"].items():
            s = entry["summary"]
            for path in PATHS:
                v = s[path]
                each = ", ".join(f"{x:.0f}" for x in v["samples_per_s_each"])
                ratio = f"{s['ratio_streaming_vs_file']:.2f}" if path == "streaming" else "1"
                lines.append(
                    f"   {n + 'x':<5}{path:<10}{v['setup_s']:>8.2f}{v['warmup_s']:>10.2f}"
                    f"{v['epochs']:>7}{each:>22}{v['samples_per_s']:>8.0f}{ratio:>8}"
                    f"{v['anon_peak_mib']:>9.0f}{v['pss_peak_mib']:>9.0f}"
                    f"{v['hwm_sum_mib']:>11.0f}"
                )
        g = res["growth"]
        span = f"{g['to']}/{g['from']}"
        for path in PATHS:
            gp = g[path]
            mem = ", ".join(
                f"{label} {gp[key]['ratio']:.2f}x ({gp[key]['delta_mib']:+.0f} MiB)"
                for label, key in (("anon", MEM[0]), ("PSS", MEM[1]), ("ΣVmHWM", MEM[2]))
            )
            lines.append(
                f"   memory {span} {path:<9}: {mem} -> {'flat' if gp['flat'] else 'GROWS'}; "
                f"samples/s {span} {gp['samples_per_s_ratio']:.2f}x"
            )
        fit = g["prepare_fit"]
        lines.append(
            f"   prepare (least squares over sizes): {fit['fixed_s']:.1f} s fixed (spawning the "
            f"prepare workers, ...) + {fit['per_1x_s']:.1f} s per 1x of data"
        )
    lines += ["", "HEADLINE samples/s streaming / file (median of paired repeats):"]
    for domain, res in report["domains"].items():
        ratios = ", ".join(
            f"{n}x {e['summary']['ratio_streaming_vs_file']:.2f}" for n, e in res["sizes"].items()
        )
        lines.append(f"   {domain:<11}{ratios}")
    lines.append(
        f"HEADLINE peak anon memory growth (largest / smallest size; flat = within "
        f"{(FLAT - 1) * 100:.0f}%), file vs streaming:"
    )
    for domain, res in report["domains"].items():
        g = res["growth"]
        lines.append(
            f"   {domain:<11}"
            + "; ".join(
                f"{p} {g[p]['anon_peak_mib']['ratio']:.2f}x "
                f"({g[p]['anon_peak_mib']['delta_mib']:+.0f} MiB, "
                f"{'flat' if g[p]['flat'] else 'grows'})"
                for p in PATHS
            )
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--domains", nargs="+", choices=DOMAINS, default=list(DOMAINS))
    p.add_argument("--sizes", nargs="+", type=int, default=[1, 2, 4, 8], help="N of Nx data")
    p.add_argument("--repeats", type=int, default=2, help="subprocess runs per (path, size)")
    p.add_argument("--workers", type=int, default=2, help="loader (and prepare) workers")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the main process")
    p.add_argument("--spacing", type=float, default=3.0, help="medical spacing in mm")
    p.add_argument("--crop", type=int, default=64, help="medical crop edge")
    p.add_argument("--medical-patch", type=int, default=16)
    p.add_argument("--samples-per-volume", type=int, default=8, help="medical crops/volume")
    p.add_argument("--volumes-per-batch", type=int, default=1, help="streaming medical batch")
    p.add_argument("--chip", type=int, default=32, help="geospatial prepared chip size")
    p.add_argument("--window", type=int, default=32, help="geospatial window size")
    p.add_argument("--geo-patch", type=int, default=8)
    p.add_argument("--geo-batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=96, help="audio segment frames")
    p.add_argument("--audio-patch", type=int, default=16)
    p.add_argument("--audio-batch", type=int, default=32)
    p.add_argument("--segment-s", type=float, default=10.0, help="audio prepared item length")
    p.add_argument(
        "--chunk-bytes",
        default="4MB",
        help="shard size: below the 1x corpus, so more data means more chunks of the same size",
    )
    p.add_argument("--min-epochs", type=int, default=12, help="least whole epochs per run")
    p.add_argument("--medical-samples", type=int, default=512, help="least crops per run")
    p.add_argument("--geo-samples", type=int, default=1024, help="least windows per run")
    p.add_argument("--audio-samples", type=int, default=1024, help="least segments per run")
    p.add_argument("--child-timeout", type=float, default=300.0)
    p.add_argument("--quick", action="store_true", help="smoke run; prints only")
    p.add_argument("--out-dir", default=None, help="default benchmarks/results (not --quick)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    if p.parse_known_args(argv)[0].quick:  # flags given explicitly still win
        p.set_defaults(
            sizes=[1, 2],
            repeats=1,
            min_epochs=2,
            medical_samples=64,
            geo_samples=128,
            audio_samples=128,
        )
    args = p.parse_args(argv)
    if min(args.sizes) < 1 or len(args.sizes) < 2 or args.repeats < 1:
        raise ValueError("need >= 2 sizes (each >= 1) and repeats >= 1")
    args.sizes = sorted(set(args.sizes))
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child))
        return {}
    report: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]) if argv is None else f"main({argv})",
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "machine": machine_info(args),
        "settings": {k: v for k, v in vars(args).items() if k != "child"},
        "domains": {},
    }
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="domainfm-bench-streaming-") as tmp:
        for domain in args.domains:
            report["domains"][domain] = run_domain(domain, args, Path(tmp))
    report["machine"]["load_avg_end"] = os.getloadavg()
    report["wall_s"] = time.perf_counter() - t0
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
