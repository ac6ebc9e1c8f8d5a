"""The CLI's answers to hostile input (issue 16): one error line naming the file, the CLI's
own one-line warnings, Lightning's information on stdout, numeric options refused when the
command line is parsed, an existing export never overwritten, ``--ckpt_path`` checked before
anything is built, a checkpoint that does not fit the model summarized in one line, backbones
of a config size-checked before they are built, sparse tensors refused by the safe loader."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from pathlib import Path
from runpy import run_path
from typing import Any

import pytest
import torch

from domainfm.core.checkpoint_io import (
    UnsafeCheckpointError,
    read_json_document,
    safe_torch_load,
)
from domainfm.core.cli_output import cli_warnings, lightning_log_lines
from domainfm.core.size_guard import LIMIT_ENV
from domainfm.core.vit import VisionTransformerND
from domainfm.data.preparer import parse_chunk_bytes
from domainfm.pretrained.export import check_export_folder
from domainfm.pretrained.report import CheckpointMismatchError, LoadReport, compare_state_dict
from domainfm.tasks.finetune_module import load_finetuned
from domainfm.tasks.lightning_cli import config_backbones

FIXTURES = Path(__file__).resolve().parent / "fixtures/legacy_0_1"
SEG_CT = FIXTURES / "seg_ct.pt"
"""A FinetuneModule segmentation checkpoint (2 classes, a 1-block 3D ViT)."""

FIT_CONFIG = """\
seed_everything: false
trainer:
  max_steps: 1
  logger: false
  enable_progress_bar: false
  default_root_dir: {root}
model:
  class_path: domainfm.tasks.finetune_module.FinetuneModule
  init_args:
    task: classification
    num_classes: 2
    backbone:
      class_path: domainfm.core.vit.VisionTransformerND
      init_args: {{in_chans: 1, spatial_dims: 3, patch_size: 8, embed_dim: {width}, depth: 1,
                  num_heads: 2}}
data:
  class_path: lightning.pytorch.demos.boring_classes.BoringDataModule
