"""Safe, atomic checkpoint file IO.

* Writes go to a temporary file in the destination folder, are flushed and fsynced, then
  renamed over the target (``os.replace``): a crash leaves the old file or the new one, never
  half a file. The temporary file is hidden and named after the target and the writing
  process (``.NAME.PID.XXXX.tmp``); one left by a killed writer (SIGKILL, power loss) is
  removed by the next write of the same target.
* Reads never execute code: ``.safetensors`` through safetensors, everything else through
  ``torch.load(weights_only=True)``. A pickle that asks for anything beyond tensors and plain
  containers is refused with :class:`UnsafeCheckpointError` naming the file, and so is a
  sparse tensor (torch does not check its indices on load: a hostile one reads out of
  bounds).
* JSON documents beside the weights (export configs, dataset manifests) carry a ``"format"``
  and are read back with :func:`read_json_document`, which checks it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint would need to run code (unpickle arbitrary objects) to load."""


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then atomically move the temporary file to ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    prefix = f".{target.name}.{os.getpid()}."
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def check_writable_folder(target: str | Path) -> None:
    """Refuse ``target`` (an output file or folder, named in the error) when its nearest
    existing parent is a file or not writable: checked before any computation."""
    parent = Path(target).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{target}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{target}: the folder {parent} is not writable")


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` for ``target`` whose writing
    process no longer runs (it was killed before it could clean up); returns them."""
    target = Path(target)
    removed = []
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        pid = tmp.name[len(target.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def read_json_document(path: str | Path, version: Any, *, what: str) -> dict[str, Any]:
    """The JSON object in ``path``, a ``what`` (e.g. ``"manifest"``) whose ``"format"`` must
    be ``version``.

    Raises:
        ValueError: naming the file and ``what``, when it is not valid JSON, not an object,
            or of another format.
    """
    source = Path(path)
    try:
        data = json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{source}: unreadable {what} ({err})") from err
    except RecursionError as err:
        raise ValueError(f"{source}: unreadable {what} (nested too deeply)") from err
    found = data.get("format") if isinstance(data, dict) else None
    if found != version:
        raise ValueError(
            f"{source} is not a {what} of format {version!r} (its format is {found!r})"
        )
    return data


def save_safetensors(
    path: str | Path, tensors: dict[str, Tensor], metadata: dict[str, str]
) -> Path:
    """Write a safetensors file atomically (tensors made contiguous and unshared)."""
    from safetensors.torch import save_file

    clean = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(clean, str(tmp), metadata=metadata))


def load_safetensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and string metadata of a safetensors file."""
    from safetensors import safe_open

    tensors: dict[str, Tensor] = {}
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                tensors[key] = handle.get_tensor(key)
    except Exception as err:
        raise ValueError(f"{path} is not a readable safetensors file: {err}") from err
    return tensors, metadata


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with clear errors naming the file.

    Beyond torch's allowlist (tensors, plain containers, numbers, strings), exactly one class
    is allowed: ``argparse.Namespace``, which many research checkpoints store as their
    ``"args"`` (DINO, MoCo, SSL4EO-S12); unpickling it only sets attributes, never runs code.

    Raises:
        UnsafeCheckpointError: the pickle references code or objects outside the allowlist,
            or holds a sparse tensor (its indices are not checked on load).
        ValueError: the file is not a torch checkpoint at all.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            # torch warns when it rebuilds a sparse tensor: refused below, by name
            warnings.filterwarnings("ignore", message="Sparse (invariant checks|CSR tensor)")
            loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        unsafe = [line for line in lines if "Unsupported global" in line or "GLOBAL " in line]
        if not unsafe and _is_pickle(path) and "Weights only load failed" in str(err):
            unsafe = [line for line in lines if line.startswith("Unsupported")] or lines[-1:]
        if unsafe:
            raise UnsafeCheckpointError(
                f"refusing to load {path}: it is a pickle that would construct objects beyond "
                f"tensors and plain containers, which can execute code ({unsafe[0]}). Load it "
                "only if you trust its source, and convert it to safetensors."
            ) from err
        found = [line for line in lines if line.startswith("Unsupported")]
        cause = found[0] if found else (lines[-1] if lines else type(err).__name__)
        raise ValueError(f"{path} is not a readable torch checkpoint ({cause})") from err
    sparse = _first_sparse(loaded)
    if sparse is not None:
        where = f"its entry {sparse}" if sparse else "it"
        raise UnsafeCheckpointError(
            f"refusing to load {path}: {where} is not a dense tensor but a sparse one, whose "
            "indices torch does not check on load (a damaged or hostile one reads out of "
            "bounds); domainfm checkpoints hold dense tensors only"
        )
    return loaded


def _first_sparse(loaded: Any) -> str | None:
    """Where the first tensor of ``loaded`` that is not dense (strided) sits, e.g.
    ``['state_dict']['backbone.w']`` (``""``: ``loaded`` itself; ``None``: every tensor is
    dense)."""
    todo: list[tuple[str, Any]] = [("", loaded)]
    while todo:
        where, value = todo.pop()
        if isinstance(value, Tensor):
            if value.layout != torch.strided:
                return where
        elif isinstance(value, dict):
            todo += [(f"{where}[{k!r}]", v) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            todo += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    return None


def _is_pickle(path: str | Path) -> bool:
    """Whether ``path`` starts like a pickle (protocol 2+) or a torch zip archive, as opposed
    to a file that is no checkpoint at all."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head[:1] == b"\x80" or head == b"PK\x03\x04"
