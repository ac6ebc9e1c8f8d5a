"""``domainfm benchmark``: did pretraining help, on the user's own labeled data?

::

    domainfm benchmark --task TASK_SPEC \\
        --backbone scratch:CONFIG_OR_RELEASE --backbone exports/a \\
        --backbone release:NAME=PATH --protocol linear,knn,finetune \\
        --fractions 0.01,0.1,1.0 --seeds 3 --out results/x

The task spec is read by whichever installed domain recognizes it (``--domain`` to choose):
an MSD / nnU-Net ``dataset.json``, a HEAR task folder, a STAC catalog, a scene raster with
``--task-option labels=LABELS.tif``, or a CSV of files, labels and groups. Every backbone runs
on the same group folds, label subsets and seeds (:mod:`domainfm.tasks.benchmark`); frozen
features are computed once per backbone and cached under ``OUT/cache`` (a re-run reuses them);
``--adapt RECIPE`` adds each pretrained backbone after continued pretraining on each fold's
training inputs. Writes ``OUT/results.json``, ``OUT/results.md`` and ``OUT/results.png``.
"""

from __future__ import annotations

import dataclasses
import platform
import resource
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from domainfm.core.checkpoint_io import check_writable_folder
from domainfm.core.cli_args import OneLineParser, argument_type, positive_int
from domainfm.domains.plugin import DomainPlugin, all_domains, get_domain
from domainfm.tasks.benchmark.backbones import BenchmarkBackbone, parse_backbone
from domainfm.tasks.benchmark.hooks import DomainBenchmark
from domainfm.tasks.benchmark.metrics import HEADLINE
from domainfm.tasks.benchmark.report import summarize_runs, write_reports
from domainfm.tasks.benchmark.runner import PROTOCOLS, BenchmarkSettings, run_benchmark
from domainfm.tasks.benchmark.task import BenchmarkTask


def _fractions(text: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(",") if v.strip())
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise ValueError("fractions must be comma-separated numbers in (0, 1], e.g. 0.1,1.0")
    return tuple(sorted(set(values)))


