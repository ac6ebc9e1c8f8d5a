"""``domainfm benchmark`` end to end, in-process, on the shipped data (issue 18): one command
per domain writes results.json (every backbone x protocol x fraction x seed x fold), the
Markdown table and the PNG; the same seeds give the same numbers and a re-run reuses the
feature cache; a split that leaks a group is refused; bad input is one line with exit 2;
``--adapt`` runs from an export and from a registered release (BYOL-A) built here.

Backbones are tiny (``vit_nd`` of depth 1, width 32) exports written here, and their
``scratch:`` random inits; 2 folds, 2 seeds, 2 fine-tuning steps."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from runpy import run_path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from domainfm import load_backbone
from domainfm.core.backbone import build_backbone
from domainfm.domains.plugin import get_domain
from domainfm.pretrained.export import export_backbone
from domainfm.tasks.benchmark.splits import make_folds

_run = run_path(str(Path(__file__).with_name("cli_run.py")))["run_cli"]

DIGITS = "audio/fsdd_spoken_digits"
S2 = "geospatial/eolearn_s2_slovenia_patch"
BRATS = "medical/brats2015_deepmedic"
BRATS_LABELS = ("background", "necrosis", "edema", "non-enhancing tumour", "enhancing tumour")
STEP = 4
"""The BRATS cases are subsampled to every 4th voxel (4 mm), as the medical3d tests do."""
PLAN = ["--seeds", "2", "--folds", "2", "--finetune-steps", "2", "--no-progress"]
PNG = b"\x89PNG\r\n\x1a\n"
ERROR = "domainfm benchmark: error:"


def _vit_export(folder: Path, domain: str, **kwargs: Any) -> Path:
    """A tiny ``vit_nd`` export (depth 1, width 32), drawn with seed 0."""
    kwargs = {"spatial_dims": 2, "embed_dim": 32, "depth": 1, "num_heads": 2, **kwargs}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_backbone("vit_nd", kwargs)
    meta = {"backbone": {"architecture": "vit_nd", "kwargs": kwargs}, "domain": domain}
    return export_backbone(model, folder, meta=meta)


@pytest.fixture(scope="module")
def audio_csv(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 shipped FSDD clips (george, jackson x digits 0-2 x takes 0-2) as a CSV with the
    shipped metadata's columns ``file,digit,speaker``, paths relative to the CSV."""
    with open(data_root / DIGITS / "metadata.csv", newline="") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r["speaker"] in ("george", "jackson") and r["digit"] in "012" and int(r["take"]) < 3
        ]
    assert len(rows) == 18
    path = tmp_path_factory.mktemp("audio_task") / "digits.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "digit", "speaker"])
        for r in rows:
            clip = data_root / DIGITS / r["file"]
            writer.writerow([os.path.relpath(clip, path.parent), r["digit"], r["speaker"]])
    return path


@pytest.fixture(scope="module")
def audio_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exports") / "vit_audio"
    return _vit_export(folder, "audio", in_chans=1, patch_size=16)


def _audio(spec: Path, out: Path, *backbones: str, protocols: str = "knn") -> list[str]:
    argv = ["benchmark", "--task", str(spec), "--task-option", "label=digit"]
    for backbone in backbones:
        argv += ["--backbone", backbone]
    return [*argv, "--protocol", protocols, *PLAN, "--out", str(out)]


def _results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


