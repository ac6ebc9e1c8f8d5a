"""The LightningCLI behind ``domainfm fit|validate|test|predict``.

Adds what every run needs: the trainer settings all configs share (one device, a CSV logger
in the run folder, ``last.ckpt`` for exact resume), safe, atomic checkpoint IO (never
unpickles code) and one closing summary line from rank 0.

A config gives each size once, in the backbone, without parser links: the objectives of a
:class:`~domainfm.tasks.pretrain_module.PretrainModule` size their heads from its backbone,
and its ``setup`` makes the data module draw MAE masks on the backbone's token grid. (A
link from the model to ``data.init_args.masking.patch_size`` cannot work: the target is a
field of a spec, and LightningCLI records instantiation-link targets into the hyperparameters
of every data module, failing for those without ``masking``.)

A bad config is one :class:`ConfigError` line (the CLI prints it and exits 2): jsonargparse's
nested report of an unknown key, a wrong type or a refused YAML tag is reduced to its causes
and prefixed with the config file; a config file that is no UTF-8 text is named; an error
raised while building a class of the config (a refused ``pretrained=`` file, a data folder
that does not exist) comes out as that error's own message instead of "Does not validate
against any of the Union subtypes". A backbone the config writes out is size-checked before
it is built (:func:`~domainfm.core.backbone.check_module_size`), and an allocation that fails
while building is reported with its bytes and ``--max-alloc-gb``.

``--ckpt_path`` is checked before anything is built (it must be a file, readable by the safe
loader), and a checkpoint that does not fit the model is one line naming it and what does not
fit, instead of torch's key lists.

Example::

    >>> DomainFMCLI(L.LightningModule, L.LightningDataModule, subclass_mode_model=True,
    ...             subclass_mode_data=True, args=["fit", "--config", "configs/x.yaml"])
"""

from __future__ import annotations

import os
import re
import sys
from argparse import ArgumentError
from collections.abc import Iterator, Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import CheckpointIO

from domainfm.core.backbone import backbone_name, check_module_size
from domainfm.core.checkpoint_io import safe_torch_load
from domainfm.core.size_guard import LIMIT_ENV, format_bytes
from domainfm.pretrained.report import compare_state_dict
from domainfm.tasks.checkpoint_plugin import safe_checkpoint_io

TRAINER_DEFAULTS: dict[str, Any] = {
    "devices": 1,
    "log_every_n_steps": 5,
    "enable_model_summary": False,
}
"""Trainer settings every config shares unless it sets its own (one device: a multi-GPU run
says how many; the run's one summary line replaces Lightning's model table)."""


class ConfigError(ValueError):
    """A config (or command line) that cannot be parsed or instantiated, in one line."""


_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "Expected a <class 'NoneType'>",
)
"""Lines of jsonargparse's reports that describe the report, not the problem."""


def one_line(message: str) -> str:
    """jsonargparse's nested, multi-line error report as one line of its causes, e.g.
    ``Parser key "model": Problem with given class_path '...FinetuneModule': Option 'x' is
    not accepted``."""
    line = ""
    for raw in message.splitlines():
        text = raw.strip().removeprefix("- ").strip()
        if not text or text.startswith(_NOISE):
            continue
        line += text if not line else (" " if line.endswith(":") else "; ") + text
    return line.replace('in "<unicode string>", ', "at ")


def config_paths(args: Sequence[str]) -> list[str]:
    """The ``--config``/``-c`` files of a command line, in order."""
    paths: list[str] = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            paths.append(args[i + 1])
        elif arg.startswith("--config="):
            paths.append(arg.partition("=")[2])
    return paths


LIGHTNING_CKPT_NAMES = ("last", "best", "hpc")
"""``--ckpt_path`` values Lightning resolves itself (not file paths)."""

_ALLOCATOR = re.compile(r"can't allocate memory: you tried to allocate (\d+) bytes")
"""torch's CPU allocator failure (a ``RuntimeError``), with the bytes asked for."""


def _frames(tb: TracebackType | None) -> Iterator[str]:
    """The module names of a traceback's frames, outermost first."""
    while tb is not None:
        yield str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next


def undecodable_config(paths: Sequence[str]) -> str | None:
    """The first of ``paths`` that is a file but no UTF-8 text, described (``None``: none)."""
    for path in paths:
        try:
            Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError as err:
            byte = err.object[err.start : err.start + 1].hex()
            return (
                f"{path}: not a UTF-8 text file (byte 0x{byte} at offset {err.start}); a config "
                "is YAML text"
            )
        except OSError:
            continue
    return None


