"""Did pretraining help? One ``domainfm benchmark`` per domain on the shipped labeled data.

For each domain: a short self-supervised pretraining run through ``domainfm fit`` (MAE, the
shipped config, on unlabeled data), exported with ``domainfm export``, then compared by
``domainfm benchmark`` with the same architecture at random init (``scratch:EXPORT``, the same
input contract): linear probe, kNN and few-label fine-tuning, over folds by group, label
fractions and seeds, with paired differences and their 95 % intervals.

* **audio**: MAE on the 14 unlabeled example recordings (music, speech, animals); task: the
  800 spoken-digit clips (FSDD ``metadata.csv``, label = digit), folds by speaker.
* **geospatial**: MAE on the 5 Sentinel-2 dates of the eo-learn patch; task: the LULC raster
  over the same scenes (value 0, "no data", unlabeled), 16 px windows in 32 px blocks, folds
  by block. The pretraining saw
  every pixel of the scenes (never a label): transductive, as SSL on a user's own archive is.
* **medical3d**: MAE on unlabeled brain MRI that is not in the task (MNI152 T1, nibabel's
  anatomical scan, the TotalSegmentator MR example); task: an MSD task folder over the 4
  BRATS cases (FLAIR, whole tumour from the manual labels), folds by case.

The three former scripts (``*_pretrain_vs_scratch.py``) each wired their own protocol; this is
one command per domain. Writes ``benchmarks/results/benchmark_<domain>/`` (``results.json``,
``results.md``, ``results.png``: runtime and peak memory are in them) and
``benchmarks/results/pretrain_vs_scratch_<domain>.txt`` (the commands, their wall time, the
machine).

Usage::

    python benchmarks/pretrain_vs_scratch.py --domain audio       # writes results/
    python benchmarks/pretrain_vs_scratch.py --domain all --quick # smoke run into a temp dir
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from domainfm.data.data_root import example_data_root  # noqa: E402


def brats_msd(data: Path, out: Path) -> Path:
    """An MSD task folder over the shipped BRATS cases: FLAIR images and the whole tumour
    (every manual label > 0: necrosis, edema, non-enhancing and enhancing tumour) as one class,
    the task of BRATS' "whole tumour" region, written as MSD's ``imagesTr``/``labelsTr``."""
    root = data / "medical" / "brats2015_deepmedic"
    training = []
    for case in sorted(root.glob("*/brats_2013_pat*")):  # train/ and validation/ cases
        for folder in ("imagesTr", "labelsTr"):
            (out / folder).mkdir(parents=True, exist_ok=True)
        image = out / "imagesTr" / f"{case.name}.nii.gz"
        image.symlink_to(case / "Flair_subtrMeanDivStd.nii.gz")
        labels = nib.load(case / "OTMultiClass.nii.gz")
        tumour = (np.asarray(labels.dataobj) > 0).astype(np.uint8)
        label = out / "labelsTr" / f"{case.name}.nii.gz"
        nib.save(nib.Nifti1Image(tumour, labels.affine, labels.header), label)
        training.append({"image": f"./imagesTr/{image.name}", "label": f"./labelsTr/{label.name}"})
    spec = {
        "name": "BRATS2013-whole-tumour",
        "modality": {"0": "FLAIR"},
        "labels": {"0": "background", "1": "whole tumour"},
        "numTraining": len(training),
        "training": training,
    }
    path = out / "dataset.json"
    path.write_text(json.dumps(spec, indent=2))
    return path


@dataclass(frozen=True)
class Plan:
    """One domain's run: the pretraining config and overrides, the task, the settings."""

    config: str
    fit: tuple[str, ...]
    task: Callable[[Path, Path], tuple[Path, tuple[str, ...]]]
    benchmark: str