def _check_outputs(
    out: Path,
    stdout: str,
    *,
    backbones: Sequence[str],
    protocols: Sequence[str],
    fractions: Sequence[float],
    reference: str,
) -> dict[str, Any]:
    """results.json holds every backbone x protocol x fraction x seed x fold once, each with
    its headline metric in [0, 1]; the summary compares every other backbone with the
    reference over both seeds; results.md has a row per backbone and protocol; results.png
    is a PNG."""
    results = _results(out)
    assert f"wrote {out / 'results.json'}" in stdout
    headline = results["headline"]
    plan = [
        (r["backbone"], r["protocol"], r["fraction"], r["seed"], r["fold"]) for r in results["runs"]
    ]
    expected = set(itertools.product(backbones, protocols, fractions, (0, 1), (0, 1)))
    assert len(plan) == len(expected) and set(plan) == expected
    for run in results["runs"]:
        value = run["metrics"][headline]
        assert value is not None and 0.0 <= value <= 1.0, run
        assert run["seconds"] >= 0.0
    assert [b["label"] for b in results["backbones"]] == list(backbones)
    assert results["reference"] == reference
    rows = [r for r in results["summary"] if r["metric"] == headline]
    assert len(rows) == len(backbones) * len(protocols) * len(fractions)
    for row in rows:
        assert row["n"] == 2 and set(row["per_seed"]) == {"0", "1"}
        assert row["mean"] == pytest.approx(sum(row["per_seed"].values()) / 2)
        if row["backbone"] == reference:
            assert row["vs_reference"] is None
        else:
            versus = row["vs_reference"]
            assert versus["reference"] == reference and versus["n"] == 2
            assert 0 <= versus["wins"] <= 2 and versus["low"] <= versus["mean"] <= versus["high"]
            ref = next(
                r
                for r in rows
                if (r["backbone"], r["protocol"], r["fraction"])
                == (reference, row["protocol"], row["fraction"])
            )
            assert versus["mean"] == pytest.approx(row["mean"] - ref["mean"], abs=1e-9)
    table = (out / "results.md").read_text()
    assert table in stdout  # printed too
    sections = table.split("\n## ")[1:]
    assert [s.splitlines()[0] for s in sections] == list(protocols)
    for section in sections:
        starts = [r.rsplit(" | ", 2)[0] for r in section.splitlines()[4:] if r.startswith("| ")]
        assert sorted(starts) == sorted(f"| {b} | {f:g}" for b in backbones for f in fractions)
    assert (out / "results.png").read_bytes()[:8] == PNG
    return results


