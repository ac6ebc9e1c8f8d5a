"""The ``domainfm`` command.

* ``fit``, ``validate``, ``test``, ``predict``: Lightning's CLI over YAML configs in ``configs/``.
* ``export CKPT OUT_DIR``: write ``model.safetensors`` + ``config.json`` for the backbone
  (an existing export is refused unless ``--overwrite``).
* ``inspect PATH``: print the config and the load report of an export or checkpoint; exits
  0 only when the load is clean; a released weights file is identified by its key layout.
* ``releases [--domain D] [--json]``: the registered released checkpoints.
* ``segment CKPT INPUT OUTPUT``: segmentation with a fine-tuned checkpoint, by the domain
  whose input contract the checkpoint records (or ``--domain``).
* ``detect CKPT INPUT OUTPUT``: object detection with a fine-tuned ``DetectionModule``.
* ``prepare DOMAIN SRC_DIR OUT_DIR``: validate and preprocess raw inputs once into LitData
  shards + ``manifest.json`` (bad inputs listed by name and reason; re-runs are no-ops; new
  files are appended), streamed by the domains' streaming data modules.
* ``benchmark --task SPEC --backbone ... --out DIR``: compare backbones on a labeled task
  (linear probe, kNN, few-label fine-tuning; label fractions; seeds; paired statistics).
* the installed domains' own subcommands (``domainfm --help`` lists them).

The command names no domain: it dispatches through the domain plugins
(:mod:`domainfm.domains.plugin`). Errors print one line and exit with status 2; ``--debug``
shows the traceback instead. Usage errors (a bad number included) are found when the command
line is parsed, before any file is read. Warnings print as one line each, ``domainfm CMD:
warning: ...``, and Lightning's information goes to stdout (:mod:`domainfm.core.cli_output`).

Example::

    domainfm fit --config CONFIG.yaml
    domainfm export runs/.../last.ckpt exports/model
    domainfm inspect exports/model
    domainfm segment runs/.../last.ckpt INPUT OUTPUT
    domainfm prepare DOMAIN raw/ prepared/
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from domainfm.core.cli_args import (
    OneLineParser,
    fraction,
    positive_int,
)
from domainfm.core.cli_output import (
    cli_warnings,
    lightning_log_lines,
    one_line,
    quiet_foreign_warnings,
)

if TYPE_CHECKING:
    from domainfm.domains.plugin import Command, DomainPlugin

USAGE_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError, RuntimeError)
"""What bad input raises: reported in one line with exit status 2."""

LIGHTNING_VERBS = {
    "fit": "train a model from a YAML config (pretraining or fine-tuning)",
    "validate": "run the validation loop of a config/checkpoint",
    "test": "run the test loop of a config/checkpoint",
    "predict": "run the prediction loop of a config/checkpoint",
}


def _device(name: str | None) -> str:
    import torch

    return name or ("cuda" if torch.cuda.is_available() else "cpu")


def _export(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="domainfm export", description="Export a training checkpoint's backbone."
    )
    parser.add_argument("ckpt", help="Lightning .ckpt written by a domainfm module")
    parser.add_argument("out_dir", help="folder for model.safetensors + config.json")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the files of an existing export"
    )
    args = parser.parse_args(argv)
    from domainfm.pretrained.export import CONFIG_NAME, WEIGHTS_NAME, export_checkpoint
    from domainfm.pretrained.load import load_backbone

    out = export_checkpoint(args.ckpt, args.out_dir, overwrite=args.overwrite)
    _, report = load_backbone(out)  # prove the export rebuilds cleanly
    print(
        f"domainfm export: wrote {out / WEIGHTS_NAME} and {out / CONFIG_NAME} "
        f"({len(report.loaded)} tensors, load check clean)"
    )
    return 0


def _inspect(argv: Sequence[str]) -> int:
    parser = OneLineParser(
        prog="domainfm inspect",
        description="Print config and load report; exit 0 for a clean load, 1 for a load that "
        "is not clean (missing, unexpected or mismatched keys), 2 for input that is no "
        "readable export or checkpoint; a released file: 0 exact fit, 1 near misses only.",
    )
    parser.add_argument("path", help="export folder, config.json, .ckpt or released weights file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from domainfm.pretrained.identify import inspect_weights_file
    from domainfm.pretrained.load import inspect_backbone

    try:  # a weights file without domainfm metadata is matched against the released layouts
        found = inspect_weights_file(args.path, as_json=args.json)
        if found is None:
            config, report = inspect_backbone(args.path)
    except MemoryError:
        raise
    except Exception as err:  # every failure is bad input, named; --debug shows the cause
        text = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if isinstance(err, KeyError | TypeError | AttributeError | IndexError | ArithmeticError):
            text = f"{type(err).__name__}: {text}"
        if str(args.path) not in text:
            text = f"{args.path}: {text}"
        raise ValueError(text) from err
    if found is not None:
        print(found[0])
        return found[1]
    if args.json:
        print(json.dumps({"config": config, "report": report.as_dict()}, indent=2, default=str))
    else:
        print(json.dumps(config, indent=2, default=str))
        print(report)
    return 0 if report.ok else 1


def _releases(argv: Sequence[str]) -> int:
    from domainfm.domains.release_table import releases_command

    return releases_command(argv)


PREDICT_COMMANDS = {
    "segment": (
        "Segment an input of any size with a fine-tuned checkpoint (sliding windows or tiles; "
        "the output keeps the input's geometry: a NIfTI volume's affine, a GeoTIFF's CRS and "
        "transform).",
        "FinetuneModule segmentation",
        "label map",
    ),
    "detect": (
        "Detect objects over an input of any size with a fine-tuned DetectionModule or "
        "Detection3DModule checkpoint (windows of the training size, boxes merged across "
        "windows); a GeoTIFF gives GeoJSON in its CRS, a volume MONAI JSON + CSV in world mm.",
        "DetectionModule or Detection3DModule",
        "boxes (.geojson for rasters, .json for volumes)",
    ),
}
"""``segment`` and ``detect``: description, the checkpoint's module, the output."""