PLANS = {
    "audio": Plan(
        config="configs/audio/mae_audio.yaml",
        fit=("--trainer.max_steps=300",),
        task=lambda data, tmp: (
            data / "audio" / "fsdd_spoken_digits" / "metadata.csv",
            ("label=digit",),
        ),
        benchmark="--protocol linear,knn,finetune --fractions 0.1,1.0 --finetune-steps 50",
    ),
    "geospatial": Plan(
        config="configs/geospatial/mae_s2.yaml",
        fit=("--trainer.max_steps=1000",),
        task=lambda data, tmp: (
            data / "geospatial" / "eolearn_s2_slovenia_patch" / "s2_l1c_13band",
            (
                f"labels={data / 'geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif'}",
                "window=16",
                "block=32",
                "ignore=0",  # LULC's "no data"
            ),
        ),
        benchmark="--protocol linear,knn,finetune --fractions 0.1,1.0 --finetune-steps 50",
    ),
    "medical3d": Plan(
        config="configs/medical3d/mae_quickstart.yaml",
        fit=(
            "--trainer.max_steps=300",
            "--data.init_args.files=[medical/mni152_2009_nilearn/"
            "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz,"
            "medical/nibabel_pydicom_small/anatomical.nii,"
            "medical/totalsegmentator_examples/mr_labeled/example_mr_sm.nii.gz]",
            "--data.init_args.modality=mri",
            "--data.init_args.spacing=4.0",
            "--data.init_args.crop_size=48",
            "--model.init_args.backbone.init_args.patch_size=8",
        ),
        task=lambda data, tmp: (brats_msd(data, tmp / "brats_msd"), ("channels=FLAIR",)),
        benchmark="--protocol linear,knn,finetune --fractions 1.0 --finetune-steps 120 --folds 2",
    ),
}


def _run(argv: list[str], env: dict[str, str], log: list[str]) -> float:
    """Run ``argv``, echo its output, record the command and its wall time."""
    start = time.perf_counter()
    print("$", " ".join(argv), flush=True)
    subprocess.run(argv, check=True, cwd=REPO, env=env)
    seconds = time.perf_counter() - start
    log.append(f"{seconds:7.1f} s  {' '.join(argv)}")
    return seconds


def run_domain(domain: str, *, quick: bool, seeds: int, out_root: Path) -> None:
    plan = PLANS[domain]
    data = example_data_root()
    env = {**os.environ, "DOMAINFM_DATA": str(data)}
    cli = [sys.executable, "-m", "domainfm.cli"]
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"pvs_{domain}_") as tmp_name:
        tmp = Path(tmp_name)
        steps = ("--trainer.max_steps=5",) if quick else ()
        fit = [
            *cli,
            "fit",
            "--config",
            plan.config,
            *plan.fit,
            *steps,
            f"--trainer.default_root_dir={tmp / 'fit'}",
            "--trainer.enable_progress_bar=false",
            "--data.init_args.num_workers=0",
        ]
        _run(fit, env, log)
        export = tmp / "mae_export"
        _run([*cli, "export", str(next((tmp / "fit").rglob("last.ckpt"))), str(export)], env, log)
        spec, options = plan.task(data, tmp)
        out = out_root / f"benchmark_{domain}"
        bench = [*cli, "benchmark", "--task", str(spec)]
        for option in options:
            bench += ["--task-option", option]
        bench += [
            "--backbone",
            f"mae@{export}",
            "--backbone",
            f"scratch@scratch:{export}",
            "--reference",
            "scratch",
            "--seeds",
            str(1 if quick else seeds),
            *plan.benchmark.split(),
            "--out",
            str(out),
            "--no-progress",
        ]
        if quick:
            bench += ["--finetune-steps", "2"]
        _run(bench, env, log)
    text = [
        f"pretrain vs scratch ({domain}): domainfm fit -> export -> benchmark",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"machine: {os.cpu_count()} CPUs; python {platform.python_version()}",
        "commands (wall time):",
        *log,
        f"results: {out / 'results.md'}",
        "",
        (out / "results.md").read_text(encoding="utf-8"),
    ]
    (out_root / f"pretrain_vs_scratch_{domain}.txt").write_text("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=[*PLANS, "all"], default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run into a temp folder")
    args = parser.parse_args()
    domains = list(PLANS) if args.domain == "all" else [args.domain]
    out_root = Path(tempfile.mkdtemp(prefix="pvs_out_")) if args.quick else RESULTS
    for domain in domains:
        run_domain(domain, quick=args.quick, seeds=args.seeds, out_root=out_root)
    print(f"wrote {out_root}")


if __name__ == "__main__":
    main()
