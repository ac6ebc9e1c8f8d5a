"""Domain plugins: what a domain contributes to the library and the ``domainfm`` command.

Each domain package (``domainfm.domains.medical3d``, …, or a third-party package listed under
the ``domainfm.domains`` entry-point group) defines one :class:`DomainPlugin` subclass and
registers it with :func:`register_domain` at its definition. The plugin names the domain's
input contract and provides the hooks behind the generic CLI verbs:

* ``prepare DOMAIN SRC OUT``: :meth:`DomainPlugin.add_prepare_arguments` +
  :meth:`DomainPlugin.preparer`;
* ``segment CKPT INPUT OUTPUT`` / ``detect …``: :meth:`DomainPlugin.segment` /
  :meth:`DomainPlugin.detect`, chosen by the input contract recorded in the checkpoint
  (or ``--domain``), with the domain's own ``segment`` options from
  :meth:`DomainPlugin.add_segment_arguments`;
* domain-specific subcommands (e.g. sound event detection): :meth:`DomainPlugin.commands`.

The CLI never names a domain: adding one is a folder, one registration and a config.

Example::

    >>> @register_domain
    ... class ToyPlugin(DomainPlugin):
    ...     name = "toy"
    ...     summary = "1D toy signals"
    ...     contract = ToyContract
    >>> get_domain("toy").summary
    '1D toy signals'
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from domainfm.core.checkpoint_io import check_writable_folder
from domainfm.core.contract import InputContract, contract_from_dict
from domainfm.core.plugins import discover_plugins, plugin_failures
from domainfm.core.registry import Registry
from domainfm.data.shards import Preparer
from domainfm.tasks.benchmark.hooks import DomainBenchmark
from domainfm.tasks.detection_module import DetectionModule
from domainfm.tasks.finetune_module import FinetuneModule


@dataclass(frozen=True, kw_only=True)
class SegmentRequest:
    """One ``domainfm segment`` call: where to read and write, and how to tile.

    Attributes:
        input: the input file or folder (its format is the domain's).
        output: where the label map goes (refused when it is the input).
        overlap: window overlap fraction in [0, 1).
        batch_size: windows per forward pass.
        roi_size: window size in the model's input grid (``None``: the training size).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …
        progress: show a progress bar.
        options: the domain's own options by name (those its
            :meth:`DomainPlugin.add_segment_arguments` adds, e.g. ``assume_geometry``).
    """

    input: Path
    output: Path
    overlap: float = 0.5
    batch_size: int = 2
    roi_size: tuple[int, ...] | None = None
    device: str = "cpu"
    progress: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class DetectRequest:
    """One ``domainfm detect`` call (see :class:`SegmentRequest` for the shared fields).

    Attributes:
        score_threshold: lowest score kept.
        nms_iou: IoU above which boxes of overlapping windows are merged.
        wgs84: write geo-referenced outputs in longitude/latitude.
        options: the domain's own options by name.
    """

    input: Path
    output: Path
    overlap: float = 0.25
    batch_size: int = 4
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    wgs84: bool = False
    device: str = "cpu"
    progress: bool = True
    options: Mapping[str, Any] = field(default_factory=dict)


Command = Callable[[Sequence[str]], int]
"""A subcommand: parses its own arguments, returns the exit status."""


class UnsupportedByDomain(ValueError):
    """The domain has no hook for what was asked (e.g. detection on audio)."""


class DomainPlugin:
    """Base class of a domain plugin (subclass it and decorate with :func:`register_domain`).

    Class attributes:
        name: the domain's name on the command line and in prepared manifests.
        summary: one line for ``--help``.
        contract: the domain's :class:`~domainfm.core.contract.InputContract` subclass.
        segment_suffixes, detect_suffixes: the output formats of the two hooks.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    contract: ClassVar[type[InputContract]]
    segment_suffixes: ClassVar[tuple[str, ...]] = ()
    """Output file endings ``segment`` writes (checked before any computation)."""
    detect_suffixes: ClassVar[tuple[str, ...]] = ()
    """Output file endings ``detect`` writes."""
    benchmark: ClassVar[DomainBenchmark | None] = None
    """The domain's ``domainfm benchmark`` hooks (its task formats, features, fine-tuning,
    adaptation; :class:`~domainfm.tasks.benchmark.hooks.DomainBenchmark`), if it has any."""

    def add_prepare_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the domain's ``domainfm prepare DOMAIN`` options (none by default)."""

    def preparer(self, args: argparse.Namespace) -> Preparer:
        """The domain's preparer from parsed ``prepare`` options."""
        raise UnsupportedByDomain(f"domain {self.name!r} has no 'domainfm prepare' support")

    def add_segment_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the domain's ``domainfm segment`` options (none by default); the command
        parses them for checkpoints of this domain and passes them as ``request.options``."""

    def segment(
        self, module: FinetuneModule, contract: InputContract, request: SegmentRequest
    ) -> str:
        """Segment ``request.input`` and write ``request.output``; returns what was written
        (one line, for the command's summary)."""
        raise UnsupportedByDomain(f"domain {self.name!r} has no 'domainfm segment' support")

    def detect(
        self, module: DetectionModule, contract: InputContract, request: DetectRequest
    ) -> str:
        """Detect objects in ``request.input`` and write ``request.output``; returns what
        was written (one line)."""
        raise UnsupportedByDomain(f"domain {self.name!r} has no 'domainfm detect' support")

    def commands(self) -> Mapping[str, tuple[str, Command]]:
        """Domain subcommands: ``{name: (one-line help, command)}``."""
        return {}


def check_output(
    output: str | Path,
    *,
    inputs: Sequence[str | Path],
    suffixes: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Refuse, before any computation, an output that cannot or must not be written.

    Refused (a ``ValueError`` naming the path): an output that is one of ``inputs`` (also
    through links) or an existing file, both unless ``overwrite``; a format not in
    ``suffixes`` (when given); a folder in the way, or a parent folder that exists as a file
    or is not writable.

    Returns:
        ``output`` as a ``Path``.
    """
    target = Path(output)
    for source in inputs:
        same = Path(source).exists() and target.exists() and target.samefile(source)
        if same and not overwrite:
            raise ValueError(
                f"{target}: the output is the input {source}; give another path "
                "(or --overwrite to replace the input)"
            )
    if target.is_dir():
        raise ValueError(f"{target}: the output is an existing folder; give a file path")
    if target.exists() and not overwrite:
        raise ValueError(f"{target}: the output exists; give another path or --overwrite")
    if suffixes and not target.name.lower().endswith(tuple(s.lower() for s in suffixes)):
        raise ValueError(f"{target}: unsupported output format; use one of {', '.join(suffixes)}")
    check_writable_folder(target)
    return target


DOMAINS: Registry[DomainPlugin] = Registry("domain")

P = TypeVar("P", bound=type[DomainPlugin])


def register_domain(cls: P) -> P:
    """Class decorator: register one instance of the plugin under ``cls.name``."""
    DOMAINS.register(cls.name)(cls())
    return cls


def all_domains() -> list[DomainPlugin]:
    """Every installed domain plugin (discovered once), sorted by name."""
    discover_plugins()
    return [DOMAINS.get(name) for name in DOMAINS]


def get_domain(name: str) -> DomainPlugin:
    """The plugin of domain ``name``.

    Raises:
        ValueError: naming the installed domains when ``name`` is not one of them.
    """
    if name not in DOMAINS:
        discover_plugins()
    if name not in DOMAINS:
        known = ", ".join(DOMAINS) or "none"
        broken = plugin_failures().get(name)
        why = f" (its plugin failed to import: {broken})" if broken else ""
        raise ValueError(f"unknown domain {name!r}{why}; installed domains: {known}")
    return DOMAINS.get(name)


def domain_of(contract: InputContract) -> DomainPlugin:
    """The plugin whose contract type ``contract`` is."""
    for plugin in all_domains():
        if isinstance(contract, plugin.contract):
            return plugin
    raise ValueError(f"no installed domain takes a {type(contract).__name__}")


def domain_commands() -> dict[str, tuple[str, Command]]:
    """The subcommands every installed domain adds, ``{name: (help, command)}``.

    Raises:
        ValueError: when two domains add the same command name.
    """
    found: dict[str, tuple[str, Command]] = {}
    owner: dict[str, str] = {}
    for plugin in all_domains():
        for name, entry in plugin.commands().items():
            if name in found:
                raise ValueError(
                    f"domains {owner[name]!r} and {plugin.name!r} both add a {name!r} command"
                )
            found[name], owner[name] = entry, plugin.name
    return found


def recorded_domain(
    meta: Mapping[str, Any], *, source: str, domain: str | None = None
) -> tuple[DomainPlugin, InputContract]:
    """The plugin and typed contract of a checkpoint's metadata: the domain given on the
    command line, else the one recorded with the contract.

    Raises:
        ValueError: naming ``source`` when the contract is missing, incomplete or not the
            given domain's.
    """
    recorded = meta.get("input") or {}
    if domain is None:
        contract = contract_from_dict(recorded, source=source)
        return domain_of(contract), contract
    plugin = get_domain(domain)
    if recorded.get("kind") not in (None, plugin.contract.kind):
        raise ValueError(f"{source} holds a {recorded['kind']} model, not a {domain} one")
    try:
        return plugin, plugin.contract.from_dict(recorded)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from err