def config_backbones(node: Any, found: list[tuple[type, dict[str, Any]]]) -> None:
    """Append to ``found`` every registered backbone class a parsed config (as plain data)
    writes out, with its ``init_args`` (only those given as plain values: a nested class is
    built by jsonargparse first)."""
    if isinstance(node, Mapping):
        path, init = node.get("class_path"), node.get("init_args")
        if isinstance(path, str) and isinstance(init, Mapping):
            module, _, name = path.rpartition(".")
            cls = getattr(sys.modules.get(module), name, None)  # jsonargparse imported it
            nested = any(isinstance(v, Mapping) and "class_path" in v for v in init.values())
            if cls is not None and backbone_name(cls) is not None and not nested:
                found.append((cls, dict(init)))
        for value in node.values():
            config_backbones(value, found)
    elif isinstance(node, list | tuple):
        for value in node:
            config_backbones(value, found)


def _raised_by_jsonargparse(err: BaseException) -> bool:
    """Whether ``err`` was raised inside jsonargparse (a wrapper around a constructor's error)."""
    tb = err.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("jsonargparse")


def unwrap_instantiation_error(err: Exception) -> BaseException:
    """The error a constructor raised, under the jsonargparse errors wrapping it (each raised
    ``from`` the one below); ``err`` itself when jsonargparse did not wrap it."""
    found: BaseException = err
    while found.__cause__ is not None and _raised_by_jsonargparse(found):
        found = found.__cause__
    return found


