"""``domainfm inspect`` on released weights files (identified by their layout: exit 0 for an
exact fit, 1 for near misses naming what differs) and ``domainfm releases``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from runpy import run_path

import pytest
import torch

from domainfm.domains.release_table import markdown_release_table, release_rows

BYOLA_TESTS = Path(__file__).parent / "domains/audio/released/test_byola.py"


def _byola_file(d: int) -> dict[str, torch.Tensor]:
    """A BYOL-A release file's state (the builder of the release's own tests)."""
    spec = importlib.util.spec_from_file_location("cli_byola_layout", BYOLA_TESTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state: dict[str, torch.Tensor] = module.byola_file(d)
    return state


_run = run_path(str(Path(__file__).with_name("cli_run.py")))["run_cli"]


@pytest.mark.parametrize("suffix", [".pth", ".ckpt"])  # a .ckpt without domainfm metadata too
def test_inspect_names_the_release(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"AudioNTT2020-BYOLA-64x96d512{suffix}"
    torch.save(_byola_file(512), path)
    code, out, err = _run(["inspect", str(path)], capsys)
    assert code == 0 and err == "", err
    assert out.startswith(f"{path}: release 'byola-audiontt2020-d512' (audio_ntt2020;")
    assert ": clean" in out and "25 loaded" in out


def test_inspect_near_miss_names_what_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = _byola_file(1024)
    del state["fc.3.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    code, out, err = _run(["inspect", str(path)], capsys)
    assert code == 1 and err == "", err
    lines = out.splitlines()
    assert lines[0] == f"{path}: no registered release fits exactly; closest layouts:"
    assert lines[1].startswith("  byola-audiontt2020-d1024: 24 of 25 tensors fit; 1 missing")
    assert "fc.3.bias" in lines[1]
    code, out, _ = _run(["inspect", str(path), "--json"], capsys)
    data = json.loads(out)
    assert code == 1 and data["release"] is None and data["candidates"] == []
    assert data["matches"][0]["report"]["missing"] == ["fc.3.bias"]


def test_inspect_unrelated_weights_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, path)
    code, out, err = _run(["inspect", str(path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"domainfm inspect: error: {path}: not a domainfm export")


def test_releases_json_and_domain_filter(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["releases", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    byola = rows["byola-audiontt2020-d512"]
    assert byola["domain"] == "audio" and byola["architecture"] == "audio_ntt2020"
    assert byola["contract"]["sample_rate"] == 16000 and "sample_rate=16000" in byola["input"]
    assert byola["license"].startswith("BYOL-A weights") and byola["reference"]
    mae = rows["ssl4eo-s12-vit-small-patch16-mae"]
    assert mae["domain"] == "geospatial" and mae["pretext"] == "mae"
    assert mae["input"].startswith("13 bands B01,B02,B03,…,B12")
    assert rows["swin-unetr-ssl-50k"]["domain"] == "medical3d"
    code, out, _ = _run(["releases", "--domain", "medical3d"], capsys)
    assert code == 0 and "swin-unetr-ssl-50k" in out and "byola" not in out
    assert out.splitlines()[0].split() == ["name", "domain", "architecture", "input"]
    code, _, err = _run(["releases", "--domain", "nope"], capsys)
    assert code == 2 and "invalid choice: 'nope'" in err


def test_readme_table_lists_every_registered_release() -> None:
    """The README's release table is ``domainfm releases --markdown``: regenerate it when a
    release is added (this fails naming the rows that differ)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = markdown_release_table(release_rows()).splitlines()
    missing = [row for row in table if row not in readme.splitlines()]
    assert not missing, missing[:3]
