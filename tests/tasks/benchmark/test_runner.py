from __future__ import annotations

import json
from dataclasses import replace

import pytest

from domainfm.tasks.benchmark.report import summarize_runs, write_reports
from domainfm.tasks.benchmark.runner import BenchmarkSettings, run_benchmark

SETTINGS = BenchmarkSettings(fractions=(0.2, 1.0), seeds=(0, 1), num_folds=2, progress=False)


def _results(task, backbones, hooks, out):
    results = run_benchmark(task, backbones, hooks, SETTINGS, out)
    metrics = sorted({m for run in results["runs"] for m in run["metrics"]})
    return results, summarize_runs(results["runs"], metrics=metrics, reference="scratch")


def test_every_backbone_runs_the_same_plan_and_the_same_seeds_give_the_same_numbers(
    make_task, toy_hooks, tiny_scratch, tmp_path
):
    task = make_task()
    other = replace(tiny_scratch, label="other", kwargs={**tiny_scratch.kwargs, "embed_dim": 12})
    first, rows = _results(task, [tiny_scratch, other], toy_hooks, tmp_path / "a")
    # 2 backbones x 2 protocols x 2 fractions x 2 seeds x 2 folds
    assert len(first["runs"]) == 32
    plan = {
        (r["protocol"], r["fraction"], r["seed"], r["fold"], r["train_items"])
        for r in first["runs"]
    }
    assert len(plan) == 16  # both backbones saw exactly the same subsets
    again, rows_again = _results(task, [tiny_scratch, other], type(toy_hooks)(), tmp_path / "b")
    strip = lambda runs: [{k: v for k, v in r.items() if k != "seconds"} for r in runs]  # noqa: E731
    assert strip(again["runs"]) == strip(first["runs"])
    assert rows_again == rows
    compared = [r for r in rows if r["backbone"] == "other" and r["metric"] == "accuracy"]
    assert compared and all(r["vs_reference"]["n"] == 2 for r in compared)


def test_features_are_computed_once_per_backbone_and_seed_then_read_from_the_cache(
    make_task, toy_hooks, tiny_scratch, tmp_path
):
    task = make_task()
    run_benchmark(task, [tiny_scratch], toy_hooks, SETTINGS, tmp_path)
    assert toy_hooks.embed_calls == 2  # a random init: one draw per seed, shared by folds
    again = type(toy_hooks)()
    run_benchmark(task, [tiny_scratch], again, SETTINGS, tmp_path)
    assert again.embed_calls == 0


def test_reports_are_written_with_the_reference_comparison(
    make_task, toy_hooks, tiny_scratch, tmp_path
):
    task = make_task()
    other = replace(tiny_scratch, label="other", kwargs={**tiny_scratch.kwargs, "embed_dim": 12})
    results, rows = _results(task, [tiny_scratch, other], toy_hooks, tmp_path)
    results = {
        **results,
        "task": {
            "name": "toy",
            "domain": "toy",
            "kind": "classification",
            "items": 60,
            "source": "toy.csv",
        },
        "headline": "accuracy",
        "reference": "scratch",
        "summary": rows,
        "machine": "test",
        "peak_memory_mb": 1.0,
    }
    written = write_reports(results, tmp_path / "out")
    assert [p.name for p in written] == ["results.json", "results.md", "results.png"]
    assert json.loads(written[0].read_text())["summary"] == json.loads(json.dumps(rows))
    md = written[1].read_text()
    assert "| other | 0.2 |" in md and "seeds better" in md
    assert written[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_settings_are_refused(make_task, toy_hooks, tiny_scratch, tmp_path):
    with pytest.raises(ValueError, match="protocols"):
        BenchmarkSettings(protocols=("svm",))
    with pytest.raises(ValueError, match="fractions"):
        BenchmarkSettings(fractions=(0.0,))
    with pytest.raises(ValueError, match="given twice"):
        run_benchmark(make_task(), [tiny_scratch, tiny_scratch], toy_hooks, SETTINGS, tmp_path)