def _predict_parser(prog: str, *, overlap: float, unit: str) -> argparse.ArgumentParser:
    """The arguments ``segment`` and ``detect`` share (their dests are request fields)."""
    description, ckpt, output = PREDICT_COMMANDS[prog]
    parser = OneLineParser(prog=f"domainfm {prog}", description=description)
    parser.add_argument(
        "--overlap", type=fraction(upper_open=True), default=overlap, help=f"{unit} overlap [0, 1)"
    )
    parser.add_argument("ckpt", help=f"Lightning .ckpt of a {ckpt} run")
    parser.add_argument("input", help="input file or folder, in the model's domain format")
    parser.add_argument("output", help=f"output {output} (its format follows the domain)")
    parser.add_argument("--domain", help="the model's domain (default: recorded in the checkpoint)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


R = TypeVar("R")


def _request(
    cls: Callable[..., R], args: argparse.Namespace, suffixes: Sequence[str], **fields: Any
) -> R:
    """A segment/detect request from the parsed options named like its fields, with the
    output checked before any computation (:func:`~domainfm.domains.plugin.check_output`)."""
    from domainfm.domains.plugin import check_output

    target = check_output(
        args.output, inputs=[args.input, args.ckpt], suffixes=suffixes, overwrite=args.overwrite
    )
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    fixed = {
        "input": Path(args.input),
        "output": target,
        "device": _device(args.device),
        "progress": not args.no_progress,
    }
    given = {k: v for k, v in vars(args).items() if k in names}
    return cls(**{**given, **fixed, **fields})


def _parse_with_domain_options(
    parser: argparse.ArgumentParser, argv: Sequence[str], plugins: Sequence[DomainPlugin]
) -> tuple[argparse.Namespace, dict[str, Any]]:
    """Parse ``argv`` with ``parser`` plus the ``segment`` options that ``plugins`` add
    (:meth:`~domainfm.domains.plugin.DomainPlugin.add_segment_arguments`); returns the
    namespace and those options by name. Called with every installed domain before the
    checkpoint's is known (so ``--help`` lists them and the arguments read in any order),
    then with the checkpoint's alone (another domain's option is then a usage error)."""
    full = OneLineParser(
        prog=parser.prog,
        description=parser.description,
        parents=[parser],
        add_help=False,
        conflict_handler="resolve" if len(plugins) > 1 else "error",
    )
    generic = {action.dest for action in parser._actions}
    for plugin in plugins:
        plugin.add_segment_arguments(full)
    args = full.parse_args(argv)
    return args, {k: v for k, v in vars(args).items() if k not in generic}


def _segment(argv: Sequence[str]) -> int:
    parser = _predict_parser("segment", overlap=0.5, unit="window")
    parser.add_argument(
        "--sw-batch-size",
        dest="batch_size",
        type=positive_int,
        default=2,
        help="windows per forward",
    )
    parser.add_argument(
        "--roi-size", type=positive_int, nargs="+", help="window size (default: crop)"
    )
    from domainfm.domains.plugin import SegmentRequest, all_domains, recorded_domain
    from domainfm.tasks.finetune_module import load_finetuned

    args, _ = _parse_with_domain_options(parser, argv, all_domains())
    module, meta = load_finetuned(args.ckpt)
    if module.task != "segmentation":
        raise ValueError(f"{args.ckpt} is a {module.task} model, not a segmentation model")
    plugin, contract = recorded_domain(meta, source=args.ckpt, domain=args.domain)
    args, options = _parse_with_domain_options(parser, argv, [plugin])
    roi = tuple(args.roi_size) if args.roi_size else None
    request = _request(SegmentRequest, args, plugin.segment_suffixes, roi_size=roi, options=options)
    wrote = plugin.segment(module.to(request.device), contract, request)
    print(f"domainfm segment: wrote {wrote}")
    return 0


def _detect(argv: Sequence[str]) -> int:
    parser = _predict_parser("detect", overlap=0.25, unit="tile")
    parser.add_argument("--batch-size", type=positive_int, default=4, help="tiles per forward")
    parser.add_argument(
        "--score-threshold", type=fraction(), default=0.05, help="lowest score kept [0, 1]"
    )
    parser.add_argument(
        "--nms-iou", type=fraction(), default=0.5, help="merge IoU across tiles [0, 1]"
    )
    parser.add_argument("--wgs84", action="store_true", help="longitude/latitude output")
    parser.add_argument("--box-mask", help="also write the boxes as a mask on the input's grid")
    args = parser.parse_args(argv)
    from domainfm.domains.plugin import DetectRequest, recorded_domain
    from domainfm.tasks.detector_checkpoint import load_any_detector

    module, meta = load_any_detector(args.ckpt, score_threshold=args.score_threshold)
    plugin, contract = recorded_domain(meta, source=args.ckpt, domain=args.domain)
    options = {"box_mask": args.box_mask, "overwrite": args.overwrite}
    request = _request(DetectRequest, args, plugin.detect_suffixes, options=options)
    print(f"domainfm detect: wrote {plugin.detect(module.to(request.device), contract, request)}")
    return 0


def _prepare(argv: Sequence[str]) -> int:
    from domainfm.domains.prepare_command import prepare_command

    return prepare_command(argv)


def _benchmark(argv: Sequence[str]) -> int:
    from domainfm.domains.benchmark_command import benchmark_command

    return benchmark_command(argv)


BUILTIN: dict[str, tuple[str, Command]] = {
    "export": ("write a checkpoint's backbone as model.safetensors + config.json", _export),
    "inspect": ("print an export's or checkpoint's config and load report", _inspect),
    "releases": ("list the registered released checkpoints", _releases),
    "segment": ("segment an input of any size with a fine-tuned checkpoint", _segment),
    "detect": ("detect objects in an input of any size with a detection checkpoint", _detect),
    "prepare": ("preprocess a folder of raw inputs once into streamable shards", _prepare),
    "benchmark": ("compare backbones on a labeled task: probes, fine-tuning, seeds", _benchmark),
}


def _commands() -> dict[str, tuple[str, Command]]:
    """The built-in subcommands and those the installed domains add."""
    from domainfm.domains.plugin import domain_commands

    extra = domain_commands()
    clash = sorted(set(extra) & (set(BUILTIN) | set(LIGHTNING_VERBS)))
    if clash:
        raise ValueError(f"a domain plugin redefines the command(s) {', '.join(clash)}")
    return {**BUILTIN, **extra}


def _print_help(commands: dict[str, tuple[str, Command]]) -> None:
    from domainfm.core.plugins import plugin_failures
    from domainfm.domains.plugin import all_domains

    lines = ["usage: domainfm COMMAND [options]   (domainfm COMMAND --help for its options)", ""]
    lines.append("commands:")
    entries = {**LIGHTNING_VERBS, **{k: text for k, (text, _) in commands.items()}}
    domains = {p.name: p.summary for p in all_domains()}
    width = max(len(name) for name in [*entries, *domains])
    lines += [f"  {name:<{width}}  {text}" for name, text in entries.items()]
    lines += ["", "domains:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in domains.items()]
    lines += [f"  {name:<{width}}  NOT LOADED: {why}" for name, why in plugin_failures().items()]
    lines += ["", "options of every command:"]
    lines += [
        "  --debug           show the traceback of an error",
        "  --max-alloc-gb N  refuse an allocation estimated above N GiB (default 8, env "
        "DOMAINFM_MAX_ALLOC_GB)",
    ]
    lines += ["", "exit status: 0 success, 1 a check failed (inspect: load not clean), 2 bad input"]
    print("\n".join(lines))


def _lightning(argv: list[str]) -> None:
    import lightning as L
    import torch.distributed

    from domainfm.tasks.lightning_cli import DomainFMCLI

    with lightning_log_lines(argv[0]):  # Lightning's handlers are set on its import
        DomainFMCLI(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            args=argv,
            save_config_kwargs={"overwrite": True},
        )
    # A process group left to interpreter shutdown can abort the process (SIGABRT, "terminate
    # called without an active exception": gloo's worker threads outlive the interpreter).
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


ALLOC_FLAG = "--max-alloc-gb"
"""The global option of every command: the size guard's per-allocation limit in GiB."""


def _command_name(argv: Sequence[str]) -> str:
    """The command of ``argv``: its first word after the global options."""
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == ALLOC_FLAG:
            skip = True
        elif not arg.startswith(f"{ALLOC_FLAG}="):
            return arg
    return "--help"


def _take_alloc_limit(argv: list[str]) -> list[str]:
    """Remove ``--max-alloc-gb N`` (any command) from ``argv`` and put it in the environment,
    where the size guards of this process and its data-loader workers read it."""
    from domainfm.core.size_guard import LIMIT_ENV, allocation_limit

    rest: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg == ALLOC_FLAG or arg.startswith(f"{ALLOC_FLAG}="):
            value = arg.partition("=")[2] if "=" in arg else next(args, None)
            if value is None or not value.strip():
                raise UsageError(f"{ALLOC_FLAG} needs a value: the limit in GiB, e.g. 16")
            os.environ[LIMIT_ENV] = value
            try:
                allocation_limit()  # a bad value is a usage error now, not in a run
            except ValueError:
                raise UsageError(
                    f"{ALLOC_FLAG} {value!r}: expected a positive number of GiB"
                ) from None
        else:
            rest.append(arg)
    return rest


class UsageError(ValueError):
    """A command line that cannot be run (exit status 2, one line)."""


def _error_text(err: BaseException) -> str:
    """The one-line message of an error the CLI reports (a load report summarized)."""
    if isinstance(err, RuntimeError):  # only a command that got to torch raises these
        from domainfm.pretrained.report import CheckpointMismatchError

        if isinstance(err, CheckpointMismatchError):
            return err.report.summary()
    return one_line(str(err)) or type(err).__name__


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``domainfm`` console script."""
    argv = list(sys.argv[1:] if args is None else args)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    quiet_foreign_warnings()
    name = _command_name(argv)
    try:
        with cli_warnings(name):
            _run(argv)
    except (*USAGE_ERRORS, OSError) as err:
        if debug:
            raise
        print(f"domainfm {name}: error: {_error_text(err)}", file=sys.stderr)
        sys.exit(2)
    except MemoryError as err:  # an allocation under the size guard's limit, yet too large
        if debug:
            raise
        print(f"domainfm {name}: error: {_out_of_memory(err)}", file=sys.stderr)
        sys.exit(2)


def _run(argv: list[str]) -> None:
    """Run the command line ``argv`` (global options included); exits with its status."""
    argv = _take_alloc_limit(argv)
    name = argv[0] if argv else "--help"
    if name in LIGHTNING_VERBS:
        _lightning(argv)
        return
    commands = _commands()
    if name in ("-h", "--help", "help"):
        _print_help(commands)
        sys.exit(0)
    if name not in commands:
        known = ", ".join([*LIGHTNING_VERBS, *commands])
        raise UsageError(f"unknown command {name!r}; commands: {known}")
    sys.exit(commands[name][1](argv[1:]))


def _out_of_memory(err: MemoryError) -> str:
    """What a ``MemoryError`` the size guard let through is reported as: where it happened
    and how to have such inputs refused up front."""
    from domainfm.core.size_guard import allocation_limit, format_bytes

    origin: BaseException = err
    while origin.__cause__ is not None:  # re-raised from the original
        origin = origin.__cause__
    where, tb = "", origin.__traceback__
    while tb is not None:  # the innermost domainfm function: what was being done
        module = str(tb.tb_frame.f_globals.get("__name__", ""))
        if module.startswith("domainfm"):
            where = f" in {module}.{tb.tb_frame.f_code.co_name}"
        tb = tb.tb_next
    detail = f" ({str(err).strip().splitlines()[0]})" if str(err).strip() else ""
    return (
        f"ran out of memory{where}{detail}; this machine has less free memory than the size "
        f"guard allows per allocation ({format_bytes(allocation_limit())}): lower it with "
        f"{ALLOC_FLAG} N to have such inputs refused up front with their size, or use a "
        "machine with more memory"
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
