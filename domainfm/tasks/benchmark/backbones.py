"""The backbones a benchmark compares, from the specs given on the command line.

``--backbone`` takes:

* ``PATH``: a ``domainfm export`` folder (or its ``config.json``, a domainfm ``.ckpt``, or a
  released weights file identified by its layout);
* ``release:NAME=PATH``: a local copy of the registered release ``NAME``;
* ``scratch:SOURCE``: the architecture of ``SOURCE`` at random init, with its input contract.
  ``SOURCE`` is a release name, an export folder / ``config.json``, or a training config YAML
  (its ``model.init_args.backbone``; no contract: the domain's defaults for the task).

An optional ``LABEL@`` prefix names the backbone in tables (``mine@exports/a``); by default
the label is the release name, the export folder's name or ``scratch:…``.

Example::

    >>> b = parse_backbone("scratch:ssl4eo_s12_vit_s16_mae")
    >>> b.label, b.pretrained
    ('scratch:ssl4eo_s12_vit_s16_mae', False)
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from domainfm.core.backbone import backbone_name, build_backbone
from domainfm.core.plugins import discover_plugins
from domainfm.pretrained.export import CONFIG_NAME
from domainfm.pretrained.load import load_backbone, read_backbone_source
from domainfm.pretrained.registry import RELEASED


@dataclass(frozen=True, kw_only=True)
class BenchmarkBackbone:
    """One backbone of a benchmark: how to build a fresh copy, and the input it expects.

    Attributes:
        label: its name in tables, plots and ``results.json``.
        spec: the ``--backbone`` value it came from.
        architecture: backbone registry name; ``kwargs``: its constructor kwargs.
        contract: the input contract JSON the weights expect (``None``: the domain's default
            preprocessing for the task).
        source: the weights (export folder, checkpoint or release file); ``None`` at random
            init.
        released: the registered release ``source`` is a copy of, when given.
        adapted_from: label of the backbone this one continued pretraining from.
    """

    label: str
    spec: str
    architecture: str
    kwargs: Mapping[str, Any]
    contract: Mapping[str, Any] | None = None
    source: Path | None = None
    released: str | None = None
    adapted_from: str | None = None
    domain: str | None = field(default=None, compare=False)

    @property
    def pretrained(self) -> bool:
        return self.source is not None

    def build(self, seed: int = 0) -> nn.Module:
        """A fresh copy: the loaded weights (strict load, reported), or a random init drawn
        with ``seed``."""
        if self.source is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return build_backbone(self.architecture, self.kwargs, source=self.spec)
        model, _ = load_backbone(self.source, released=self.released)
        return model

    def adapted(self, label: str, source: Path) -> BenchmarkBackbone:
        """This backbone after continued pretraining, exported to ``source``."""
        return replace(self, label=label, source=source, released=None, adapted_from=self.label)

    def meta(self) -> dict[str, Any]:
        """What an export of this backbone records (``export_backbone``'s ``meta``)."""
        return {
            "backbone": {"architecture": self.architecture, "kwargs": dict(self.kwargs)},
            "domain": self.domain,
            "input": dict(self.contract or {}),
            "provenance": {"benchmark_backbone": self.spec},
        }


def parse_backbone(spec: str) -> BenchmarkBackbone:
    """The :class:`BenchmarkBackbone` a ``--backbone`` value names (see the module docstring).

    Raises:
        ValueError: naming ``spec`` for an unknown release, a missing path or a config
            without a backbone.
    """
    discover_plugins()  # the releases and backbones of every installed domain
    label, sep, body = spec.partition("@")
    if not sep or "/" in label or ":" in label:
        label, body = "", spec
    if body.startswith("scratch:"):
        found = _scratch(body.removeprefix("scratch:"), spec)
    elif body.startswith("release:"):
        name, eq, path = body.removeprefix("release:").partition("=")
        if not eq or not name or not path:
            raise ValueError(f"--backbone {spec!r}: expected release:NAME=PATH")
        entry = _release(name, spec)
        found = BenchmarkBackbone(
            label=name,
            spec=spec,
            architecture=entry.architecture,
            kwargs=dict(entry.kwargs),
            contract=dict(entry.input),
            source=_existing(path, spec),
            released=name,
        )
    else:
        found = _weights(_existing(body, spec), spec)
    return replace(found, label=label) if label else found


def _existing(path: str, spec: str) -> Path:
    found = Path(path).expanduser()
    if not found.exists():
        raise ValueError(f"--backbone {spec!r}: {found} does not exist")
    return found


def _release(name: str, spec: str) -> Any:
    if name not in RELEASED:
        raise ValueError(
            f"--backbone {spec!r}: no registered release {name!r} (domainfm releases lists them)"
        )
    return RELEASED.get(name)


def _weights(path: Path, spec: str) -> BenchmarkBackbone:
    """An export, checkpoint or release file: its architecture and contract, read (not
    loaded) now; the weights load when a copy is built."""
    model, report = load_backbone(path)  # strict: a bad file fails here, named
    del model
    if report.released is not None:
        entry = RELEASED.get(report.released)
        architecture, kwargs, domain = entry.architecture, dict(entry.kwargs), None
        released: str | None = report.released
        label = report.released
    else:
        config, _, _ = read_backbone_source(path)
        architecture, kwargs = config["architecture"], dict(config["kwargs"])
        domain, released = config.get("domain"), None
        label = path.parent.name if path.name == CONFIG_NAME else path.name
    return BenchmarkBackbone(
        label=label,
        spec=spec,
        architecture=architecture,
        kwargs=kwargs,
        contract=dict(report.input) if report.input else None,
        source=path,
        released=released,
        domain=domain,
    )


def _scratch(source: str, spec: str) -> BenchmarkBackbone:
    """Random init of a release's, an export's or a config's architecture."""
    label = f"scratch:{Path(source).name or source}"
    if source in RELEASED:
        entry = RELEASED.get(source)
        return BenchmarkBackbone(
            label=label,
            spec=spec,
            architecture=entry.architecture,
            kwargs=dict(entry.kwargs),
            contract=dict(entry.input),
        )
    path = _existing(source, spec)
    if path.suffix.lower() in (".yaml", ".yml"):
        architecture, kwargs = _config_backbone(path, spec)
        return BenchmarkBackbone(label=label, spec=spec, architecture=architecture, kwargs=kwargs)
    config_path = path / CONFIG_NAME if path.is_dir() else path
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        architecture, kwargs = config["architecture"], dict(config["kwargs"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"--backbone {spec!r}: {config_path} is no export config.json ({err})"
        ) from None
    contract = config.get("input") if isinstance(config.get("input"), Mapping) else None
    return BenchmarkBackbone(
        label=label,
        spec=spec,
        architecture=architecture,
        kwargs=kwargs,
        contract=contract or None,
        domain=config.get("domain"),
    )


def _config_backbone(path: Path, spec: str) -> tuple[str, dict[str, Any]]:
    """``model.init_args.backbone`` of a training config: ``{class_path|architecture,
    init_args|kwargs}``."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        backbone = config["model"]["init_args"]["backbone"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as err:
        raise ValueError(
            f"--backbone {spec!r}: {path} has no model.init_args.backbone ({err})"
        ) from None
    if not isinstance(backbone, Mapping):
        raise ValueError(f"--backbone {spec!r}: {path}: model.init_args.backbone is no mapping")
    architecture = backbone.get("architecture")
    kwargs = backbone.get("kwargs", backbone.get("init_args", {}))
    class_path = backbone.get("class_path")
    if architecture is None and isinstance(class_path, str):  # a class path at the config edge
        module, _, name = class_path.rpartition(".")
        try:
            architecture = backbone_name(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError, ValueError):
            architecture = None
    if not isinstance(architecture, str) or not isinstance(kwargs, Mapping):
        raise ValueError(
            f"--backbone {spec!r}: {path}: model.init_args.backbone names no registered "
            "backbone architecture"
        )
    return architecture, dict(kwargs)