class DomainFMCLI(LightningCLI):
    """LightningCLI with the shared trainer block, safe checkpoint loading and a closing
    summary line.

    What every config would otherwise repeat is added here unless the config brings its own:
    :data:`TRAINER_DEFAULTS`, a CSV logger in ``default_root_dir`` (``metrics.csv`` under
    ``lightning_logs/version_N``), a ``ModelCheckpoint`` keeping ``last.ckpt`` (exact resume)
    and the safe, atomic checkpoint IO plugin.
    """

    def __init__(
        self,
        model_class: Any = None,
        datamodule_class: Any = None,
        *,
        trainer_defaults: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._cli_args = kwargs.get("args")
        super().__init__(
            model_class,
            datamodule_class,
            trainer_defaults={**TRAINER_DEFAULTS, **(trainer_defaults or {})},
            **kwargs,
        )

    def init_parser(self, **kwargs: Any) -> Any:
        """The parsers raise instead of printing their usage and exiting, so that
        :meth:`parse_arguments` can report the problem in one line."""
        kwargs.setdefault("exit_on_error", False)
        return super().init_parser(**kwargs)

    def parse_arguments(self, parser: Any, args: Any) -> None:
        """Parse, turning jsonargparse's multi-line report into one :class:`ConfigError` line
        that starts with the config file(s)."""
        configs = config_paths(args) if isinstance(args, list | tuple) else []
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as err:
            message = one_line(err.message)
            if configs and not any(path in message for path in configs):
                message = f"{', '.join(configs)}: {message}"
            raise ConfigError(message) from err
        except UnicodeDecodeError as err:
            found = undecodable_config(configs)
            where = ", ".join(configs) or "the command line"
            raise ConfigError(found or f"{where}: not UTF-8 text ({err})") from err

    def _sources(self) -> str:
        """The config file(s) of this run, for messages."""
        args = self._cli_args
        configs = config_paths(args) if isinstance(args, list | tuple) else []
        return ", ".join(configs) or "the command line"

    def _check_backbone_sizes(self) -> None:
        """Estimate every backbone the config writes out (nothing allocated) and refuse one
        above the size guard's limit, naming the config, before anything is built."""
        found: list[tuple[type, dict[str, Any]]] = []
        config_backbones(self.config.as_dict(), found)
        for cls, init in found:
            check_module_size(
                partial(cls, **init),
                what=f"the {cls.__name__} backbone it configures",
                source=self._sources(),
            )

    def instantiate_classes(self) -> None:
        """Build the config's classes; an error a constructor raised (e.g. the safe loader's
        refusal of a ``pretrained=`` file, naming it) is reported as itself, not wrapped in
        jsonargparse's "Does not validate against any of the Union subtypes"."""
        self._check_backbone_sizes()
        try:
            super().instantiate_classes()
        except Exception as err:
            cause = unwrap_instantiation_error(err)
            allocation = _ALLOCATOR.search(str(cause))
            if allocation is not None:
                raise ConfigError(
                    f"{self._sources()}: building its classes ran out of memory (an allocation "
                    f"of {format_bytes(float(allocation.group(1)))} failed); make the model "
                    f"smaller, or lower --max-alloc-gb N (or {LIMIT_ENV}) to have such sizes "
                    "refused up front"
                ) from err
            if cause is err:
                raise
            if isinstance(cause, MemoryError):  # the CLI's own report, with the size limit
                raise MemoryError(*cause.args) from cause
            if _raised_by_jsonargparse(cause):
                raise ConfigError(one_line(str(err))) from err
            text = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(cause)
            if not isinstance(cause, ValueError | OSError | RuntimeError | KeyError):
                text = f"{type(cause).__name__}: {text}"
            if "/" not in text and os.sep not in text:  # names no file: the config's value
                text = f"{self._sources()}: {text}"
            raise ConfigError(text) from cause

    def _ckpt_path(self) -> str | None:
        """The run's ``--ckpt_path`` (``None``: none given)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        return None if path is None else str(path)

    def _parse_ckpt_path(self) -> None:
        """Lightning reads ``--ckpt_path``'s hyperparameters before anything else. The path is
        checked first (a file that exists: nothing is built before), and a file Lightning
        cannot read fails with the file named (through the safe loader's errors) instead of a
        bare unpickling traceback."""
        path = self._ckpt_path()
        local = path is not None and path not in LIGHTNING_CKPT_NAMES and "://" not in path
        if local and path is not None and not path.startswith("registry"):
            if not Path(path).exists():
                raise FileNotFoundError(f"{path}: no such checkpoint (--ckpt_path)")
            if not Path(path).is_file():
                raise IsADirectoryError(f"{path}: --ckpt_path is a folder, not a checkpoint file")
        try:
            super()._parse_ckpt_path()
        except Exception as err:
            if path is None:
                raise
            safe_torch_load(path)  # raises UnsafeCheckpointError / ValueError naming the file
            cause = one_line(err.message if isinstance(err, ArgumentError) else str(err))
            raise ValueError(f"{path}: not a checkpoint this command can resume: {cause}") from err

    def _run_subcommand(self, subcommand: str) -> None:
        """Run it; a ``--ckpt_path`` that fails while Lightning restores it (a model whose
        weights do not fit, an optimizer of another shape) is one line naming the file."""
        try:
            super()._run_subcommand(subcommand)
        except Exception as err:
            path = self._ckpt_path()
            restoring = any(".checkpoint_connector" in m for m in _frames(err.__traceback__))
            if path is None or not restoring or path in str(err):
                raise
            if "Error(s) in loading state_dict" in str(err):
                checkpoint = safe_torch_load(path)
                state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
                report = compare_state_dict(self.model, state or {}, source=path)
                if not report.ok:
                    hint = "--debug shows torch's full key lists"
                    raise ConfigError(report.summary(hint=hint)) from err
            raise ConfigError(
                f"{path}: cannot resume from this checkpoint: {one_line(str(err))}"
            ) from err

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, list | tuple) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(safe_checkpoint_io())
        if config.get("logger") in (None, True):
            kwargs["logger"] = CSVLogger(save_dir=config.get("default_root_dir") or os.getcwd())
        callbacks = config.get("callbacks") or []
        if not any(isinstance(c, ModelCheckpoint) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, ModelCheckpoint(save_last=True)]
        return super().instantiate_trainer(plugins=plugins, **kwargs)

    def after_fit(self) -> None:
        trainer = self.trainer
        where = trainer.log_dir or trainer.default_root_dir  # a collective under DDP: all ranks
        if not trainer.is_global_zero:  # one summary per job, from rank 0
            return
        ckpt = getattr(trainer.checkpoint_callback, "last_model_path", "") or getattr(
            trainer.checkpoint_callback, "best_model_path", ""
        )
        loss = trainer.callback_metrics.get("train/loss")
        loss_text = f"final train/loss {float(loss):.4f}, " if loss is not None else ""
        print(
            f"domainfm fit: {trainer.global_step} steps, {loss_text}logs in {where}"
            + (f", checkpoint {ckpt}" if ckpt else ""),
            flush=True,
        )