def _seeds(text: str) -> tuple[int, ...]:
    """``3`` means seeds 0, 1, 2; ``0,5,7`` lists them."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if len(parts) == 1:
        count = int(parts[0])
        if count < 1:
            raise ValueError("--seeds N needs N >= 1")
        return tuple(range(count))
    seeds = tuple(int(p) for p in parts)
    if len(set(seeds)) != len(seeds) or any(s < 0 for s in seeds):
        raise ValueError("seeds must be distinct non-negative integers")
    return seeds


def _protocols(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in names if p not in PROTOCOLS]
    if unknown or not names:
        raise ValueError(f"unknown protocol {unknown}: choose from {', '.join(PROTOCOLS)}")
    return names


def _option(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise ValueError("expected KEY=VALUE")
    return key.strip(), value


def parser() -> OneLineParser:
    """The ``domainfm benchmark`` argument parser."""
    p = OneLineParser(
        prog="domainfm benchmark",
        description="Compare backbones (released, exported, random init, adapted) on a labeled "
        "task with frozen probes and few-label fine-tuning over seeds and label fractions; "
        "writes results.json, results.md and results.png.",
    )
    p.add_argument(
        "--task", required=True, help="task spec (dataset.json, HEAR folder, STAC, CSV …)"
    )
    p.add_argument(
        "--task-option",
        action="append",
        default=[],
        type=argument_type(_option, "KEY=VALUE"),
        help="a domain option of the task reader (repeatable), e.g. labels=LULC.tif",
    )
    p.add_argument("--domain", help="the domain that reads the task (default: the one that can)")
    p.add_argument(
        "--backbone",
        action="append",
        required=True,
        help="[LABEL@]PATH | release:NAME=PATH | scratch:RELEASE_OR_EXPORT_OR_CONFIG (repeatable)",
    )
    p.add_argument("--reference", help="label of the backbone compared against (default: first)")
    p.add_argument(
        "--protocol",
        dest="protocols",
        type=argument_type(_protocols, "protocol list"),
        default=("linear", "knn"),
        help="comma-separated: linear, knn, finetune (default linear,knn)",
    )
    p.add_argument(
        "--fractions",
        type=argument_type(_fractions, "fraction list"),
        default=(1.0,),
        help="labeled fractions of each training fold, e.g. 0.01,0.1,1.0 (default 1.0)",
    )
    p.add_argument(
        "--seeds",
        type=argument_type(_seeds, "seeds"),
        default=(0, 1, 2),
        help="N (seeds 0..N-1) or a list, e.g. 0,1,2 (default 3)",
    )
    p.add_argument(
        "--folds", dest="num_folds", type=positive_int, default=5, help="group folds (default 5)"
    )
    p.add_argument("--finetune-steps", type=positive_int, default=100, help="steps per fine-tune")
    p.add_argument(
        "--adapt", dest="adapt_recipe", metavar="RECIPE", help="also continue pretraining (mae …)"
    )
    p.add_argument("--adapt-steps", type=positive_int, default=100, help="adaptation steps")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    p.add_argument("--batch-size", type=positive_int, default=8, help="items per forward")
    p.add_argument("--out", required=True, help="output folder (re-runs reuse its cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def read_task(
    spec: Path, options: dict[str, str], domain: str | None
) -> tuple[DomainPlugin, DomainBenchmark, BenchmarkTask]:
    """The plugin that reads ``spec``, its benchmark hooks and the task ``spec`` describes.

    Raises:
        FileNotFoundError: when ``spec`` does not exist (a glob pattern is left to the
            domains).
        ValueError: when no installed domain (or not ``domain``) reads it.
    """
    if not spec.exists() and not any(c in str(spec) for c in "*?["):
        raise FileNotFoundError(f"{spec}: the task spec does not exist")
    plugins = [get_domain(domain)] if domain else all_domains()
    for plugin in plugins:
        hooks = plugin.benchmark
        task = hooks.read_task(spec, options) if hooks is not None else None
        if hooks is not None and task is not None:
            return plugin, hooks, task
    names = ", ".join(p.name for p in plugins)
    raise ValueError(
        f"{spec}: no installed domain ({names}) reads this as a benchmark task; give an MSD/"
        "nnU-Net dataset.json, a HEAR task folder, a STAC catalog, a scene raster with "
        "--task-option labels=..., or a CSV of files, labels and groups"
    )


def check_backbones(plugin: DomainPlugin, backbones: Sequence[BenchmarkBackbone]) -> None:
    """Refuse a backbone whose recorded input contract is another domain's."""
    for backbone in backbones:
        kind = (backbone.contract or {}).get("kind")
        if kind is not None and kind != plugin.contract.kind:
            raise ValueError(
                f"--backbone {backbone.spec!r} expects {kind} input; the task is {plugin.name}"
            )


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (
        f"{cpu}, {torch.get_num_threads()} torch threads{gpu}; torch {torch.__version__}; "
        f"python {platform.python_version()}"
    )


def _peak_memory_mb() -> float:
    """Peak resident memory of this process and its finished children (Linux: KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 2**20
    return max(own, children) * scale


def benchmark_command(argv: Sequence[str]) -> int:
    """Run ``domainfm benchmark`` (see the module docstring); returns the exit status."""
    args = parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: --out is an existing file; give a folder")
    check_writable_folder(out / "results.json")  # before any work
    options = dict(args.task_option)
    plugin, hooks, task = read_task(Path(args.task), options, args.domain)
    backbones = [replace(parse_backbone(spec), domain=plugin.name) for spec in args.backbone]
    check_backbones(plugin, backbones)
    reference = args.reference or backbones[0].label
    if reference not in {b.label for b in backbones}:
        raise ValueError(f"--reference {reference!r} names none of the backbones")
    names = {field.name for field in dataclasses.fields(BenchmarkSettings)} - {"reference"}
    given = {k: v for k, v in vars(args).items() if k in names}  # dests are its fields
    settings = BenchmarkSettings(**given, reference=reference, progress=not args.no_progress)
    results = run_benchmark(task, backbones, hooks, settings, out)
    headline = str(task.metadata.get("headline", HEADLINE[task.kind]))
    metrics = sorted({m for run in results["runs"] for m in run["metrics"]})
    summary = summarize_runs(results["runs"], metrics=metrics, reference=reference)
    results = {
        "task": {
            "name": task.name,
            "domain": task.domain,
            "kind": task.kind,
            "classes": list(task.classes),
            "items": len(task.items),
            "source": str(task.source),
            "options": options,
        },
        "headline": headline,
        "reference": reference,
        **results,
        "summary": summary,
        "machine": _machine(),
        "peak_memory_mb": round(_peak_memory_mb(), 1),
        "command": "domainfm benchmark " + " ".join(argv),
    }
    written = write_reports(results, out)
    print(f"domainfm benchmark: wrote {', '.join(str(p) for p in written)}")
    print((out / "results.md").read_text(encoding="utf-8"))
    return 0
