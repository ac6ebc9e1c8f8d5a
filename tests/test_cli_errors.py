"""One error style at the CLI: bad input is one line on stderr naming the file, exit 2, no
traceback (``--debug`` shows it); ``inspect`` exits 0 for a clean load and 1 for one that is
not clean; a bad ``fit`` config (unknown key, wrong type, YAML tag, refused ``pretrained=``
file) is one line naming the file; a ``MemoryError`` names what was being done."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from runpy import run_path

import pytest
import torch
from safetensors.torch import load_file

from domainfm import cli
from domainfm.cli import main
from domainfm.core.size_guard import LIMIT_ENV
from domainfm.pretrained import load
from domainfm.tasks import finetune_module

EXPORT = Path(__file__).resolve().parent / "fixtures/legacy_0_1/export_vit3d"


class _Payload:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("PAYLOAD RAN",))


_run = run_path(str(Path(__file__).with_name("cli_run.py")))["run_cli"]


def _edit_config(export: Path, change: Callable[[dict[str, object]], object]) -> None:
    config = json.loads((export / "config.json").read_text())
    change(config)
    (export / "config.json").write_text(json.dumps(config))


def _kwargs(config: dict[str, object]) -> dict[str, object]:
    kwargs = config["kwargs"]
    assert isinstance(kwargs, dict)
    return kwargs


def _folder_in_place(path: Path) -> None:
    path.unlink()
    path.mkdir()


BROKEN: dict[str, Callable[[Path], object]] = {
    "unknown_architecture": lambda e: _edit_config(e, lambda c: c.update(architecture="nope")),
    "wrong_architecture": lambda e: _edit_config(
        e, lambda c: c.update(architecture="audio_ntt2020")
    ),
    "wrong_kwargs": lambda e: _edit_config(e, lambda c: _kwargs(c).update(bogus=1)),
    "wrong_kwarg_type": lambda e: _edit_config(e, lambda c: _kwargs(c).update(embed_dim="x")),
    "absurd_width": lambda e: _edit_config(e, lambda c: _kwargs(c).update(embed_dim=10**6)),
    "kwargs_not_a_mapping": lambda e: _edit_config(e, lambda c: c.update(kwargs=[1])),
    "not_json": lambda e: (e / "config.json").write_text("{nope"),
    "json_list": lambda e: (e / "config.json").write_text("[1, 2]"),
    "not_utf8": lambda e: (e / "config.json").write_bytes(b"\xff\xfe garbage"),
    "missing_weights": lambda e: (e / "model.safetensors").unlink(),
    "weights_not_safetensors": lambda e: (e / "model.safetensors").write_text("hello"),
    "truncated_weights": lambda e: (e / "model.safetensors").write_bytes(
        (EXPORT / "model.safetensors").read_bytes()[:200]
    ),
    "no_config": lambda e: (e / "config.json").unlink(),
    "config_is_a_folder": lambda e: _folder_in_place(e / "config.json"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_inspect_reports_every_failure_in_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / case
    shutil.copytree(EXPORT, export)
    BROKEN[case](export)
    with pytest.raises((ValueError, OSError)) as info:  # the API names the file too
        load.load_backbone(export)
    assert str(export) in str(info.value)
    code, out, err = _run(["inspect", str(export)], capsys)
    assert code == 2 and out == ""
    assert err.startswith("domainfm inspect: error: ") and str(export) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def _checkpoint(path: Path, weight: Callable[[torch.Tensor], object] = lambda t: t) -> None:
    """A checkpoint of the fixture export's backbone, each weight passed through ``weight``."""
    config = json.loads((EXPORT / "config.json").read_text())
    state = load_file(str(EXPORT / "model.safetensors"))
    torch.save(
        {
            "state_dict": {f"backbone.{k}": weight(v) for k, v in state.items()},
            "domainfm": {"backbone": {k: config[k] for k in ("architecture", "kwargs")}},
        },
        path,
    )


