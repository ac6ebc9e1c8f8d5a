"""Did pretraining help? Land-cover segmentation and scene classification on real Sentinel-2
from a briefly MAE-pretrained ViT vs the same ViT from random init, several seeds.

Protocol (all data real, read from ``$DOMAINFM_DATA`` or ``../shared/data``): the eo-learn
Slovenia patch, 5 dates of 13-band Sentinel-2 L1C (101 x 100 px at 10 m) and its LULC map.

* **Pretraining** (unlabeled): MAE (75 % random masking, per-patch normalized pixels) on
  random 32 x 32 windows of the 5 dates, **restricted to rows 0-64** — the scenes are cropped
  to those rows (CRS and transform kept) before pretraining, so the validation region's
  pixels (rows 69-101) are never seen, with or without labels.
* **Segmentation fine-tuning** (few labels): ``FinetuneModule(decoder="upernet")`` on random
  32 x 32 windows of rows 0-64 (LULC classes cultivated, forest, grassland, shrubland,
  artificial; "no data" is class 0), Dice + CE. **Evaluation**: the grid of validation
  windows in rows 69-101 of every date; IoU per class present in the validation labels
  (class 0 excluded), its mean (mIoU), and pixel accuracy over labeled pixels.
* **Scene classification, linear probe**: frozen backbone + BatchNorm/linear head
  (``mode="linear_probe"``) on 16 x 16 windows labeled with their dominant land cover
  (``RasterSceneDataModule``); validation accuracy and macro accuracy on the 16 x 16 window
  grid of rows 69-101.
* Pretraining runs once (seed 0); each arm (pretrained / scratch) is then fine-tuned with
  the same seeds (window order, head init); reported as mean ± std over seeds, per seed, and
  the paired difference. The numbers are what came out of one run of this fixed protocol.

Usage::

    python benchmarks/geospatial_pretrain_vs_scratch.py              # writes results/
    python benchmarks/geospatial_pretrain_vs_scratch.py --quick      # smoke run, prints only
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import rasterio
import torch
from rasterio.windows import Window

from domainfm.core.masking import MaskingSpec
from domainfm.core.objectives import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.data.data_root import resolve_data_path
from domainfm.domains.geospatial import (
    SENTINEL2_L1C_BANDS,
    RasterPretrainDataModule,
    RasterSceneDataModule,
    RasterSegDataModule,
)
from domainfm.pretrained.export import export_checkpoint
from domainfm.tasks.finetune_module import FinetuneModule
from domainfm.tasks.pretrain_module import PretrainModule

S2 = "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
LULC = "geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif"
CLASSES = {1: 1, 2: 2, 3: 3, 4: 4, 8: 5}
NAMES = ["no data", "cultivated", "forest", "grassland", "shrubland", "artificial"]
TRAIN_ROWS, VAL_ROWS = (0, 64), (69, 101)


def _vit(args: argparse.Namespace) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=13,
        spatial_dims=2,
        patch_size=args.patch,
        embed_dim=args.embed_dim,
        depth=args.depth,
        num_heads=args.heads,
    )


def _trainer(steps: int, root: Path, seed: int, *, checkpoint: bool = False) -> L.Trainer:
    L.seed_everything(seed, verbose=False)
    callbacks = (
        [L.pytorch.callbacks.ModelCheckpoint(dirpath=str(root), save_last=True)]
        if checkpoint
        else []
    )
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=checkpoint,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=callbacks,
    )


def _dates() -> list[Path]:
    return sorted(resolve_data_path(S2).glob("S2_L1C_*.tif"))


def crop_training_rows(work: Path) -> list[Path]:
    """Copies of the 5 dates cut to the training rows (CRS and window transform kept)."""
    out = []
    for path in _dates():
        with rasterio.open(path) as src:
            window = Window(0, TRAIN_ROWS[0], src.width, TRAIN_ROWS[1] - TRAIN_ROWS[0])
            profile = src.profile | {
                "height": int(window.height),
                "transform": src.window_transform(window),
            }
            data = src.read(window=window)
            tags = src.tags()
        target = work / "train_rows" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(target, "w", **profile) as dst:
            dst.write(data)
            dst.update_tags(**tags)
        out.append(target)
    return out


def pretrain(args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """MAE on the unlabeled training-row imagery; returns the export folder, final loss."""
    data = RasterPretrainDataModule(
        files=[str(p) for p in crop_training_rows(work)],
        band_names=list(SENTINEL2_L1C_BANDS),
        size=32,
        masking=MaskingSpec(patch_size=args.patch, ratio=0.75),
        samples_per_epoch=args.pretrain_steps * args.batch,
        batch_size=args.batch,
        seed=0,
    )
    module = PretrainModule(
        backbone=_vit(args),
        objectives={
            "mae": MAE(
                embed_dim=args.embed_dim,
                in_chans=13,
                patch_size=(args.patch,) * 2,
                decoder_dim=64,
                decoder_depth=2,
                decoder_heads=4,
            )
        },
        lr=1.5e-3,
        warmup_steps=max(1, args.pretrain_steps // 10),
        domain="geospatial",
    )
    trainer = _trainer(args.pretrain_steps, work / "pretrain", seed=0, checkpoint=True)
    trainer.fit(module, datamodule=data)
    loss = float(trainer.callback_metrics["train/loss"])
    print(f"pretrained {args.pretrain_steps} MAE steps, final loss {loss:.4f}", flush=True)
    return export_checkpoint(work / "pretrain" / "last.ckpt", work / "export"), loss


def _data_kwargs(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    return {
        "images": [str(p) for p in _dates()],
        "label": LULC,
        "band_names": list(SENTINEL2_L1C_BANDS),
        "label_map": CLASSES,
        "class_names": NAMES,
        "train_rows": TRAIN_ROWS,
        "val_rows": VAL_ROWS,
        "batch_size": args.batch,
        "seed": seed,
    }


def segmentation(args: argparse.Namespace, pretrained: Path | None, seed: int, work: Path):
    """Fine-tune UPerNet segmentation; returns mIoU, per-class IoU and pixel accuracy."""
    data = RasterSegDataModule(
        **_data_kwargs(args, seed), size=32, samples_per_epoch=args.finetune_steps * args.batch
    )
    L.seed_everything(seed, verbose=False)  # same head init in both arms
    module = FinetuneModule(
        backbone=None if pretrained is not None else _vit(args),
        pretrained=str(pretrained) if pretrained is not None else None,
        task="segmentation",
        num_classes=len(NAMES),
        decoder="upernet",
        decoder_dim=32,
        lr=args.finetune_lr,
        warmup_steps=max(1, args.finetune_steps // 10),
    )
    _trainer(args.finetune_steps, work / f"seg_{seed}_{pretrained is not None}", seed).fit(
        module, datamodule=data
    )
    module.eval()
    inter = torch.zeros(len(NAMES))
    union = torch.zeros(len(NAMES))
    present = torch.zeros(len(NAMES), dtype=torch.bool)
    correct = total = 0
    with torch.no_grad():
        for batch in data.val_dataloader():  # type: ignore[union-attr]
            pred = module(batch["input"]).argmax(dim=1)  # (B, H, W)
            label = batch["label"][:, 0]
            labeled = label > 0
            correct += int((pred[labeled] == label[labeled]).sum())
            total += int(labeled.sum())
            for k in range(1, len(NAMES)):
                p, t = (pred == k) & labeled, label == k
                inter[k] += (p & t).sum()
                union[k] += (p | t).sum()
                present[k] |= bool(t.any())
    iou = {NAMES[k]: float(inter[k] / union[k]) for k in range(1, len(NAMES)) if present[k]}
    return {
        "miou": statistics.fmean(iou.values()),
        "iou": iou,
        "pixel_accuracy": correct / max(total, 1),
    }


def probe(args: argparse.Namespace, pretrained: Path | None, seed: int, work: Path):
    """Linear probe for the dominant land cover of 16 x 16 windows."""
    data = RasterSceneDataModule(
        **_data_kwargs(args, seed), size=16, samples_per_epoch=args.probe_steps * args.batch
    )
    L.seed_everything(seed, verbose=False)
    module = FinetuneModule(
        backbone=None if pretrained is not None else _vit(args),
        pretrained=str(pretrained) if pretrained is not None else None,
        task="classification",
        num_classes=len(NAMES),
        mode="linear_probe",
        lr=args.probe_lr,
        weight_decay=0.0,
        warmup_steps=max(1, args.probe_steps // 10),
    )
    trainer = _trainer(args.probe_steps, work / f"probe_{seed}_{pretrained is not None}", seed)
    trainer.fit(module, datamodule=data)
    evaluator = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    metrics = evaluator.validate(module, datamodule=data, verbose=False)[0]
    return {"accuracy": float(metrics["val/acc"]), "macro_accuracy": float(metrics["val/macc"])}


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rasterio": rasterio.__version__,
        "python": sys.version.split()[0],
        "load_average": list(os.getloadavg()),
    }


METRICS = {
    "segmentation": ("miou", "pixel_accuracy"),
    "scene_probe": ("accuracy", "macro_accuracy"),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--pretrain-steps", type=int, default=2000)
    parser.add_argument("--finetune-steps", type=int, default=200)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--probe-steps", type=int, default=200)
    parser.add_argument("--probe-lr", type=float, default=1e-2)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--embed-dim", type=int, default=96)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; writes nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.pretrain_steps, args.finetune_steps, args.probe_steps = [0], 2, 2, 2
        args.embed_dim, args.depth = 32, 2
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        task: {"pretrained": [], "scratch": []} for task in METRICS
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export, pretrain_loss = pretrain(args, work)
        for seed in args.seeds:
            for arm, weights in (("pretrained", export), ("scratch", None)):
                seg = segmentation(args, weights, seed, work)
                scene = probe(args, weights, seed, work)
                runs["segmentation"][arm].append({"seed": seed, **seg})
                runs["scene_probe"][arm].append({"seed": seed, **scene})
                print(
                    f"seed {seed} {arm:10s} mIoU {seg['miou']:.4f} pixel acc "
                    f"{seg['pixel_accuracy']:.4f} | probe acc {scene['accuracy']:.4f} "
                    f"macro {scene['macro_accuracy']:.4f}",
                    flush=True,
                )
    summary: dict[str, Any] = {}
    for task, metrics in METRICS.items():
        summary[task] = {}
        for metric in metrics:
            entry: dict[str, Any] = {}
            for arm in ("pretrained", "scratch"):
                values = [r[metric] for r in runs[task][arm]]
                entry[arm] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "per_seed": values,
                }
            diffs = [
                p[metric] - s[metric]
                for p, s in zip(runs[task]["pretrained"], runs[task]["scratch"], strict=True)
            ]
            entry["paired_difference"] = {
                "mean": statistics.fmean(diffs),
                "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
                "pretrained_better_in": sum(d > 0 for d in diffs),
                "of": len(diffs),
            }
            summary[task][metric] = entry
    result = {
        "machine": _machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "pretrain_final_loss": pretrain_loss,
        "runs": runs,
        "summary": summary,
        "seconds": time.perf_counter() - start,
    }
    text = _table(result)
    print(text)
    if not args.quick:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "geospatial_pretrain_vs_scratch.txt").write_text(text)
        (args.out_dir / "geospatial_pretrain_vs_scratch.json").write_text(
            json.dumps(result, indent=2)
        )
    return result


def _table(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        "geospatial: did pretraining help? Sentinel-2 land cover (eo-learn Slovenia patch; "
        "validation rows 69-101, never seen in pretraining)",
        f"{m['date']}  {m['cpu']}  {m['threads']} threads  torch {m['torch']}  "
        f"load average {', '.join(f'{v:.2f}' for v in m['load_average'])}",
        f"ViT-2D 13 bands embed {s['embed_dim']} depth {s['depth']} patch {s['patch']}; MAE "
        f"pretraining {s['pretrain_steps']} steps x {s['batch']} windows of 32^2 on rows 0-64 of "
        f"5 dates (final loss {result['pretrain_final_loss']:.4f}); segmentation (UPerNet) "
        f"{s['finetune_steps']} steps; scene linear probe {s['probe_steps']} steps; seeds "
        f"{s['seeds']}",
    ]
    for task, metrics in result["summary"].items():
        lines += ["", f"{task}:", f"  {'metric':<16}{'init':<12}{'mean ± std':>18}   per seed"]
        for metric, entry in metrics.items():
            for arm in ("pretrained", "scratch"):
                e = entry[arm]
                per_seed = ", ".join(f"{v:.4f}" for v in e["per_seed"])
                lines.append(
                    f"  {metric:<16}{arm:<12}{e['mean']:>10.4f} ± {e['std']:.4f}   {per_seed}"
                )
            d = entry["paired_difference"]
            lines.append(
                f"  {metric:<16}{'difference':<12}{d['mean']:>+10.4f} ± {d['std']:.4f}   "
                f"pretrained better in {d['pretrained_better_in']} of {d['of']} seeds"
            )
    lines += ["", f"total time {result['seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
