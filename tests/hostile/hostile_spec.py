"""What a hostile case is: an id, a generator of its inputs, the command it runs and what must
come out of it.

A :class:`Case` is data. Its ``make(ctx)`` writes the hostile input(s) into the case's own empty
folder ``ctx.root`` at test time (nothing large is committed; sparse files are fine) and returns
a :class:`Run`: the ``domainfm`` argv, optionally a Python API call, the file names the error
must name, the paths that must stay byte-identical and the outputs that must (not) appear.
:mod:`hostile_driver` runs cases in a subprocess under an address-space limit and reports what
broke; ``test_hostile.py`` turns each case into one pytest id.

Expectations every case gets (see ``hostile_driver.check``):

* the exit status (0 success, 1 check failed, 2 bad input or usage);
* for a failure: no ``Traceback``, one non-empty line on stderr, ``domainfm CMD: error: ...``
  naming every file in ``Run.names`` (and matching ``Case.pattern``);
* no partial output and no temp file left in the case folder by a failed run, none of the
  ``Run.unchanged`` files modified, the ``Run.outputs`` absent after a failure and present after
  a success;
* the marker file ``ctx.marker`` never exists (a pickle / YAML payload would create it);
* resident memory grew by less than the driver's headroom (the address-space limit enforces it);
* the API call (when given) raises a ``ValueError``/``OSError`` naming ``Run.names[0]`` when the
  case fails, and returns when it succeeds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GROUPS = ("checkpoints", "configs", "medical", "dicom", "geospatial", "audio", "outputs")
"""What a case is about (the driver runs cases in registry order, group by group)."""


@dataclass
class Ctx:
    """What a case's generator gets.

    Attributes:
        root: the case's own empty folder (also the working directory of its run).
        models: tiny checkpoints and configs shared by the cases (built lazily).
        marker: a file that must never exist: payloads that would execute code create it.
        cleanups: called after the case's checks (e.g. to unlock a folder made read-only).
    """

    root: Path
    models: Any
    marker: Path
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    @property
    def is_root(self) -> bool:
        """Whether the run is root (``chmod`` does not stop root from writing)."""
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def path(self, *parts: str) -> Path:
        """A path inside the case folder (parents created)."""
        target = self.root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target


@dataclass
class Run:
    """One case's command and what to check of it.

    Attributes:
        argv: the ``domainfm`` arguments (``None``: an API-only case).
        names: strings the one-line error must contain (usually the offending file's name).
        api: a Python API call exercising the same input (optional).
        api_raises: whether ``api`` must raise (default: when the case's code is not 0).
        outputs: must not exist after a failed run; must exist after a successful one.
        unchanged: files that must stay byte-identical.
        stdout: substrings stdout must contain.
        mentions: names stdout or stderr must contain whatever the exit status (the files a
            ``prepare`` or a training run skipped: a logged skip names the file).
        allowed_new: glob patterns (relative to the case folder) a failed run may leave.
        skip: a reason to skip the case here (e.g. ``chmod`` under root).
    """

    argv: list[str] | None
    names: tuple[str, ...] = ()
    api: Callable[[], object] | None = None
    api_raises: bool | None = None
    outputs: tuple[Path, ...] = ()
    unchanged: tuple[Path, ...] = ()
    stdout: tuple[str, ...] = ()
    mentions: tuple[str, ...] = ()
    allowed_new: tuple[str, ...] = ()
    skip: str | None = None


@dataclass(frozen=True)
class Case:
    """One hostile case.

    Attributes:
        id: unique, the pytest id.
        group: one of :data:`GROUPS` (the driver process it runs in).
        make: writes the inputs into ``ctx.root`` and returns the :class:`Run`.
        code: expected exit status, or the statuses allowed (e.g. ``(0, 2)``: a correct result
            or a named refusal, both acceptable).
        pattern: a regex the error line must also match (``""``: none).
        slow: run only with ``-m slow``.
        max_seconds: the run must end within this time (checks made before any computation).
        timeout: the driver stops the case after this many seconds (reported as a failure).
        timeout_ok: reaching ``timeout`` is fine (a run that streams an endless input with
            bounded memory); the interrupted run must still leave no partial output.
        pending: the fix of issue 16 this case waits for, if any (reported with a failure).
    """

    id: str
    group: str
    make: Callable[[Ctx], Run]
    code: int | tuple[int, ...] = 2
    pattern: str = ""
    slow: bool = False
    max_seconds: float | None = None
    timeout: float = 120.0
    timeout_ok: bool = False
    pending: str = ""


@dataclass
class Registry:
    """The cases, in definition order, with unique ids."""

    cases: dict[str, Case] = field(default_factory=dict)

    def add(self, case: Case) -> Case:
        if case.id in self.cases:
            raise ValueError(f"duplicate hostile case id {case.id!r}")
        if case.group not in GROUPS:
            raise ValueError(f"case {case.id}: unknown group {case.group!r}")
        self.cases[case.id] = case
        return case

    def extend(self, cases: Iterable[Case]) -> None:
        for case in cases:
            self.add(case)


def name_forms(name: str) -> set[str]:
    """The ways a file name can appear in a message: as is, and with undecodable bytes
    escaped as Python's ``backslashreplace`` prints them."""
    forms = {name}
    forms.add(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
    forms.add(name.encode("utf-8", "backslashreplace").decode("ascii", "replace"))
    forms.add(repr(name)[1:-1])
    return forms


def source_folder(*makers: Callable[[Path], Any]) -> Callable[[Ctx], Path]:
    """A case input: the folder ``raw/`` in the case folder, filled by ``makers``."""

    def make(ctx: Ctx) -> Path:
        src = ctx.root / "raw"
        src.mkdir()
        for maker in makers:
            maker(src)
        return src

    return make


def prepare_case(domain: str, options: tuple[str, ...]) -> Callable[..., Callable[[Ctx], Run]]:
    """``(make_src, *extra, bad=(), **run)`` → a case running ``domainfm prepare DOMAIN SRC OUT``
    with one worker, the domain's ``options`` and ``extra`` (``bad``: files the summary must
    list)."""

    def case(
        make_src: Callable[[Ctx], Path], *extra: str, bad: tuple[str, ...] = (), **run: Any
    ) -> Callable[[Ctx], Run]:
        def build(ctx: Ctx) -> Run:
            src = make_src(ctx)
            argv = ["prepare", domain, str(src), str(ctx.root / "prepared"), "--num-workers", "1"]
            run.setdefault("names", bad)
            run.setdefault("mentions", bad)
            return Run([*argv, *options, *extra], **run)

        return build

    return case
