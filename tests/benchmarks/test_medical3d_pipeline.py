"""Smoke test: the NIfTI crops/s benchmark (ours vs plain MONAI) runs at a tiny size and both
pipelines deliver the same number of crops of the requested shape (no timing claims)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "medical3d_pipeline_bench", REPO / "benchmarks" / "medical3d_pipeline.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_medical3d_pipeline_quick(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOMAINFM_DATA", str(data_root))
    bench = _load_script()
    crop, k, epochs = 32, 2, 2
    report = bench.main(["--quick", "--out-dir", str(tmp_path)])

    st = report["settings"]
    assert (st["crop"], st["samples_per_volume"], st["epochs"]) == (crop, k, epochs)
    assert [row["row"] for row in report["rows"]] == ["CT", "MRI"]
    expected = {"monai", "ours", "ours, warm cache"}
    for row in report["rows"]:
        n_files = len(row["files"])
        summary = row["summary"]
        assert set(summary) - {"projected_end_to_end_ratio"} == expected
        for name in expected:
            s = summary[name]
            # one batch = one volume's K crops; the first batch is the excluded warm-up
            assert s["batch_shape"] == [k, 1, crop, crop, crop], (row["row"], name)
            assert s["crops"] == epochs * n_files * k - k, (row["row"], name)
            assert s["steady_crops_per_s"] > 0 and s["end_to_end_crops_per_s"] > 0
        assert summary["monai"]["end_to_end_crops_per_s_ratio_vs_monai"] == 1.0
        # the printed claim "identical preprocessing" holds on the checked file
        check = row["preprocessing_check"]
        assert check["same_shape"] and check["max_abs_diff"] < 1e-5, check

    text = (tmp_path / "medical3d_pipeline.txt").read_text()
    assert "x monai" in text and "ScaleIntensityRangePercentilesd" in text
    saved = json.loads((tmp_path / "medical3d_pipeline.json").read_text())
    assert saved["rows"][0]["summary"]["ours"]["batch_shape"] == [k, 1, crop, crop, crop]
