"""Clips/s from audio files to augmented BYOL-A log-mel views: domainfm vs a per-clip loader in
BYOL-A's style, same run.

Baseline ("BYOL-A style"): a ``torch.utils.data.Dataset`` whose ``__getitem__`` does what
BYOL-A's ``WaveInLMSOutDataset`` + augmentation module do for one clip at a time: decode the
**whole file** (soundfile; BYOL-A used ``torchaudio.load``, which torchaudio 2.9 removed),
resample it to 16 kHz with ``torchaudio.functional.resample``, take a random 0.95 s crop
(zero-pad if shorter), ``torchaudio.transforms.MelSpectrogram`` (BYOL-A settings) +
``log(x + eps)``, normalize with the dataset's mean/std, then two views of
``RandomResizeCrop(MixupBYOLA(x))`` — the same view code as ours (what is compared is
getting the views, not different augmentations). Through a ``DataLoader`` with the same
batch size and workers.

Ours: ``AudioSegmentDataset(views="byola")`` (seek + decode only the segment's part of
the file, cached resampler kernel, the same front end and views) through ``seeded_loader``
with ``BYOLACollate`` (which also batch-standardizes the views: ours does strictly more).

Two sets of files: the 14 unlabeled recordings (OGG/Vorbis, 22.05 kHz, 2.7–133 s: what a
pretraining corpus looks like) and 200 spoken-digit WAVs (8 kHz, < 1.3 s: short clips, where
reading the whole file costs little). The first batch (worker start-up) is warm-up; clips/s
is over the timed batches; pipelines alternate order per repeat; medians reported.

Usage::

    python benchmarks/audio_pipeline.py                  # writes benchmarks/results/
    python benchmarks/audio_pipeline.py --quick          # smoke run, prints only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import soundfile as sf  # noqa: E402
import torch  # noqa: E402
import torchaudio  # noqa: E402
import torchaudio.functional as AF  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from domainfm.data.data_root import example_data_root  # noqa: E402
from domainfm.data.sampling import seeded_loader  # noqa: E402
from domainfm.domains.audio import (  # noqa: E402
    AudioSegmentDataset,
    BYOLAViews,
    LogMelFrontend,
    compute_frontend_stats,
    index_audio,
)
from domainfm.domains.audio.datamodule import BYOLACollate  # noqa: E402

SETS = {
    "recordings": ("audio/librosa_example_clips", "*.ogg", None),
    "digits": ("audio/fsdd_spoken_digits/recordings", "*.wav", 200),
}


class BYOLAStyleClips(Dataset[dict[str, torch.Tensor]]):
    """One clip at a time: whole-file decode → resample → crop → mel → log → norm → views."""

    def __init__(self, files: list[Path], mean: float, std: float, length: int) -> None:
        self.files, self.mean, self.std, self.length = files, mean, std, length
        self.unit = 15200  # 0.95 s at 16 kHz: 96 frames
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=16000,
            n_fft=1024,
            win_length=1024,
            hop_length=160,
            n_mels=64,
            f_min=60,
            f_max=7800,
        )
        self.views = BYOLAViews()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(index)
        path = self.files[int(torch.randint(len(self.files), (), generator=g))]
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        wave = torch.from_numpy(data.T).mean(0)  # mono (N,)
        wave = AF.resample(wave, rate, 16000)
        if len(wave) > self.unit:
            start = int(torch.randint(len(wave) - self.unit + 1, (), generator=g))
            wave = wave[start : start + self.unit]
        else:
            wave = torch.nn.functional.pad(wave, (0, self.unit - len(wave)))
        with torch.no_grad():
            lms = (self.mel(wave) + torch.finfo(torch.float).eps).log()[None]  # (1, 64, 96)
        lms = (lms - self.mean) / self.std
        v1, v2 = self.views(lms, g)
        return {"view1": v1, "view2": v2}


def time_loader(loader: Any, batches: int) -> dict[str, float]:
    it = iter(loader)
    start = time.perf_counter()
    first = next(it)
    warm = time.perf_counter() - start
    size = first["view1"].shape[0]
    start = time.perf_counter()
    done = 0
    for _ in range(batches):
        batch = next(it)
        done += batch["view1"].shape[0]
    elapsed = time.perf_counter() - start
    assert first["view1"].shape[1:] == (1, 64, 96)
    return {
        "warmup_s": warm,
        "timed_s": elapsed,
        "clips": done,
        "clips_per_s": done / elapsed,
        "batch": size,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(1)
    root = example_data_root()
    report: dict[str, Any] = {"sets": {}}
    for name, (folder, pattern, limit) in SETS.items():
        files = sorted((root / folder).glob(pattern))[: limit or None]
        infos, skipped = index_audio(files)
        assert not skipped, skipped
        mean, std = compute_frontend_stats([i.path for i in infos], LogMelFrontend())
        frontend = LogMelFrontend(mean=mean, std=std)
        per_epoch = args.batch * (args.batches + 1)
        rows: dict[str, list[dict[str, float]]] = {"byola_style": [], "ours": []}
        for repeat in range(args.repeats):
            order = ["byola_style", "ours"] if repeat % 2 == 0 else ["ours", "byola_style"]
            for pipeline in order:
                if pipeline == "ours":
                    ds = AudioSegmentDataset(
                        infos=infos,
                        frontend=frontend,
                        frames=96,
                        views="byola",
                        samples_per_epoch=per_epoch,
                    )
                    loader = seeded_loader(
                        ds,
                        batch_size=args.batch,
                        seed=repeat,
                        num_workers=args.workers,
                        collate_fn=BYOLACollate(),
                    )
                else:
                    base = BYOLAStyleClips(list(files), mean, std, per_epoch)
                    loader = DataLoader(
                        base,
                        batch_size=args.batch,
                        shuffle=True,
                        num_workers=args.workers,
                        drop_last=True,
                        persistent_workers=args.workers > 0,
                    )
                rows[pipeline].append(time_loader(loader, args.batches))
                del loader
        med = {k: statistics.median(r["clips_per_s"] for r in v) for k, v in rows.items()}
        durations = [i.duration for i in infos]
        report["sets"][name] = {
            "files": len(infos),
            "seconds_total": sum(durations),
            "seconds_range": [min(durations), max(durations)],
            "rate_hz": sorted({i.sample_rate for i in infos}),
            "rows": rows,
            "median_clips_per_s": med,
            "ratio": med["ours"] / med["byola_style"],
        }
    return report


def machine_info(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": "python benchmarks/audio_pipeline.py" + (" --quick" if args.quick else ""),
        "cpus": os.cpu_count(),
        "load_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "soundfile": sf.__version__,
        "settings": {
            "batch": args.batch,
            "batches": args.batches,
            "workers": args.workers,
            "repeats": args.repeats,
        },
    }


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "domainfm AudioSegmentDataset (BYOL-A views) vs a BYOL-A-style per-clip loader: "
        "clips/s from files to two augmented log-mel views",
        f"command: {m['command']}",
        f"date: {m['date']}",
        f"machine: {m['cpus']} CPUs, torch threads 1; load average at start {m['load_start']}, "
        f"at end {m['load_end']}",
        f"versions: python {m['python']}, torch {m['torch']}, torchaudio {m['torchaudio']}, "
        f"soundfile {m['soundfile']}",
        f"settings: {m['settings']} (first batch = warm-up, excluded)",
        "",
    ]
    for name, s in report["sets"].items():
        lo, hi = s["seconds_range"]
        lines.append(
            f"== {name}: {s['files']} files, {s['seconds_total']:.0f} s of audio "
            f"({lo:.2f}-{hi:.1f} s each), {s['rate_hz']} Hz"
        )
        lines.append("   pipeline      clips/s per repeat                    median")
        for key in ("byola_style", "ours"):
            per = ", ".join(f"{r['clips_per_s']:.1f}" for r in s["rows"][key])
            lines.append(f"   {key:12s}  {per:36s}  {s['median_clips_per_s'][key]:.1f}")
        lines.append(f"   ratio ours / BYOL-A style: {s['ratio']:.2f}x")
        lines.append("")
    ratios = ", ".join(f"{k} {s['ratio']:.2f}x" for k, s in report["sets"].items())
    met = all(s["ratio"] >= 3 for s in report["sets"].values())
    lines.append(
        f"HEADLINE clips/s ours / BYOL-A style: {ratios}  (goal >= 3x: "
        f"{'met' if met else 'NOT met on every set'})"
    )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--batches", type=int, default=40, help="timed batches per run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="tiny run, print only")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.batches, args.repeats, args.batch = 2, 1, 4
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    report = {"machine": machine_info(args)}
    report.update(run(args))
    report["machine"]["load_end"] = os.getloadavg()
    text = render(report)
    print(text, end="")
    if not args.quick:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audio_pipeline.txt").write_text(text)
        (out / "audio_pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
