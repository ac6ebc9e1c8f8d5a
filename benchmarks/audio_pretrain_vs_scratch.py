"""Did pretraining help? Spoken-digit linear probes on a briefly pretrained encoder vs the same
encoder at random init, several seeds.

Protocol (all data real, read from ``$DOMAINFM_DATA`` or ``../shared/data``):

* **Pretraining** (unlabeled): the 14 example recordings (music, speech, animals; 670 s),
  random 0.95 s segments, BYOL-A's log-mel (statistics over those files). Two recipes:
  BYOL-A (``AudioNTT2020`` d=512, BYOL-A views, EMA target) and MAE (ViT 64x96 input,
  16x16 patches, 75 % masking). ``--steps`` optimizer steps, batch 32, one run per seed.
* **Probe** (labeled): the 800 FSDD clips (4 speakers x 10 digits x 20 takes), each
  resampled to 16 kHz and centre-cut / zero-padded to 96 frames, normalized with statistics
  over the training speakers' clips; the frozen encoder's clip embedding (BYOL-A: max+mean
  over time; ViT: class token) → standardized → multinomial logistic regression (L-BFGS,
  L2 1e-3). **Leave-one-speaker-out**: 4 folds, accuracy on the held-out speaker, averaged.
* Random init = the same architecture built with the same seed, not trained. Reported:
  mean ± std over seeds, per seed, and the paired difference.

Usage::

    python benchmarks/audio_pretrain_vs_scratch.py             # writes benchmarks/results/
    python benchmarks/audio_pretrain_vs_scratch.py --quick     # smoke run, prints only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from domainfm.core.masking import MaskingSpec  # noqa: E402
from domainfm.core.objectives import MAE  # noqa: E402
from domainfm.core.objectives.byol import BYOL  # noqa: E402
from domainfm.core.vit import VisionTransformerND  # noqa: E402
from domainfm.data.data_root import example_data_root  # noqa: E402
from domainfm.domains.audio import (  # noqa: E402
    AudioNTT2020,
    AudioPretrainDataModule,
    LogMelFrontend,
    compute_frontend_stats,
    load_audio,
)
from domainfm.domains.audio.segments import fit_frames  # noqa: E402
from domainfm.tasks.pretrain_module import PretrainModule  # noqa: E402

FRAMES = 96


def build(recipe: str, seed: int) -> tuple[nn.Module, dict[str, nn.Module]]:
    torch.manual_seed(seed)
    if recipe == "byola":
        return AudioNTT2020(n_mels=64, d=512), {"byol": BYOL()}
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=16, embed_dim=96, depth=4, num_heads=4
    )
    mae = MAE(
        embed_dim=96,
        in_chans=1,
        patch_size=(16, 16),
        decoder_dim=64,
        decoder_depth=2,
        decoder_heads=4,
    )
    return vit, {"mae": mae}


def pretrain(recipe: str, seed: int, steps: int, files: list[str], work: Path) -> nn.Module:
    backbone, objectives = build(recipe, seed)
    module = PretrainModule(
        backbone=backbone,
        objectives=objectives,
        lr=1e-3 if recipe == "mae" else 3e-4,
        warmup_steps=10,
        projector_hidden_dim=512,
        projector_dim=128,
        ema_momentum=0.99,
        domain="audio",
    )
    data = AudioPretrainDataModule(
        files=files,
        frames=FRAMES,
        views="byola" if recipe == "byola" else "single",
        masking=MaskingSpec(patch_size=16),
        samples_per_epoch=32 * steps,
        batch_size=32,
        num_workers=1,
        seed=seed,
        stats_cache=str(work / "stats.json"),
    )
    L.seed_everything(seed, workers=True)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=work,
    )
    trainer.fit(module, data)
    return module.backbone


def digit_inputs(root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """``(800, 1, 64, 96)`` raw log-mels (not normalized), labels, speakers."""
    meta = root / "audio/fsdd_spoken_digits/metadata.csv"
    with open(meta, newline="") as handle:
        rows = list(csv.DictReader(handle))
    frontend = LogMelFrontend()
    xs, ys, speakers = [], [], []
    for r in rows:
        wave, _ = load_audio(meta.parent / r["file"], 16000, mono=True)
        xs.append(fit_frames(frontend(wave), FRAMES, None))
        ys.append(int(r["digit"]))
        speakers.append(r["speaker"])
    return torch.stack(xs), torch.tensor(ys), speakers


def embed(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    backbone.eval()
    with torch.no_grad():
        return torch.cat([backbone(x[i : i + 100]) for i in range(0, len(x), 100)])


def probe_accuracy(features: torch.Tensor, y: torch.Tensor, train: torch.Tensor) -> float:
    """Standardize on the training rows, L2 logistic regression by L-BFGS, test accuracy."""
    mean, std = features[train].mean(0), features[train].std(0).clamp(min=1e-6)
    f = (features - mean) / std
    linear = nn.Linear(f.shape[1], 10)
    opt = torch.optim.LBFGS(
        linear.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(linear(f[train]), y[train])
        loss = loss + 1e-3 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((linear(f[~train]).argmax(1) == y[~train]).float().mean())


def loso(backbone: nn.Module, raw: torch.Tensor, y: torch.Tensor, speakers: list[str]) -> float:
    """Leave-one-speaker-out probe accuracy (normalization from the training speakers)."""
    accs = []
    for held in sorted(set(speakers)):
        train = torch.tensor([s != held for s in speakers])
        mean, std = float(raw[train].mean()), float(raw[train].std())
        feats = embed(backbone, (raw - mean) / std)
        torch.manual_seed(0)
        accs.append(probe_accuracy(feats, y, train))
    return statistics.mean(accs)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(2)
    root = example_data_root()
    files = [str(p) for p in sorted((root / "audio/librosa_example_clips").glob("*.ogg"))]
    raw, y, speakers = digit_inputs(root)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        compute_frontend_stats(files, LogMelFrontend(), cache=work / "stats.json")
        for recipe in args.recipes:
            per_seed = []
            for seed in range(args.seeds):
                start = time.perf_counter()
                scratch, _ = build(recipe, seed)
                acc_scratch = loso(scratch, raw, y, speakers)
                trained = pretrain(recipe, seed, args.steps, files, work)
                acc_pre = loso(trained, raw, y, speakers)
                per_seed.append(
                    {
                        "seed": seed,
                        "pretrained": acc_pre,
                        "scratch": acc_scratch,
                        "seconds": time.perf_counter() - start,
                    }
                )
                print(
                    f"{recipe} seed {seed}: pretrained {acc_pre:.3f} scratch {acc_scratch:.3f}",
                    flush=True,
                )
            diffs = [r["pretrained"] - r["scratch"] for r in per_seed]
            results[recipe] = {
                "per_seed": per_seed,
                "pretrained": (
                    statistics.mean(r["pretrained"] for r in per_seed),
                    statistics.pstdev(r["pretrained"] for r in per_seed),
                ),
                "scratch": (
                    statistics.mean(r["scratch"] for r in per_seed),
                    statistics.pstdev(r["scratch"] for r in per_seed),
                ),
                "difference": (statistics.mean(diffs), statistics.pstdev(diffs)),
                "seeds_better": sum(d > 0 for d in diffs),
            }
    return results


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "Did pretraining help? Spoken-digit leave-one-speaker-out linear probe, pretrained on "
        "the unlabeled recordings vs random init",
        f"command: {m['command']}",
        f"date: {m['date']}",
        f"machine: {m['cpus']} CPUs; torch {m['torch']}; python {m['python']}",
        f"settings: {m['settings']}",
        "",
        "recipe   pretrained acc     random-init acc    difference (paired)   seeds better",
    ]
    for recipe, r in report["results"].items():
        lines.append(
            f"{recipe:8s} {r['pretrained'][0]:.3f} ± {r['pretrained'][1]:.3f}      "
            f"{r['scratch'][0]:.3f} ± {r['scratch'][1]:.3f}      "
            f"{r['difference'][0]:+.3f} ± {r['difference'][1]:.3f}        "
            f"{r['seeds_better']}/{len(r['per_seed'])}"
        )
    lines.append("")
    for recipe, r in report["results"].items():
        for s in r["per_seed"]:
            lines.append(
                f"  {recipe} seed {s['seed']}: pretrained {s['pretrained']:.3f}, "
                f"scratch {s['scratch']:.3f} ({s['seconds']:.0f} s)"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--recipes", nargs="+", default=["byola", "mae"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.seeds = 3, 1
    report: dict[str, Any] = {
        "machine": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "command": "python benchmarks/audio_pretrain_vs_scratch.py"
            + (" --quick" if args.quick else ""),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "settings": {
                "steps": args.steps,
                "seeds": args.seeds,
                "batch": 32,
                "recipes": args.recipes,
            },
        }
    }
    report["results"] = run(args)
    text = render(report)
    print(text, end="")
    if not args.quick:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "audio_pretrain_vs_scratch.txt").write_text(text)
        (out / "audio_pretrain_vs_scratch.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
