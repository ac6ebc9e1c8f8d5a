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

Method comparisons on the same tasks (issue 19), every pretrained backbone beside its own
architecture at random init:

* **medical3d_methods**: SparK (SegResNet encoder, ``configs/medical3d/spark_ct.yaml`` on the
  same unlabeled MRI) vs MAE (3D ViT) vs scratch, on the BRATS whole-tumour task;
* **geospatial_methods**: SoftCon (``configs/geospatial/softcon_s2.yaml``) vs MAE vs scratch
  on the LULC task (SoftCon's soft targets come from that LULC raster: see the plan's note).

Writes ``benchmarks/results/benchmark_<plan>/`` (``results.json``, ``results.md``,
``results.png``: runtime and peak memory are in them) and
``benchmarks/results/pretrain_vs_scratch_<plan>.txt`` (the commands, their wall time, the
machine).

Usage::

    python benchmarks/pretrain_vs_scratch.py --domain audio       # writes results/
    python benchmarks/pretrain_vs_scratch.py --domain medical3d_methods
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
class Pretrain:
    """One pretraining run: its label in the benchmark, the config and its overrides."""

    label: str
    config: str
    fit: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """One comparison: the pretraining runs, the task, the benchmark settings.

    Every pretrained backbone is compared with its own architecture at random init
    (``scratch@scratch:EXPORT`` for the first, ``scratch-LABEL`` for the others when their
    architecture differs); differences are against ``reference``.
    """

    pretrain: tuple[Pretrain, ...]
    task: Callable[[Path, Path], tuple[Path, tuple[str, ...]]]
    benchmark: str
    scratch_twins: tuple[str, ...] = ()  # labels (beyond the first) that get their own scratch
    reference: str = "scratch"
    note: str = ""


MEDICAL_MRI_FIT = (
    "--data.init_args.files=[medical/mni152_2009_nilearn/"
    "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz,"
    "medical/nibabel_pydicom_small/anatomical.nii,"
    "medical/totalsegmentator_examples/mr_labeled/example_mr_sm.nii.gz]",
    "--data.init_args.modality=mri",
    "--data.init_args.spacing=4.0",
    "--data.init_args.crop_size=48",
)
"""The unlabeled brain MRI the medical runs pretrain on (none of it in the BRATS task)."""

GEO_TASK = (
    "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band",
    "geospatial/eolearn_s2_slovenia_patch/labels/LULC.tif",
)


def geo_task(data: Path, tmp: Path) -> tuple[Path, tuple[str, ...]]:
    """Sentinel-2 land cover: the LULC raster over the scenes, 16 px windows in 32 px blocks
    (value 0, "no data", unlabeled)."""
    options = (f"labels={data / GEO_TASK[1]}", "window=16", "block=32", "ignore=0")
    return data / GEO_TASK[0], options


def medical_task(data: Path, tmp: Path) -> tuple[Path, tuple[str, ...]]:
    """BRATS whole tumour on FLAIR, an MSD task folder over the shipped cases."""
    return brats_msd(data, tmp / "brats_msd"), ("channels=FLAIR",)


