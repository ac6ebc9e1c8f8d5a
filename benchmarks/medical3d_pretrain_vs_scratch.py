"""Did pretraining help? Brain-tumour segmentation Dice from a briefly MAE-pretrained 3D ViT
vs the same ViT from random init, on real BRATS MRI, several seeds.

Protocol (all data real, read from ``$DOMAINFM_DATA`` or ``../shared/data``):

* **Pretraining** (unlabeled): MAE on 1-channel brain MRI volumes — the FLAIR and T1c scans of
  the two BRATS *training* subjects and the MNI152 T1 template — never the validation
  subjects' images. Preprocessing as everywhere in domainfm: RAS, ``--spacing`` mm,
  0.5–99.5 percentile scaling.
* **Fine-tuning** (few labels): FLAIR of the two BRATS training subjects, whole-tumour label
  (BRATS labels 1–4 → 1, manual expert ground truth), Dice + CE, ``--finetune-steps`` steps
  of foreground-aware crops; ``FinetuneModule`` with the UNETR-style decoder.
* **Evaluation**: the two BRATS *validation* subjects, whole volumes segmented with MONAI's
  Gaussian-blended sliding windows, Dice of the tumour class per subject (MONAI
  ``DiceMetric``), averaged over subjects.
* Each arm (pretrained / scratch) runs with the same seeds (crop order, head init, masks);
  reported as mean ± std over seeds, with the per-seed values and the paired difference.

Usage::

    python benchmarks/medical3d_pretrain_vs_scratch.py                 # writes results/
    python benchmarks/medical3d_pretrain_vs_scratch.py --quick         # smoke run, prints only
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
import torch

from domainfm.core.masking import MaskingSpec
from domainfm.core.objectives import MAE
from domainfm.core.vit import VisionTransformerND
from domainfm.data.data_root import resolve_data_path
from domainfm.domains.medical3d import (
    LabeledVolumeDataset,
    VolumePretrainDataModule,
    VolumeSegDataModule,
)
from domainfm.pretrained.export import export_checkpoint
from domainfm.tasks.finetune_module import FinetuneModule
from domainfm.tasks.pretrain_module import PretrainModule

BRATS = "medical/brats2015_deepmedic"
TRAIN = ("train/brats_2013_pat0005_1", "train/brats_2013_pat0006_1")
VAL = ("validation/brats_2013_pat0003_1", "validation/brats_2013_pat0004_1")
MNI_T1 = "medical/mni152_2009_nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
WHOLE_TUMOUR = {1: 1, 2: 1, 3: 1, 4: 1}


def _vit(args: argparse.Namespace) -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=1,
        spatial_dims=3,
        patch_size=args.patch,
        embed_dim=args.embed_dim,
        depth=args.depth,
        num_heads=args.heads,
    )


def _trainer(steps: int, root: Path, seed: int) -> L.Trainer:
    L.seed_everything(seed, verbose=False)
    return L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=True,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[L.pytorch.callbacks.ModelCheckpoint(dirpath=str(root), save_last=True)],
    )


def pretrain(args: argparse.Namespace, work: Path) -> Path:
    """MAE pretraining on the unlabeled MRI volumes; returns the export folder."""
    files = [f"{BRATS}/{s}/{m}_subtrMeanDivStd.nii.gz" for s in TRAIN for m in ("Flair", "T1c")]
    files.append(MNI_T1)
    data = VolumePretrainDataModule(
        files=files,
        crop_size=args.crop,
        spacing=args.spacing,
        modality="mri",
        masking=MaskingSpec(patch_size=args.patch, ratio=0.75),
        samples_per_volume=32,
        batch_size=args.batch,
        num_workers=0,
        seed=0,
    )
    module = PretrainModule(
        backbone=_vit(args),
        objectives={
            "mae": MAE(
                embed_dim=args.embed_dim,
                in_chans=1,
                patch_size=(args.patch,) * 3,
                decoder_dim=64,
                decoder_depth=2,
                decoder_heads=4,
            )
        },
        lr=1.5e-3,
        warmup_steps=max(1, args.pretrain_steps // 10),
        domain="medical3d",
    )
    trainer = _trainer(args.pretrain_steps, work / "pretrain", seed=0)
    trainer.fit(module, datamodule=data)
    loss = float(trainer.callback_metrics["train/loss"])
    print(f"pretrained {args.pretrain_steps} MAE steps, final loss {loss:.4f}", flush=True)
    return export_checkpoint(work / "pretrain" / "last.ckpt", work / "export")


def finetune(args: argparse.Namespace, pretrained: Path | None, seed: int, work: Path) -> Any:
    """Fine-tune for the whole-tumour label; returns the trained module (eval mode)."""
    images = [[f"{BRATS}/{s}/Flair_subtrMeanDivStd.nii.gz"] for s in TRAIN]
    labels = [f"{BRATS}/{s}/OTMultiClass.nii.gz" for s in TRAIN]
    data = VolumeSegDataModule(
        images=images,
        labels=labels,
        label_map=WHOLE_TUMOUR,
        crop_size=args.crop,
        spacing=args.spacing,
        modality="mri",
        samples_per_volume=64,
        positive_fraction=0.5,
        batch_size=args.batch,
        seed=seed,
    )
    L.seed_everything(seed, verbose=False)  # same head init for both arms
    module = FinetuneModule(
        backbone=_vit(args),
        pretrained=str(pretrained) if pretrained is not None else None,
        task="segmentation",
        num_classes=2,
        lr=args.finetune_lr,
        warmup_steps=max(1, args.finetune_steps // 10),
        decoder_dim=32,
    )
    _trainer(args.finetune_steps, work / f"ft_{seed}_{pretrained is not None}", seed).fit(
        module, datamodule=data
    )
    return module.eval()


def evaluate(module: Any, val: LabeledVolumeDataset, roi: int) -> list[float]:
    """Whole-volume tumour Dice per validation subject (sliding windows on the model grid)."""
    from monai.inferers import sliding_window_inference
    from monai.metrics import DiceMetric

    scores = []
    for case in range(len(val)):
        item = val[case]
        with torch.no_grad():
            logits = sliding_window_inference(
                item["input"][None],
                roi_size=(roi,) * 3,
                sw_batch_size=4,
                predictor=module,
                overlap=0.5,
                mode="gaussian",
            )
        pred = logits.argmax(dim=1, keepdim=True)  # (1, 1, D, H, W)
        metric = DiceMetric(include_background=False)
        onehot = [
            torch.cat([(t == 0), (t == 1)], dim=1).float() for t in (pred, item["label"][None])
        ]
        scores.append(float(metric(onehot[0], onehot[1]).mean()))
    return scores


def _machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import monai

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": sys.version.split()[0],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--finetune-steps", type=int, default=120)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--spacing", type=float, default=2.0)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--embed-dim", type=int, default=96)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run; writes nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.pretrain_steps, args.finetune_steps = [0], 2, 2
        args.crop, args.spacing, args.embed_dim, args.depth = 32, 4.0, 32, 2
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    val = LabeledVolumeDataset(
        images=[[resolve_data_path(f"{BRATS}/{s}/Flair_subtrMeanDivStd.nii.gz")] for s in VAL],
        labels=[resolve_data_path(f"{BRATS}/{s}/OTMultiClass.nii.gz") for s in VAL],
        crop_size=None,
        spacing=args.spacing,
        modality="mri",
        label_map=WHOLE_TUMOUR,
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export = pretrain(args, work)
        runs: dict[str, list[dict[str, Any]]] = {"pretrained": [], "scratch": []}
        for seed in args.seeds:
            for arm, weights in (("pretrained", export), ("scratch", None)):
                module = finetune(args, weights, seed, work)
                scores = evaluate(module, val, args.crop)
                runs[arm].append(
                    {"seed": seed, "dice_per_subject": scores, "dice": statistics.fmean(scores)}
                )
                print(
                    f"seed {seed} {arm:10s} dice {statistics.fmean(scores):.4f} "
                    f"(per subject {', '.join(f'{s:.4f}' for s in scores)})",
                    flush=True,
                )
    summary = {}
    for arm, rows in runs.items():
        values = [r["dice"] for r in rows]
        summary[arm] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    diffs = [
        p["dice"] - s["dice"] for p, s in zip(runs["pretrained"], runs["scratch"], strict=True)
    ]
    result = {
        "machine": _machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": runs,
        "summary": summary,
        "paired_difference": {
            "mean": statistics.fmean(diffs),
            "std": statistics.stdev(diffs) if len(diffs) > 1 else 0.0,
            "pretrained_better_in": sum(d > 0 for d in diffs),
            "of": len(diffs),
        },
        "seconds": time.perf_counter() - start,
    }
    text = _table(result)
    print(text)
    if not args.quick:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "medical3d_pretrain_vs_scratch.txt").write_text(text)
        (args.out_dir / "medical3d_pretrain_vs_scratch.json").write_text(
            json.dumps(result, indent=2)
        )
    return result


def _table(result: dict[str, Any]) -> str:
    m, s = result["machine"], result["settings"]
    lines = [
        "medical3d: did pretraining help? BRATS whole-tumour Dice (2 validation subjects)",
        f"{m['date']}  {m['cpu']}  {m['threads']} threads  torch {m['torch']}  monai {m['monai']}",
        f"ViT-3D embed {s['embed_dim']} depth {s['depth']} patch {s['patch']}, crop "
        f"{s['crop']}^3 at {s['spacing']} mm; MAE pretraining {s['pretrain_steps']} steps on "
        f"5 unlabeled MRI volumes; fine-tuning {s['finetune_steps']} steps on 2 labeled FLAIR "
        f"volumes; seeds {s['seeds']}",
        "",
        f"{'init':<12}{'Dice mean ± std':>18}   per seed",
    ]
    for arm, rows in result["runs"].items():
        summ = result["summary"][arm]
        per_seed = ", ".join(f"{r['dice']:.4f}" for r in rows)
        lines.append(f"{arm:<12}{summ['mean']:>10.4f} ± {summ['std']:.4f}   {per_seed}")
    d = result["paired_difference"]
    lines += [
        "",
        f"paired difference (pretrained - scratch): {d['mean']:+.4f} ± {d['std']:.4f}; "
        f"pretrained better in {d['pretrained_better_in']} of {d['of']} seeds",
        f"total time {result['seconds']:.0f} s",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
