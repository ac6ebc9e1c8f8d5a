"""What a hostile case's run is checked for (the expectations listed in :mod:`hostile_spec`);
every problem found is one line of the case's report."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hostile_spec import Case, Run, name_forms

ERROR_LINE = re.compile(r"^domainfm [\w-]+: error: ")
WARNING_LINE = re.compile(r"^domainfm [\w-]+: warning: ")
"""The one other kind of line a failure may print on stderr: the CLI's own one-line warning
(e.g. a logged skip of a bad file before the run gave up)."""
TEMP_MARKERS = (".tmp", ".part", ".partial", ".temp")
"""Name fragments of temporary files that a finished run must not leave."""


@dataclass
class Outcome:
    """What one run of a case did."""

    code: int | None = None
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    timed_out: bool = False
    api_error: str | None = None
    api_error_type: str | None = None
    api_ok_type: bool = True
    problems: list[str] = field(default_factory=list)


def expected_codes(case: Case) -> tuple[int, ...]:
    return case.code if isinstance(case.code, tuple) else (case.code,)


def _names_in(text: str, names: tuple[str, ...]) -> list[str]:
    """The names of which no form appears in ``text``."""
    return [n for n in names if not any(form in text for form in name_forms(n))]


PROGRESS = re.compile(r"\d+%\|")
"""A progress bar frame (tqdm): allowed on stderr besides the error line."""


def stderr_lines(stderr: str) -> list[str]:
    """The non-empty lines of stderr as a terminal shows them (a ``\r`` rewrites its line),
    progress bars left out."""
    lines = (line.rsplit("\r", 1)[-1] for line in stderr.split("\n"))
    return [line for line in lines if line.strip() and not PROGRESS.search(line)]


def _message_problems(case: Case, run: Run, outcome: Outcome) -> list[str]:
    problems = []
    lines = [line for line in stderr_lines(outcome.stderr) if not WARNING_LINE.match(line)]
    errors = [line for line in lines if ERROR_LINE.match(line)]
    if len(lines) != 1:
        problems.append(
            f"stderr has {len(lines)} non-empty lines besides 'domainfm CMD: warning: ...' "
            "lines, expected one error line"
        )
    if not errors:
        problems.append("no 'domainfm CMD: error: ...' line on stderr")
    # the message: from the (last) error line on (an error listing several files continues
    # on the next lines; that breaks the one-line rule, reported above, not the naming)
    text = outcome.stderr[outcome.stderr.rindex(errors[-1]) :] if errors else outcome.stderr
    missing = _names_in(text, run.names)
    if missing:
        problems.append(f"the error does not name {missing}")
    if case.pattern and not re.search(case.pattern, text):
        problems.append(f"the error does not match {case.pattern!r}")
    return problems


def _file_problems(
    run: Run,
    *,
    failed: bool,
    root: Path,
    before: set[str],
    after: set[str],
    outputs_before: dict[str, bool],
) -> list[str]:
    problems = []
    temps = sorted(p for p in after if any(m in Path(p).name for m in TEMP_MARKERS))
    if temps:
        problems.append(f"temp files left: {temps[:5]}")
    if failed:
        new = sorted(
            p
            for p in after - before
            if not any(Path(p).match(pattern) for pattern in run.allowed_new)
            and not (root / p).is_dir()
        )
        if new:
            problems.append(f"a failed run left new files: {new[:8]}")
        for out in run.outputs:
            exists = out.exists() or out.is_symlink()
            if exists and not outputs_before[str(out)]:
                problems.append(f"partial output {out.name} exists after the failure")
    else:
        for out in run.outputs:
            if not out.exists():
                problems.append(f"output {out.name} missing after success")
    return problems


def _api_problems(case: Case, run: Run, outcome: Outcome) -> list[str]:
    if run.api is None:
        return []
    codes = expected_codes(case)
    must_raise = run.api_raises
    if must_raise is None and (0 not in codes or codes == (0,)):
        must_raise = 0 not in codes  # else either way (a named refusal or a result)
    error = outcome.api_error
    if must_raise is None and error is None:
        return []
    if must_raise is False:
        return [] if error is None else [f"api raised {outcome.api_error_type}: {error[:300]}"]
    if error is None:
        return ["api returned instead of raising"]
    problems = []
    if not outcome.api_ok_type:
        problems.append(f"api raised {outcome.api_error_type}, not a ValueError/OSError kind")
    missing = _names_in(error, run.names[:1])
    if missing:
        problems.append(
            f"api error ({outcome.api_error_type}) does not name {missing}: {error[:300]}"
        )
    return problems


def check(
    case: Case,
    run: Run,
    outcome: Outcome,
    *,
    root: Path,
    marker: Path,
    before: set[str],
    after: set[str],
    hashes_before: dict[str, str],
    hashes_after: dict[str, str],
    outputs_before: dict[str, bool],
    rss_over_baseline: int,
    headroom: int,
) -> list[str]:
    """Every way the run missed the case's expectations (empty: it passed)."""
    problems = []
    if marker.exists():
        problems.append("CODE WAS EXECUTED: the payload's marker file exists")
    if run.argv is not None:
        codes = expected_codes(case)
        if outcome.timed_out:
            if not case.timeout_ok:
                problems.append(f"timed out after {case.timeout:.0f} s")
        elif outcome.code not in codes:
            problems.append(f"exit status {outcome.code}, expected {' or '.join(map(str, codes))}")
        if "Traceback" in outcome.stderr:
            problems.append("a traceback on stderr")
        if outcome.code == 2 or (outcome.code not in (0, None) and 2 in codes):
            problems += _message_problems(case, run, outcome)
        elif outcome.code == 1 and run.names:
            missing = _names_in(outcome.stdout + outcome.stderr, run.names)
            if missing:
                problems.append(f"the report does not name {missing}")
        missing_out = [s for s in run.stdout if s not in outcome.stdout]
        if missing_out:
            problems.append(f"stdout lacks {missing_out}")
        unnamed = _names_in(outcome.stdout + outcome.stderr, run.mentions)
        if unnamed:
            problems.append(
                f"the output does not mention {unnamed} (a skip must be logged by name)"
            )
        if case.max_seconds is not None and outcome.seconds > case.max_seconds:
            problems.append(f"took {outcome.seconds:.1f} s (at most {case.max_seconds} s)")
        problems += _file_problems(
            run,
            failed=outcome.code != 0,
            root=root,
            before=before,
            after=after,
            outputs_before=outputs_before,
        )
    for path, digest in hashes_before.items():
        if hashes_after.get(path) != digest:
            problems.append(f"{Path(path).name} was modified (must stay byte-identical)")
    if rss_over_baseline > headroom:
        problems.append(f"peak memory {rss_over_baseline >> 20} MB over the driver's baseline")
    problems += _api_problems(case, run, outcome)
    return problems