def test_audio_csv_of_clips_linear_knn_finetune(
    audio_csv: Path, audio_vit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = _audio(audio_csv, out, str(audio_vit), f"scratch:{audio_vit}")
    argv[argv.index("knn")] = "linear,knn,finetune"
    code, stdout, err = _run([*argv, "--fractions", "0.5,1"], capsys)
    assert code == 0, err
    backbones = ("vit_audio", "scratch:vit_audio")
    results = _check_outputs(
        out,
        stdout,
        backbones=backbones,
        protocols=("linear", "knn", "finetune"),
        fractions=(0.5, 1.0),
        reference="vit_audio",
    )
    task = results["task"]
    assert (task["domain"], task["kind"], task["classes"], task["items"]) == (
        "audio",
        "classification",
        ["0", "1", "2"],
        18,
    )
    assert results["folds"] == [{"train": 9, "test": 9}] * 2  # one speaker held out per fold
    for run in results["runs"]:  # 3 clips per digit train; half of them: ceil(1.5) each
        assert (run["train_items"], run["test_items"]) == ({0.5: 6, 1.0: 9}[run["fraction"]], 9)
        assert set(run["metrics"]) >= {"accuracy", "macro_f1"}
    described = {b["label"]: b for b in results["backbones"]}
    assert described["vit_audio"]["pretrained"] and not described["scratch:vit_audio"]["pretrained"]
    assert results["settings"]["finetune_steps"] == 2 and results["peak_memory_mb"] > 0


def test_geospatial_scene_and_label_raster(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vit = _vit_export(tmp_path / "vit_geo", "geospatial", in_chans=13, patch_size=8)
    out = tmp_path / "out"
    argv = ["benchmark", "--task", str(data_root / S2 / "s2_l1c_13band/S2_L1C_2015-07-11.tif")]
    for option in (f"labels={data_root / S2 / 'labels/LULC.tif'}", "window=16", "block=32"):
        argv += ["--task-option", option]
    argv += ["--task-option", "ignore=0", "--backbone", f"scratch:{vit}", "--backbone", str(vit)]
    code, stdout, err = _run([*argv, "--reference", "vit_geo", *PLAN, "--out", str(out)], capsys)
    assert code == 0, err
    results = _check_outputs(
        out,
        stdout,
        backbones=("scratch:vit_geo", "vit_geo"),
        protocols=("linear", "knn"),
        fractions=(1.0,),
        reference="vit_geo",
    )
    task = results["task"]
    assert (task["kind"], task["classes"]) == (
        "segmentation",
        ["unlabeled", "1", "2", "3", "4", "8"],
    )
    # 7 x 7 windows of 16 px in 9 blocks (the last, narrow block row/column merged); folds
    # are whole blocks, every window tested once
    assert task["items"] == 49 and results["headline"] == "miou"
    assert sorted(f["test"] for f in results["folds"]) == [20, 29]
    assert all(f["train"] + f["test"] == 49 for f in results["folds"])
    assert all({"miou", "accuracy", "macro_f1"} <= set(r["metrics"]) for r in results["runs"])


@pytest.fixture(scope="module")
def brats_msd(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MSD ``dataset.json`` over the 4 shipped BRATS cases (FLAIR, manual labels 0-4),
    subsampled to 4 mm."""
    root = tmp_path_factory.mktemp("msd") / "Task01_BRATS_mini"
    training = []
    for subject in sorted((data_root / BRATS).glob("*/brats_2013_pat*")):  # train/, validation/
        case = subject.name
        for stem, folder, dtype in (
            ("Flair_subtrMeanDivStd", "imagesTr", np.float32),
            ("OTMultiClass", "labelsTr", np.uint8),
        ):
            image = nib.load(subject / f"{stem}.nii.gz")
            array = np.asarray(image.dataobj)[::STEP, ::STEP, ::STEP].astype(dtype)
            affine = image.affine @ np.diag([STEP, STEP, STEP, 1.0])
            (root / folder).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(array, affine), root / folder / f"{case}.nii.gz")
        training.append(
            {"image": [f"./imagesTr/{case}.nii.gz"], "label": f"./labelsTr/{case}.nii.gz"}
        )
    spec = root / "dataset.json"
    spec.write_text(
        json.dumps(
            {
                "name": "BRATS-mini",
                "tensorImageSize": "3D",
                "modality": {"0": "FLAIR"},
                "labels": {str(k): name for k, name in enumerate(BRATS_LABELS)},
                "numTraining": len(training),
                "training": training,
            }
        )
    )
    return spec


def test_medical_msd_dataset_json(
    brats_msd: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vit = _vit_export(tmp_path / "vit_med", "medical3d", in_chans=1, spatial_dims=3, patch_size=4)
    out = tmp_path / "out"
    argv = ["benchmark", "--task", str(brats_msd), "--task-option", "spacing=8"]
    argv += ["--task-option", "roi=16", "--backbone", str(vit), "--backbone", f"scratch:{vit}"]
    code, stdout, err = _run([*argv, *PLAN, "--out", str(out)], capsys)
    assert code == 0, err
    results = _check_outputs(
        out,
        stdout,
        backbones=("vit_med", "scratch:vit_med"),
        protocols=("linear", "knn"),
        fractions=(1.0,),
        reference="vit_med",
    )
    task = results["task"]
    assert (task["name"], task["domain"], task["kind"], task["items"]) == (
        "BRATS-mini",
        "medical3d",
        "segmentation",
        4,
    )
    assert task["classes"] == list(BRATS_LABELS)
    assert task["options"] == {"spacing": "8", "roi": "16"}
    assert results["folds"] == [{"train": 2, "test": 2}] * 2  # a case is its own patient
    for run in results["runs"]:
        # background dominates the brain volumes: voxel accuracy is high whatever the model
        assert 0.5 < run["metrics"]["accuracy"] <= 1.0 and 0.0 <= run["metrics"]["dice"] <= 1.0


def _strip(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in run.items() if k != "seconds"} for run in runs]


def _stamps(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()
    }


def test_the_same_seeds_give_the_same_numbers_and_a_rerun_reuses_the_cache(
    audio_csv: Path, audio_vit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(out: Path) -> dict[str, Any]:
        argv = _audio(audio_csv, out, str(audio_vit), f"scratch:{audio_vit}")
        argv[argv.index("knn")] = "linear,knn,finetune"
        code, _, err = _run([*argv, "--adapt", "mae", "--adapt-steps", "2"], capsys)
        assert code == 0, err
        return _results(out)

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert len(first["runs"]) == 3 * 3 * 2 * 2  # 3 variants (+adapt) x 3 protocols x 2 x 2
    assert _strip(first["runs"]) == _strip(second["runs"])
    assert first["summary"] == second["summary"]
    # the numbers are not constant: seeds and backbones differ somewhere
    assert len({json.dumps(r["metrics"], sort_keys=True) for r in first["runs"]}) > 3

    cache = tmp_path / "a" / "cache" / "features"
    # one file per pretrained backbone, per random-init seed and per adapted fold
    assert len(list(cache.glob("*.safetensors"))) == 1 + 2 + 2
    before = {**_stamps(cache), **_stamps(tmp_path / "a" / "adapted")}
    again = run(tmp_path / "a")
    assert {**_stamps(cache), **_stamps(tmp_path / "a" / "adapted")} == before  # nothing rewritten
    assert _strip(again["runs"]) == _strip(first["runs"])


def test_a_split_that_puts_a_speaker_on_both_sides_is_refused(
    audio_csv: Path,
    audio_vit: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No task reader makes a leaky split (folds are made by group; HEAR's own folds have no
    groups), so the CLI is given a task with predefined folds through the audio reader:
    the real CSV task with folds that put one of jackson's clips with george's."""
    hooks = get_domain("audio").benchmark
    assert hooks is not None
    task = hooks.read_task(audio_csv, {"label": "digit"})
    assert task is not None and not task.folds

    def speaker(name: str) -> frozenset[str]:
        return frozenset(i.key for i in task.items if i.group == name)

    george, jackson = speaker("george"), speaker("jackson")
    assert len(george) == len(jackson) == 9
    clean = replace(task, folds=(george, jackson))
    assert make_folds(clean) == make_folds(task)  # the group folds are one speaker each
    first = min(jackson)
    leaky = replace(task, folds=(george | {first}, jackson - {first}))
    with pytest.raises(ValueError, match="group 'jackson' is on both sides of a split"):
        make_folds(leaky)

    monkeypatch.setattr(hooks, "read_task", lambda spec, options: leaky)
    out = tmp_path / "out"
    code, stdout, err = _run(_audio(audio_csv, out, str(audio_vit)), capsys)
    assert code == 2 and stdout == ""
    assert len(err.splitlines()) == 1 and err.startswith(ERROR) and "Traceback" not in err
    assert f"{audio_csv}: group 'jackson' is on both sides of a split" in err
    assert not out.exists()  # refused before any work


@pytest.fixture(scope="module")
def bad_specs(audio_csv: Path) -> dict[str, Path]:
    """A text file no domain reads, and a multi-label CSV of the same clips (``;``)."""
    notes = audio_csv.with_name("notes.txt")
    notes.write_text("file,label\nclip.wav,1\n")
    multi = audio_csv.with_name("tags.csv")
    with open(audio_csv, newline="") as src, open(multi, "w", newline="") as dst:
        rows = list(csv.reader(src))
        writer = csv.writer(dst)
        writer.writerow(["file", "label", "group"])
        for k, (file, digit, speaker) in enumerate(rows[1:]):
            writer.writerow([file, f"{digit};odd" if k % 2 else digit, speaker])
    return {"notes": notes, "multi": multi}


BAD = {
    "missing_spec": (
        ["--task", "{dir}/gone.csv"],
        "{dir}/gone.csv: the task spec does not exist",
    ),
    "spec_no_domain_reads": (
        ["--task", "{notes}"],
        "{notes}: no installed domain (audio, geospatial, medical3d) reads this",
    ),
    "unknown_protocol": (
        ["--protocol", "svm"],
        "argument --protocol: unknown protocol ['svm']: choose from linear, knn, finetune",
    ),
    "zero_fraction": (
        ["--fractions", "0"],
        "argument --fractions: fractions must be comma-separated numbers in (0, 1]",
    ),
    "unknown_release": (
        ["--backbone", "release:no-such=x"],
        "--backbone 'release:no-such=x': no registered release 'no-such'",
    ),
    "another_domains_contract": (
        ["--backbone", "scratch:ssl4eo-s12-vit-small-patch16-mae"],
        "--backbone 'scratch:ssl4eo-s12-vit-small-patch16-mae' expects raster input; the task "
        "is audio",
    ),
    "finetune_multilabel": (
        ["--task", "{multi}", "--protocol", "finetune"],
        "audio fine-tuning takes classification and timestamps tasks; 'tags' is a multilabel task",
    ),
    "unknown_reference": (
        ["--reference", "nope"],
        "--reference 'nope' names none of the backbones",
    ),
    "unknown_adapt_recipe": (
        ["--adapt", "simclr"],
        "adapt recipe 'simclr': this domain has mae, byol",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_and_exit_2(
    case: str,
    audio_csv: Path,
    audio_vit: Path,
    bad_specs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    extra, expected = BAD[case]
    names = {"dir": str(audio_csv.parent), **{k: str(v) for k, v in bad_specs.items()}}
    extra = [arg.format(**names) for arg in extra]
    out = tmp_path / "out"
    argv = _audio(audio_csv, out, str(audio_vit))
    if "--task" in extra:  # a task of its own, without the digits CSV's option
        del argv[1:5]
        argv[1:1] = extra[:2]
        extra = extra[2:]
    if "--backbone" in extra:  # instead of the export
        del argv[argv.index("--backbone") : argv.index("--backbone") + 2]
    code, stdout, err = _run([*argv, *extra], capsys)
    assert code == 2 and stdout == ""
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"{ERROR} {expected.format(**names)}"), err
    assert not out.exists()  # refused before any work


def test_an_output_that_is_a_file_is_refused_and_kept(
    audio_csv: Path, audio_vit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.txt"
    out.write_text("mine")
    code, stdout, err = _run(_audio(audio_csv, out, str(audio_vit)), capsys)
    assert code == 2 and stdout == "" and len(err.splitlines()) == 1
    assert err.startswith(f"{ERROR} {out}: --out is an existing file; give a folder"), err
    assert out.read_text() == "mine"


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    assert a.keys() == b.keys()
    return any(not torch.equal(a[k], b[k]) for k in a)


def test_adapt_an_export_with_mae(
    audio_csv: Path, audio_vit: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = [*_audio(audio_csv, out, str(audio_vit)), "--adapt", "mae"]
    code, stdout, err = _run([*argv, "--adapt-steps", "2"], capsys)
    assert code == 0, err
    results = _check_outputs(
        out,
        stdout,
        backbones=("vit_audio", "vit_audio+adapt"),
        protocols=("knn",),
        fractions=(1.0,),
        reference="vit_audio",
    )
    adapted = results["backbones"][1]
    assert (adapted["adapted_from"], adapted["architecture"]) == ("vit_audio", "vit_nd")
    original = _tensors(audio_vit)
    weights = []
    for fold in (0, 1):
        folder = out / "adapted" / "vit_audio+adapt" / f"fold{fold}"
        model, report = load_backbone(folder)
        assert report.ok and type(model).__name__ == "VisionTransformerND"
        assert model.embed_dim == 32
        provenance = json.loads((folder / "config.json").read_text())["provenance"]
        assert (provenance["recipe"], provenance["steps"], provenance["fold"]) == ("mae", 2, fold)
        assert provenance["benchmark_adapted_from"] == str(audio_vit)
        weights.append(_tensors(folder))
        assert _changed(weights[-1], original)  # 2 steps of MAE moved the weights
    assert _changed(weights[0], weights[1])  # each fold adapts on its own training clips

    # another number of steps into the same folder adapts again (never a stale model)
    code, _, err = _run([*argv, "--adapt-steps", "3"], capsys)
    assert code == 0, err
    folder = out / "adapted" / "vit_audio+adapt" / "fold0"
    assert json.loads((folder / "config.json").read_text())["provenance"]["steps"] == 3
    assert _changed(_tensors(folder), weights[0])


def test_adapt_a_registered_release_with_byol(
    audio_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A BYOL-A d512 release file (``AudioNTT2020-BYOLA-64x96d512.pth``: our AudioNTT2020's
    key names and shapes are the release's, ``features.*`` / ``fc.*``; the smallest
    registered width), random values saved with ``torch.save``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_backbone("audio_ntt2020", {"n_mels": 64, "d": 512})
    state = model.state_dict()
    assert state["fc.0.weight"].shape == (512, 512) and "features.0.weight" in state
    release = tmp_path / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(state, release)
    out = tmp_path / "out"
    name = "byola-audiontt2020-d512"
    argv = _audio(audio_csv, out, f"release:{name}={release}")
    code, stdout, err = _run([*argv, "--adapt", "byol", "--adapt-steps", "2"], capsys)
    assert code == 0, err
    results = _check_outputs(
        out,
        stdout,
        backbones=(name, f"{name}+adapt"),
        protocols=("knn",),
        fractions=(1.0,),
        reference=name,
    )
    released, adapted = results["backbones"]
    assert (released["released"], released["source"]) == (name, str(release))
    assert (adapted["adapted_from"], adapted["architecture"]) == (name, "audio_ntt2020")
    for fold in (0, 1):
        folder = out / "adapted" / f"{name}+adapt" / f"fold{fold}"
        loaded, report = load_backbone(folder)
        assert report.ok and type(loaded).__name__ == "AudioNTT2020"
        config = json.loads((folder / "config.json").read_text())
        assert config["kwargs"] == {"n_mels": 64, "d": 512}
        # the release's input contract travels with the adapted weights
        assert (config["input"]["frames"], config["input"]["frontend"]["architecture"]) == (
            96,
            "log_mel",
        )
        assert config["provenance"]["recipe"] == "byol"
        assert _changed(_tensors(folder), state)
    for run in results["runs"]:
        assert math.isfinite(run["metrics"]["accuracy"])
