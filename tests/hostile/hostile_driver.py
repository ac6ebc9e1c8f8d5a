"""Run hostile cases in this process, under an address-space limit, and report JSON lines.

Usage (``test_hostile.py`` runs it; by hand for one case)::

    python tests/hostile/hostile_driver.py --work /tmp/hostile --results out.jsonl CASE_ID...

The heavy modules are imported first; then the address space is capped at what they map plus
:data:`HEADROOM_GB` (``RLIMIT_AS``; importing torch alone maps about 3 GB of virtual address
space, most of it never touched, so a fixed cap would be meaningless). The per-allocation size
guard of the library is set below that headroom (``DOMAINFM_MAX_ALLOC_GB``, see
``test_hostile.py``), so an input the guards refuse never reaches the cap, and an allocation
they miss dies here with a ``MemoryError`` instead of swapping the machine.

Each case runs in its own folder (also the working directory) through
``domainfm.cli.main(argv)``, with stdout and stderr captured at the file-descriptor level (so
C libraries' and loggers' output is caught too), ``SystemExit`` turned into the exit status and
any other exception printed as Python would (a traceback, status 1). Before each case the line
``{"id": ..., "event": "start"}`` is written, so the caller can tell which case a crash hit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from hostile_cases import REGISTRY
from hostile_checks import Outcome, check
from hostile_models import Models
from hostile_spec import Case, Ctx, Run

from domainfm.cli import USAGE_ERRORS
from domainfm.cli import main as domainfm_main
from domainfm.domains.plugin import all_domains

HEADROOM_GB = 3.0
"""Address space a case may map beyond the driver's imports (GiB)."""
PRELOAD = (
    "torch",
    "lightning",
    "lightning.pytorch.cli",
    "jsonargparse",
    "monai.transforms",
    "monai.inferers",
    "nibabel",
    "pydicom",
    "rasterio",
    "soundfile",
    "torchaudio",
    "torchvision",
    "torchmetrics",
    "litdata",
    "domainfm.cli",
    "domainfm.domains.medical3d",
    "domainfm.domains.geospatial",
    "domainfm.domains.audio",
)
"""Imported before the cap is set (their mappings are the baseline, not a case's growth)."""
TEMP_MARKERS = (".tmp", ".part", ".partial")


class CaseTimeout(BaseException):
    """Raised by the alarm when a case runs past its timeout (not an ``Exception``, so library
    code cannot swallow it)."""


def _alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout


def vm_size() -> int:
    """This process's mapped address space (bytes)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def max_rss() -> int:
    """Peak resident memory of this process so far (bytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@contextlib.contextmanager
def captured() -> Iterator[dict[str, str]]:
    """Redirect fds 1 and 2 to files; the dict gets ``stdout``/``stderr`` on exit."""
    out: dict[str, str] = {}
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as fout, tempfile.TemporaryFile() as ferr:
        os.dup2(fout.fileno(), 1)
        os.dup2(ferr.fileno(), 2)
        try:
            yield out
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            for name, handle in (("stdout", fout), ("stderr", ferr)):
                handle.seek(0)
                out[name] = handle.read().decode("utf-8", "backslashreplace")


def snapshot(root: Path) -> set[str]:
    """Every path under ``root`` (relative), links not followed."""
    found: set[str] = set()
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(folder, name), root))
    return found


def digest(path: Path) -> str:
    """A file's content hash (a huge, e.g. sparse, file: its size, mtime, first and last MiB)."""
    if path.is_dir():
        return "<dir>"
    if not path.exists():
        return "<absent>"
    size = path.stat().st_size
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        if size <= 64 * 2**20:
            sha.update(handle.read())
        else:
            sha.update(f"{size} {path.stat().st_mtime_ns}".encode())
            sha.update(handle.read(2**20))
            handle.seek(size - 2**20)
            sha.update(handle.read())
    return sha.hexdigest()


def invoke(argv: list[str], timeout: float) -> tuple[int | None, bool]:
    """``domainfm.cli.main(argv)`` → (exit status, timed out)."""
    signal.alarm(max(1, int(timeout)))
    try:
        domainfm_main(argv)
        return 0, False
    except SystemExit as stop:
        if stop.code is None:
            return 0, False
        if isinstance(stop.code, int):
            return stop.code, False
        print(stop.code, file=sys.stderr)
        return 1, False
    except CaseTimeout:
        return None, True
    except BaseException:  # what Python would print for an uncaught exception
        traceback.print_exc()
        return 1, False
    finally:
        signal.alarm(0)