PLANS = {
    "audio": Plan(
        pretrain=(Pretrain("mae", "configs/audio/mae_audio.yaml", ("--trainer.max_steps=300",)),),
        task=lambda data, tmp: (
            data / "audio" / "fsdd_spoken_digits" / "metadata.csv",
            ("label=digit",),
        ),
        benchmark="--protocol linear,knn,finetune --fractions 0.1,1.0 --finetune-steps 50",
    ),
    "geospatial": Plan(
        pretrain=(
            Pretrain("mae", "configs/geospatial/mae_s2.yaml", ("--trainer.max_steps=1000",)),
        ),
        task=geo_task,
        benchmark="--protocol linear,knn,finetune --fractions 0.1,1.0 --finetune-steps 50",
    ),
    "medical3d": Plan(
        pretrain=(
            Pretrain(
                "mae",
                "configs/medical3d/mae_quickstart.yaml",
                (
                    "--trainer.max_steps=300",
                    *MEDICAL_MRI_FIT,
                    "--model.init_args.backbone.init_args.patch_size=8",
                ),
            ),
        ),
        task=medical_task,
        benchmark="--protocol linear,knn,finetune --fractions 1.0 --finetune-steps 120 --folds 2",
    ),
    "medical3d_methods": Plan(
        pretrain=(
            Pretrain(
                "mae",
                "configs/medical3d/mae_quickstart.yaml",
                (
                    "--trainer.max_steps=300",
                    *MEDICAL_MRI_FIT,
                    "--model.init_args.backbone.init_args.patch_size=8",
                ),
            ),
            Pretrain(
                "spark",
                "configs/medical3d/spark_ct.yaml",
                ("--trainer.max_steps=300", *MEDICAL_MRI_FIT),
            ),
        ),
        scratch_twins=("spark",),
        task=medical_task,
        benchmark="--protocol linear,knn,finetune --fractions 1.0 --finetune-steps 60 --folds 2",
        note="SparK pretrains a CNN (SegResNet encoder), MAE a 3D ViT: each is compared with "
        "its own architecture at random init (scratch, scratch-spark). 60 fine-tuning steps (the "
        "MAE-only plan uses 120) to fit four backbones in one run on 2 CPU cores.",
    ),
    "geospatial_methods": Plan(
        pretrain=(
            Pretrain("mae", "configs/geospatial/mae_s2.yaml", ("--trainer.max_steps=1000",)),
            Pretrain(
                "softcon", "configs/geospatial/softcon_s2.yaml", ("--trainer.max_steps=1000",)
            ),
        ),
        task=geo_task,
        benchmark="--protocol linear,knn,finetune --fractions 0.1,1.0 --finetune-steps 50",
        note="SoftCon's soft targets come from the same LULC raster the task scores (class "
        "fractions per window, never a window's own label map): weakly supervised on the task's "
        "labels, not self-supervised as MAE; read its numbers as an upper reference.",
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


def run_plan(name: str, *, quick: bool, seeds: int, out_root: Path) -> None:
    plan = PLANS[name]
    data = example_data_root()
    env = {**os.environ, "DOMAINFM_DATA": str(data)}
    cli = [sys.executable, "-m", "domainfm.cli"]
    log: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"pvs_{name}_") as tmp_name:
        tmp = Path(tmp_name)
        steps = ("--trainer.max_steps=5",) if quick else ()
        backbones: list[str] = []
        for run in plan.pretrain:
            root = tmp / f"fit_{run.label}"
            fit = [
                *cli,
                "fit",
                "--config",
                run.config,
                *run.fit,
                *steps,
                f"--trainer.default_root_dir={root}",
                "--trainer.enable_progress_bar=false",
                "--data.init_args.num_workers=0",
            ]
            _run(fit, env, log)
            export = tmp / f"{run.label}_export"
            _run([*cli, "export", str(next(root.rglob("last.ckpt"))), str(export)], env, log)
            backbones += ["--backbone", f"{run.label}@{export}"]
            if run is plan.pretrain[0]:
                backbones += ["--backbone", f"scratch@scratch:{export}"]
            elif run.label in plan.scratch_twins:
                backbones += ["--backbone", f"scratch-{run.label}@scratch:{export}"]
        spec, options = plan.task(data, tmp)
        out = out_root / f"benchmark_{name}"
        bench = [*cli, "benchmark", "--task", str(spec)]
        for option in options:
            bench += ["--task-option", option]
        bench += [
            *backbones,
            "--reference",
            plan.reference,
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
        f"pretraining comparison ({name}): domainfm fit -> export -> benchmark",
        f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}",
        f"machine: {os.cpu_count()} CPUs; python {platform.python_version()}",
        *([f"note: {plan.note}"] if plan.note else []),
        "commands (wall time):",
        *log,
        f"results: {out / 'results.md'}",
        "",
        (out / "results.md").read_text(encoding="utf-8"),
    ]
    (out_root / f"pretrain_vs_scratch_{name}.txt").write_text("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--domain",
        choices=[*PLANS, "all"],
        default="all",
        help="a domain's MAE-vs-scratch plan, a *_methods comparison, or all of them",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smoke run into a temp folder")
    args = parser.parse_args()
    names = list(PLANS) if args.domain == "all" else [args.domain]
    out_root = Path(tempfile.mkdtemp(prefix="pvs_out_")) if args.quick else RESULTS
    for name in names:
        run_plan(name, quick=args.quick, seeds=args.seeds, out_root=out_root)
    print(f"wrote {out_root}")


if __name__ == "__main__":
    main()
