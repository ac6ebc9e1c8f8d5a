"""A benchmark's outputs: ``results.json``, a Markdown table and label-efficiency curves.

* ``results.json``: the task, the settings, every backbone, every run (fold, seed, fraction,
  protocol, metrics, seconds) and the summary rows below; runtime and peak memory.
* ``results.md``: per protocol and label fraction, the headline metric's mean ± std over
  seeds for each backbone, and its paired difference against the reference backbone with a
  95 % confidence interval and the number of seeds it wins
  (:func:`~domainfm.tasks.benchmark.stats.paired_comparison`); a difference that does not
  separate from noise says so.
* ``results.png``: one panel per protocol, the headline metric against the labeled fraction
  (log scale), mean with a ± std band per backbone.

A seed's value is the mean of the metric over the folds.

Example::

    >>> rows = summarize(results["runs"], reference="scratch:vit")
    >>> write_reports(results, out)  # results.json, results.md, results.png
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from domainfm.core.checkpoint_io import atomic_write, atomic_write_json
from domainfm.tasks.benchmark.stats import paired_comparison, summarize

Key = tuple[str, str, float]
"""``(backbone, protocol, fraction)``."""


def per_seed(runs: Sequence[dict[str, Any]], metric: str) -> dict[Key, dict[int, float]]:
    """``{(backbone, protocol, fraction): {seed: mean over folds of metric}}``."""
    folds: dict[Key, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        value = run["metrics"].get(metric)
        if value is not None:
            key = (run["backbone"], run["protocol"], float(run["fraction"]))
            folds[key][int(run["seed"])].append(float(value))
    return {
        key: {seed: statistics.fmean(values) for seed, values in seeds.items()}
        for key, seeds in folds.items()
    }


def summarize_runs(
    runs: Sequence[dict[str, Any]], *, metrics: Sequence[str], reference: str
) -> list[dict[str, Any]]:
    """One row per backbone, protocol, fraction and metric: mean, std, per-seed values and the
    paired comparison with ``reference`` (the reference's own rows have none)."""
    rows: list[dict[str, Any]] = []
    for metric in metrics:
        values = per_seed(runs, metric)
        for (backbone, protocol, fraction), seeds in sorted(values.items()):
            order = sorted(seeds)
            summary = summarize([seeds[s] for s in order])
            row: dict[str, Any] = {
                "backbone": backbone,
                "protocol": protocol,
                "fraction": fraction,
                "metric": metric,
                "mean": summary.mean,
                "std": summary.std,
                "n": summary.n,
                "per_seed": {str(s): seeds[s] for s in order},
                "vs_reference": None,
            }
            ref = values.get((reference, protocol, fraction))
            if backbone != reference and ref is not None:
                shared = [s for s in order if s in ref]
                comparison = paired_comparison([seeds[s] for s in shared], [ref[s] for s in shared])
                row["vs_reference"] = {"reference": reference, **comparison.to_dict()}
                row["vs_reference_text"] = comparison.text()
            rows.append(row)
    return rows


def markdown_table(results: dict[str, Any]) -> str:
    """The Markdown report of a benchmark's ``results`` (see the module docstring)."""
    task, settings = results["task"], results["settings"]
    headline, reference = results["headline"], results["reference"]
    seeds = ", ".join(str(seed) for seed in settings["seeds"])
    lines = [
        f"# Benchmark: {task['name']} ({task['domain']}, {task['kind']})",
        "",
        f"{task['items']} labeled items from `{task['source']}`; {len(results['folds'])} folds "
        f"by group; seeds {seeds}; metric **{headline}** (mean ± std over seeds, "
        f"each seed the mean over folds). Reference: **{reference}**; Δ is the paired "
        "difference with its 95 % t interval and the seeds it wins.",
        "",
    ]
    if task["kind"] in ("segmentation", "timestamps"):
        lines += [
            "Dense task: `linear` and `knn` score the backbone's patch tokens (frames) against "
            "each one's majority label; `finetune` scores every labeled pixel/voxel (frame), "
            "so the two are not on the same scale.",
            "",
        ]
    rows = [r for r in results["summary"] if r["metric"] == headline]
    for protocol in settings["protocols"]:
        lines += [
            f"## {protocol}",
            "",
            "| backbone | fraction | " + headline + " | Δ vs reference |",
        ]
        lines.append("|---|---|---|---|")
        for row in (r for r in rows if r["protocol"] == protocol):
            delta = row.get("vs_reference_text") or "(reference)"
            value = (
                f"{row['mean']:.3f} ± {row['std']:.3f}" if not math.isnan(row["mean"]) else "n/a"
            )
            lines.append(f"| {row['backbone']} | {row['fraction']:g} | {value} | {delta} |")
        lines.append("")
    lines.append(
        f"Runtime {results['runtime_s']:.0f} s, peak memory {results['peak_memory_mb']:.0f} MB "
        f"({results['machine']})."
    )
    return "\n".join(lines) + "\n"


def plot_curves(results: dict[str, Any], path: Path) -> Path:
    """Label-efficiency curves (headline metric vs labeled fraction) as a PNG."""
    headline = results["headline"]
    protocols = results["settings"]["protocols"]
    rows = [r for r in results["summary"] if r["metric"] == headline]
    fig = Figure(figsize=(4.2 * len(protocols), 3.4))
    axes = fig.subplots(1, len(protocols), squeeze=False)[0]
    for ax, protocol in zip(axes, protocols, strict=True):
        by_backbone: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            if row["protocol"] == protocol:
                by_backbone[row["backbone"]].append(row)
        for backbone, points in by_backbone.items():
            points.sort(key=lambda r: r["fraction"])
            x = [p["fraction"] for p in points]
            y = [p["mean"] for p in points]
            err = [p["std"] for p in points]
            (line,) = ax.plot(x, y, marker="o", label=backbone)
            ax.fill_between(
                x,
                [a - b for a, b in zip(y, err, strict=True)],
                [a + b for a, b in zip(y, err, strict=True)],
                color=line.get_color(),
                alpha=0.2,
            )
        ax.set_xscale("log")
        ax.set_title(protocol)
        ax.set_xlabel("labeled fraction")
        ax.set_ylabel(headline)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{results['task']['name']}: {headline} (mean ± std over seeds)")
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))


def json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as ``null``, paths and tuples as JSON types."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_reports(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_json(out / "results.json", json_safe(results))]
    text = markdown_table(results)
    written.append(
        atomic_write(out / "results.md", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    )
    written.append(plot_curves(results, out / "results.png"))
    return written