@pytest.mark.parametrize(
    "kind",
    ["plain_safetensors", "junk_ckpt", "pickle_with_code", "sparse_weights", "weights_not_tensors"],
)
def test_inspect_refuses_files_that_are_no_export(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / ("weights.safetensors" if kind == "plain_safetensors" else f"{kind}.ckpt")
    if kind == "plain_safetensors":
        shutil.copy(EXPORT / "model.safetensors", path)
    elif kind == "junk_ckpt":
        path.write_bytes(b"no checkpoint")
    elif kind == "pickle_with_code":
        torch.save({"state_dict": {}, "domainfm": {"x": _Payload()}}, path)
    elif kind == "sparse_weights":
        _checkpoint(path, lambda t: t.to_sparse())
    else:
        _checkpoint(path, lambda t: t.tolist())
    code, out, err = _run(["inspect", str(path)], capsys)
    assert code == 2 and str(path) in err and len(err.strip().splitlines()) == 1, err
    assert "PAYLOAD RAN" not in out + err
    if kind == "sparse_weights":  # refused before use: sparse invariants are not checked
        assert "is not a dense tensor" in err


def test_inspect_names_the_file_for_any_unexpected_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(path: object) -> None:
        raise KeyError("spatial_dims")

    monkeypatch.setattr(load, "inspect_backbone", broken)
    code, _, err = _run(["inspect", "some/export"], capsys)
    assert code == 2 and err == "domainfm inspect: error: some/export: KeyError: 'spatial_dims'\n"


def test_inspect_exit_codes_clean_and_not_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(["inspect", str(EXPORT)], capsys)[0] == 0
    export = tmp_path / "deeper"
    shutil.copytree(EXPORT, export)
    _edit_config(export, lambda c: _kwargs(c).update(depth=2))  # blocks.1.* missing
    code, out, err = _run(["inspect", str(export), "--json"], capsys)
    assert code == 1 and err == ""
    assert json.loads(out)["report"]["missing"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(EXPORT, export)
    _edit_config(export, lambda c: c.update(architecture="nope"))
    with pytest.raises(ValueError, match="unknown backbone architecture"):
        main(["inspect", str(export), "--debug"])


def test_max_alloc_gb_reaches_the_guard(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(LIMIT_ENV, "8")  # restored after the flag sets it
    code, _, err = _run(["--max-alloc-gb", "0.000001", "inspect", str(EXPORT)], capsys)
    assert code == 2 and "model.safetensors: reading these weights" in err, err
    assert "--max-alloc-gb" in err and len(err.strip().splitlines()) == 1


def test_help_lists_the_global_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--help"], capsys)
    options = out.split("options of every command:")[1]
    assert code == 0 and "--debug" in options and "--max-alloc-gb N" in options


def test_memory_error_is_one_line_naming_what_was_done(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def exhausted(argv: list[str]) -> int:
        raise MemoryError("Unable to allocate 5.00 GiB for an array")

    monkeypatch.setitem(cli.BUILTIN, "inspect", ("print a report", exhausted))
    code, _, err = _run(["inspect", "x"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("domainfm inspect: error: ran out of memory in domainfm.")
    assert "Unable to allocate 5.00 GiB" in err and "--max-alloc-gb" in err


FIT_CONFIG = """\
seed_everything: false
trainer:
  max_steps: 1
model:
  class_path: domainfm.tasks.finetune_module.FinetuneModule
  init_args:
    task: classification
    num_classes: 2
    backbone:
      class_path: domainfm.core.vit.VisionTransformerND
      init_args: {in_chans: 1, spatial_dims: 3, patch_size: 8, embed_dim: 16, depth: 1,
                  num_heads: 2}
data:
  class_path: lightning.pytorch.demos.boring_classes.BoringDataModule
"""

BAD_CONFIGS = {
    "unknown_key": ("    num_classes: 2\n", "    num_classes: 2\n    bogus_key: 3\n", "bogus_key"),
    "wrong_type": ("num_classes: 2", "num_classes: two", 'Parser key "num_classes"'),
    "unknown_trainer_key": ("max_steps: 1", "max_steps: 1\n  bogus: 1", "trainer.bogus"),
    "unknown_class": ("vit.VisionTransformerND", "vit.Nope", "has no attribute 'Nope'"),
    "yaml_tag": (
        "seed_everything: false",
        "seed_everything: !!python/object/apply:os.system [touch {marker}]",
        "could not determine a constructor for the tag",
    ),
    "yaml_syntax": ("max_steps: 1", "max_steps: [1", "Problems parsing config"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_a_bad_fit_config_is_one_line_naming_it(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, expected = BAD_CONFIGS[case]
    marker = tmp_path / "PAYLOAD_RAN"
    config = tmp_path / f"{case}.yaml"
    config.write_text(FIT_CONFIG.replace(old, new.format(marker=marker), 1))
    code, _, err = _run(["fit", "--config", str(config)], capsys)
    assert code == 2 and err.startswith(f"domainfm fit: error: {config}: "), err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pickle_with_code", "not_a_checkpoint", "absent"])
def test_a_refused_pretrained_file_is_named_not_a_union_report(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "fit.yaml"
    config.write_text(FIT_CONFIG)
    weights = tmp_path / f"{kind}.ckpt"
    if kind == "pickle_with_code":
        torch.save({"state_dict": {}, "domainfm": {"x": _Payload()}}, weights)
    elif kind == "not_a_checkpoint":
        weights.write_bytes(b"no checkpoint here")
    argv = ["fit", "--config", str(config), f"--trainer.default_root_dir={tmp_path}"]
    code, out, err = _run([*argv, f"--model.init_args.pretrained={weights}"], capsys)
    assert code == 2 and err.startswith("domainfm fit: error: "), err
    assert str(weights) in err and len(err.strip().splitlines()) == 1, err
    assert "Union" not in err and "PAYLOAD RAN" not in out + err


def test_memory_error_while_building_a_config_class_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under jsonargparse's wrapping too: the CLI's memory report, not a Union report."""

    def exhausted(*args: object) -> None:
        raise MemoryError("Unable to allocate 5.00 GiB for an array")

    monkeypatch.setattr(finetune_module, "pretrained_backbone", exhausted)
    config = tmp_path / "fit.yaml"
    config.write_text(FIT_CONFIG)
    code, _, err = _run(["fit", "--config", str(config)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "ran out of memory in domainfm.tasks.finetune_module.__init__ (Unable" in err, err