def call_api(run: Run, timeout: float, outcome: Outcome) -> None:
    assert run.api is not None
    signal.alarm(max(1, int(timeout)))
    try:
        run.api()
    except CaseTimeout:
        outcome.api_error, outcome.api_error_type = "timed out", "CaseTimeout"
    except BaseException as err:
        outcome.api_error = f"{err}"
        outcome.api_error_type = type(err).__name__
        outcome.api_ok_type = isinstance(err, (*USAGE_ERRORS, OSError))
    finally:
        signal.alarm(0)


def run_case(case: Case, work: Path, models: Models, baseline: int) -> dict[str, Any]:
    root = work / "cases" / case.id
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    marker = work / "markers" / f"{case.id}.marker"
    marker.parent.mkdir(exist_ok=True)
    marker.unlink(missing_ok=True)
    ctx = Ctx(root=root, models=models, marker=marker)
    result: dict[str, Any] = {"id": case.id, "pending": case.pending}
    try:
        return _run_case(case, ctx, result, baseline)
    finally:
        for cleanup in ctx.cleanups:
            with contextlib.suppress(Exception):
                cleanup()


def _run_case(case: Case, ctx: Ctx, result: dict[str, Any], baseline: int) -> dict[str, Any]:
    root, marker = ctx.root, ctx.marker
    try:
        run = case.make(ctx)
    except Exception:
        result["problems"] = [f"the case's generator failed:\n{traceback.format_exc()}"]
        return result
    if run.skip:
        result["skip"] = run.skip
        return result
    before = snapshot(root)
    hashes = {str(p): digest(p) for p in run.unchanged}
    outputs_before = {str(p): p.exists() or p.is_symlink() for p in run.outputs}
    environ, cwd = dict(os.environ), os.getcwd()
    outcome = Outcome()
    rss_before = max_rss()
    os.chdir(root)
    try:
        with captured() as streams:
            if run.argv is not None:
                start = time.monotonic()
                outcome.code, outcome.timed_out = invoke(list(run.argv), case.timeout)
                outcome.seconds = time.monotonic() - start
            if run.api is not None:
                call_api(run, case.timeout, outcome)
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
    outcome.stdout, outcome.stderr = streams["stdout"], streams["stderr"]
    result.update(
        code=outcome.code,
        seconds=round(outcome.seconds, 3),
        stdout=outcome.stdout[-3000:],
        stderr=outcome.stderr[-4000:],
        api_error=outcome.api_error,
        api_error_type=outcome.api_error_type,
        rss_growth_mb=round(max(0, max_rss() - rss_before) / 2**20, 1),
        rss_peak_over_baseline_mb=round((max_rss() - baseline) / 2**20, 1),
    )
    result["problems"] = check(
        case,
        run,
        outcome,
        root=root,
        marker=marker,
        before=before,
        after=snapshot(root),
        hashes_before=hashes,
        hashes_after={str(p): digest(p) for p in run.unchanged},
        outputs_before=outputs_before,
        rss_over_baseline=max_rss() - baseline,
        headroom=int(HEADROOM_GB * 2**30),
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", required=True, help="folder for case folders and models")
    parser.add_argument("--results", required=True, help="JSON lines out")
    parser.add_argument("ids", nargs="+")
    args = parser.parse_args()

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    all_domains()
    torch.set_num_threads(1)
    baseline_vm = vm_size()
    cap = baseline_vm + int(HEADROOM_GB * 2**30)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:  # more than the headroom: must fail at once (nothing is touched if it does not)
        bytearray(cap - vm_size() + 2**30)
        verified = False
    except MemoryError:
        verified = True
    signal.signal(signal.SIGALRM, _alarm)
    work = Path(args.work)
    models = Models(work / "models")
    baseline = max_rss()
    with open(args.results, "a", encoding="utf-8") as results:
        header = {
            "event": "driver",
            "vm_baseline_mb": baseline_vm >> 20,
            "cap_mb": cap >> 20,
            "cap_verified": verified,
        }
        results.write(json.dumps(header) + "\n")
        for case_id in args.ids:
            results.write(json.dumps({"id": case_id, "event": "start"}) + "\n")
            results.flush()
            result = run_case(REGISTRY.cases[case_id], work, models, baseline)
            results.write(json.dumps({**result, "event": "done"}) + "\n")
            results.flush()


if __name__ == "__main__":
    main()