"""


_run = run_path(str(Path(__file__).with_name("cli_run.py")))["run_cli"]


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"domainfm {command}: error: "), err
    return lines[0]


def _fit_config(tmp_path: Path, width: int = 16) -> Path:
    config = tmp_path / "fit.yaml"
    config.write_text(FIT_CONFIG.format(root=tmp_path, width=width))
    return config


def _edited_checkpoint(tmp_path: Path, edit: Any, name: str = "model.ckpt") -> Path:
    ckpt = torch.load(SEG_CT, weights_only=True)
    edit(ckpt)
    path = tmp_path / name
    torch.save(ckpt, path)
    return path


# -- warnings and log lines ------------------------------------------------------------


def test_a_warning_is_one_line_of_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings(), cli_warnings("fit"):
        warnings.simplefilter("always")
        warnings.warn("skipped a.wav: truncated\n  (2.4 s of 6.0 s)", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    assert err == "domainfm fit: warning: skipped a.wav: truncated; (2.4 s of 6.0 s)\n", err


def test_lightning_info_goes_to_stdout_warnings_to_stderr_chatter_nowhere(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = logging.getLogger("lightning.pytorch.test_fixes")
    with lightning_log_lines("fit"):
        log.info("Restoring states from the checkpoint path at x.ckpt")
        log.info("[rank: 0] Seed set to 0")
        log.info("GPU available: False (cuda), used: False")
        log.warning("a Lightning warning\nover two lines")
    out, err = capsys.readouterr()
    assert out == "Restoring states from the checkpoint path at x.ckpt\n", out
    assert err == "domainfm fit: warning: a Lightning warning; over two lines\n", err


# -- numeric options: refused at parse time, one line, exit 2 ---------------------------

BAD_OPTIONS = {
    "segment_sw_batch_size_0": (
        ["segment", "absent.ckpt", "in.nii.gz", "out.nii.gz", "--sw-batch-size", "0"],
        "--sw-batch-size",
    ),
    "segment_overlap_1": (
        ["segment", "absent.ckpt", "in.nii.gz", "out.nii.gz", "--overlap", "1"],
        "--overlap",
    ),
    "segment_overlap_nan": (
        ["segment", "absent.ckpt", "in.nii.gz", "out.nii.gz", "--overlap", "nan"],
        "--overlap",
    ),
    "detect_batch_size_0": (
        ["detect", "absent.ckpt", "in.tif", "out.geojson", "--batch-size", "0"],
        "--batch-size",
    ),
    "detect_score_threshold_2": (
        ["detect", "absent.ckpt", "in.tif", "out.geojson", "--score-threshold", "2"],
        "--score-threshold",
    ),
    "sed_threshold_negative": (
        ["sed", "absent.ckpt", "out.csv", "a.wav", "--threshold", "-0.1"],
        "--threshold",
    ),
    "prepare_chunk_bytes_lots": (
        ["prepare", "medical3d", "src", "out", "--chunk-bytes", "lots"],
        "--chunk-bytes",
    ),
    "prepare_audio_sample_rate_0": (
        ["prepare", "audio", "src", "out", "--sample-rate", "0"],
        "--sample-rate",
    ),
    "prepare_workers_negative": (
        ["prepare", "audio", "src", "out", "--num-workers", "-1"],
        "--num-workers",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_a_bad_number_is_a_one_line_usage_error(
    case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv, option = BAD_OPTIONS[case]
    code, _, err = _run(argv, capsys)
    line = _one_error_line(err, argv[0])
    assert code == 2 and option in line, err


def test_chunk_bytes_spellings() -> None:
    assert parse_chunk_bytes("64MB") == "64MB"
    assert parse_chunk_bytes("1000000") == "1000000b"
    for bad in ("lots", "0", "-1MB", "inf", "12 parsecs"):
        with pytest.raises(ValueError, match=r"chunk|size|byte"):
            parse_chunk_bytes(bad)


@pytest.mark.parametrize("argv", [["--max-alloc-gb"], ["--max-alloc-gb="], ["--max-alloc-gb", " "]])
def test_max_alloc_gb_without_a_value_is_a_usage_error(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    full = [*argv, "inspect", str(FIXTURES / "export_vit3d")]
    if argv == ["--max-alloc-gb"]:
        full = ["inspect", str(FIXTURES / "export_vit3d"), "--max-alloc-gb"]
    code, _, err = _run(full, capsys)
    assert code == 2 and "--max-alloc-gb needs a value" in _one_error_line(err, "inspect")


# -- export never overwrites -------------------------------------------------------------


def test_export_refuses_a_folder_holding_an_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = shutil.copy(SEG_CT, tmp_path / "model.ckpt")
    out = tmp_path / "exported"
    out.mkdir()
    (out / "config.json").write_text('{"format": "mine"}')
    code, _, err = _run(["export", str(ckpt), str(out)], capsys)
    assert code == 2 and str(out) in _one_error_line(err, "export") and "--overwrite" in err
    assert (out / "config.json").read_text() == '{"format": "mine"}'
    assert not (out / "model.safetensors").exists()
    code, _, err = _run(["export", str(ckpt), str(out), "--overwrite"], capsys)
    assert code == 0 and json.loads((out / "config.json").read_text())["format"] != "mine", err


def test_check_export_folder(tmp_path: Path) -> None:
    ckpt = tmp_path / "a.ckpt"
    ckpt.write_bytes(b"x")
    assert check_export_folder(tmp_path / "new", source=ckpt) == tmp_path / "new"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match="already holds an export"):
        check_export_folder(tmp_path / "old", source=ckpt)
    check_export_folder(tmp_path / "old", source=ckpt, overwrite=True)
    with pytest.raises(ValueError, match="not a folder"):
        check_export_folder(ckpt, source=tmp_path / "other.ckpt")


# -- checkpoints that do not fit ---------------------------------------------------------


def test_load_report_summary_is_one_line_naming_the_source() -> None:
    report = LoadReport(
        source="run/last.ckpt",
        missing=["a", "b", "c", "d"],
        unexpected=["x"],
        mismatched=[("w", (1, 2), (3,))],
    )
    text = report.summary()
    assert "\n" not in text and text.startswith("run/last.ckpt: does not fit this model: ")
    assert "4 missing (a, b, c, … 1 more)" in text and "1 unexpected (x)" in text
    assert "1 mismatched (w: model (1, 2) vs checkpoint (3,))" in text


def test_compare_state_dict_loads_nothing() -> None:
    model = torch.nn.Linear(2, 3)
    before = model.weight.detach().clone()
    state = {"weight": torch.zeros(3, 2), "bias": torch.zeros(2), "extra": torch.zeros(1)}
    report = compare_state_dict(model, state, source="s.ckpt")
    assert report.loaded == ["weight"] and report.unexpected == ["extra"]
    assert report.mismatched == [("bias", (3,), (2,))] and not report.ok
    assert torch.equal(model.weight, before)


def test_segment_with_a_missing_tensor_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = _edited_checkpoint(tmp_path, lambda c: c["state_dict"].pop("head.head.bias"))
    with pytest.raises(CheckpointMismatchError):  # the API keeps the full report
        load_finetuned(ckpt)
    code, _, err = _run(["segment", str(ckpt), "in.nii.gz", str(tmp_path / "o.nii.gz")], capsys)
    line = _one_error_line(err, "segment")
    assert code == 2 and f"{ckpt}: does not fit this model: 1 missing (head.head.bias)" in line


def test_a_recipe_the_module_refuses_names_the_checkpoint(tmp_path: Path) -> None:
    ckpt = _edited_checkpoint(
        tmp_path, lambda c: c["domainfm"]["recipe"]["finetune"].update(num_classes=1)
    )
    with pytest.raises(ValueError, match=r"model\.ckpt: .*num_classes"):
        load_finetuned(ckpt)


def test_sparse_tensors_are_refused_without_torch_warning(tmp_path: Path) -> None:
    path = tmp_path / "sparse.ckpt"
    torch.save({"state_dict": {"w": torch.eye(3).to_sparse()}}, path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(UnsafeCheckpointError, match=r"sparse\.ckpt: .*\['w'\]"):
            safe_torch_load(path)
    assert not [w for w in caught if "Sparse" in str(w.message)], caught


def test_deeply_nested_json_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match=r"config\.json: .*nested too deeply"):
        read_json_document(path, "x", what="config")


# -- backbones: clear arguments, sizes checked before building ---------------------------


@pytest.mark.parametrize(
    ("change", "name"),
    [
        ({"num_heads": 0}, "num_heads"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"embed_dim": 10}, "divisible by num_heads"),
        ({"depth": -1}, "depth"),
        ({"in_chans": 0}, "in_chans"),
        ({"mlp_ratio": float("nan")}, "mlp_ratio"),
    ],
)
def test_vit_arguments_are_checked_by_name(change: dict[str, Any], name: str) -> None:
    kwargs: dict[str, Any] = {
        "in_chans": 1,
        "spatial_dims": 2,
        "patch_size": 4,
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 4,
    }
    with pytest.raises(ValueError, match=name):
        VisionTransformerND(**{**kwargs, **change})


def test_config_backbones_finds_nested_backbones() -> None:
    config = {
        "fit": {
            "model": {
                "class_path": "x.Module",
                "init_args": {
                    "backbone": {
                        "class_path": "domainfm.core.vit.VisionTransformerND",
                        "init_args": {"in_chans": 1, "spatial_dims": 2},
                    }
                },
            },
            "trainer": {"callbacks": [{"class_path": "os.system", "init_args": {}}]},
        }
    }
    found: list[tuple[type, dict[str, Any]]] = []
    config_backbones(config, found)
    assert found == [(VisionTransformerND, {"in_chans": 1, "spatial_dims": 2})]


def test_a_huge_backbone_in_a_config_is_refused_before_it_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LIMIT_ENV, "1")
    config = _fit_config(tmp_path, width=65536)  # about 48 GiB of weights
    code, _, err = _run(["fit", "--config", str(config)], capsys)
    line = _one_error_line(err, "fit")
    assert code == 2 and f"{config}: the VisionTransformerND backbone" in line and "GiB" in line


def test_zero_heads_in_a_config_names_num_heads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _fit_config(tmp_path)
    config.write_text(config.read_text().replace("num_heads: 2", "num_heads: 0"))
    code, _, err = _run(["fit", "--config", str(config)], capsys)
    line = _one_error_line(err, "fit")
    assert code == 2 and "num_heads" in line and str(config) in line


# -- fit: config files and --ckpt_path ---------------------------------------------------


def test_a_config_that_is_no_utf8_text_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "latin.yaml"
    config.write_bytes("trainer:\n  max_steps: \xff\n".encode("latin-1"))
    code, _, err = _run(["fit", "--config", str(config)], capsys)
    assert code == 2 and f"{config}: not a UTF-8 text file" in _one_error_line(err, "fit")


@pytest.mark.parametrize("kind", ["absent", "folder"])
def test_ckpt_path_is_checked_before_anything_is_built(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("classes were built before --ckpt_path was checked")

    monkeypatch.setattr("domainfm.tasks.lightning_cli.LightningCLI.instantiate_classes", never)
    ckpt = tmp_path / f"{kind}.ckpt"
    if kind == "folder":
        ckpt.mkdir()
    argv = ["fit", "--config", str(_fit_config(tmp_path)), "--ckpt_path", str(ckpt)]
    code, _, err = _run(argv, capsys)
    assert code == 2 and str(ckpt) in _one_error_line(err, "fit")


def test_ckpt_path_of_another_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ckpt = shutil.copy(SEG_CT, tmp_path / "segmenter.ckpt")
    argv = ["fit", "--config", str(_fit_config(tmp_path)), "--ckpt_path", str(ckpt)]
    code, out, err = _run(argv, capsys)
    line = _one_error_line(err, "fit")
    assert code == 2 and f"{ckpt}: does not fit this model: " in line, err
    assert "unexpected (head." in line and "Restoring states" in out
