"""Kill-and-resume from outside the test suite: the quickstart, SIGKILLed at random steps in
each of epochs 0-3 and resumed each time, must end bit-identical to the uninterrupted run.

For each data path (``file``: the quickstart's volumes read from NIfTI; ``streaming``: the
same volumes prepared into LitData shards with ``domainfm prepare``) and 2 loader workers:

1. run ``configs/medical3d/mae_quickstart.yaml`` uninterrupted (checkpoint after every step,
   CSV log of every step's loss);
2. run it again and kill it (SIGKILL, no chance to clean up) once the checkpoint of a random
   step of epoch 0 exists; resume from the newest checkpoint and kill it again at a random
   step of epoch 1; and so on through epoch 3; then let it finish;
3. compare every logged loss and every final weight (``torch.equal``) and the epoch count.

The kill steps are drawn from ``--seed``. The model and data are the quickstart's; only
``max_steps`` (4 epochs), the checkpoint/logging cadence and ``num_workers`` are overridden.

Usage::

    python benchmarks/resume_exactness.py               # writes benchmarks/results/
    python benchmarks/resume_exactness.py --paths file  # one data path, prints only
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/medical3d/mae_quickstart.yaml"
VOLUMES = (
    "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz",
    "medical/totalsegmentator_examples/ct_labeled/example_ct_sm.nii.gz",
)

OVERRIDES = """\
trainer:
  max_steps: {max_steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {root}, name: logs}}
  callbacks:
    - class_path: domainfm.tasks.monitors.RankMeMonitor
      init_args: {{every_n_steps: 10, max_samples: 256}}
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {root}/ckpt, every_n_train_steps: 1, save_last: true, save_top_k: -1}}
data:
  init_args:
    num_workers: {workers}
"""

STREAMING = """\
data:
  class_path: domainfm.domains.medical3d.StreamingVolumeDataModule
  init_args:
    shards: {shards}
    crop_size: 64
    masking: {{ratio: 0.75}}
    samples_per_volume: 16
    batch_size: 1
    num_workers: {workers}
"""


def _command(root: Path, path: str, shards: Path, workers: int, max_steps: int) -> list[str]:
    overrides = root / "overrides.yaml"
    overrides.write_text(OVERRIDES.format(max_steps=max_steps, root=root, workers=workers))
    cmd = [sys.executable, "-m", "domainfm.cli", "fit", "--config", str(CONFIG)]
    if path == "streaming":
        stream = root / "streaming.yaml"
        stream.write_text(STREAMING.format(shards=shards, workers=workers))
        cmd += ["--config", str(stream)]
    return [*cmd, "--config", str(overrides)]


def _losses(root: Path) -> dict[int, float]:
    out: dict[int, float] = {}
    for path in sorted(root.rglob("metrics.csv")):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss"):
                    out[int(row["step"])] = float(row["train/loss"])
    return out


def _run(cmd: list[str], root: Path, env: dict[str, str], kill_at: int | None) -> float:
    """Run ``cmd``; with ``kill_at``, SIGKILL it once the checkpoint of that step exists.
    Returns the wall time."""
    start = time.perf_counter()
    with open(root / "run.log", "ab") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=log)
        if kill_at is None:
            if proc.wait() != 0:
                raise SystemExit(f"run failed, see {root / 'run.log'}")
            return time.perf_counter() - start
        while not any((root / "ckpt").glob(f"epoch=*-step={kill_at}.ckpt")):
            if proc.poll() is not None:
                raise SystemExit(f"run ended before step {kill_at}, see {root / 'run.log'}")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return time.perf_counter() - start


def _steps_per_epoch(path: str) -> int:
    # quickstart: 2 volumes x 16 crops / batch 4; streaming: batches of 1 volume (16 crops)
    return 8 if path == "file" else 2


def _measure(path: str, workdir: Path, env: dict[str, str], seed: int, workers: int) -> dict:
    per_epoch = _steps_per_epoch(path)
    epochs = 4 if path == "file" else 6
    max_steps = epochs * per_epoch
    shards = workdir / "prepared"
    if path == "streaming" and not shards.exists():
        src = workdir / "volumes"
        src.mkdir()
        for rel in VOLUMES:
            (src / Path(rel).name).symlink_to(Path(env["DOMAINFM_DATA"]) / rel)
        prepare = [sys.executable, "-m", "domainfm.cli", "prepare", "medical3d", str(src)]
        prepare += [str(shards), "--spacing", "3.0", "--modality", "ct"]
        subprocess.run(prepare, env=env, check=True, capture_output=True)

    full = workdir / f"{path}_full"
    full.mkdir()
    wall_full = _run(_command(full, path, shards, workers, max_steps), full, env, None)

    rng = random.Random(seed)
    kills = []  # a random step strictly inside each epoch, or on its last batch
    for epoch in range(min(epochs, 4)):
        kills.append(epoch * per_epoch + rng.randint(1, per_epoch))
    killed = workdir / f"{path}_killed"
    killed.mkdir()
    resumed_from = []
    extra: list[str] = []
    wall = 0.0
    for kill_at in [*kills, None]:
        cmd = _command(killed, path, shards, workers, max_steps) + extra
        wall += _run(cmd, killed, env, kill_at)
        if kill_at is not None:
            newest = max((killed / "ckpt").glob("epoch=*-step=*.ckpt"), key=os.path.getmtime)
            step = int(torch.load(newest, map_location="cpu", weights_only=True)["global_step"])
            resumed_from.append(step)
            extra = ["--ckpt_path", str(newest)]

    reference, got = _losses(full), _losses(killed)
    missing = sorted(set(range(resumed_from[-1], max_steps)) - set(got))
    differing = sorted(s for s in got if got[s] != reference.get(s))
    final = torch.load(killed / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    expected = torch.load(full / "ckpt/last.ckpt", map_location="cpu", weights_only=True)
    unequal = [
        k for k, v in expected["state_dict"].items() if not torch.equal(final["state_dict"][k], v)
    ]
    return {
        "path": path,
        "workers": workers,
        "steps_per_epoch": per_epoch,
        "max_steps": max_steps,
        "kill_after_steps": kills,
        "resumed_from_steps": resumed_from,
        "losses_compared": len(got),
        "losses_missing": missing,
        "losses_differing": differing,
        "tensors_compared": len(expected["state_dict"]),
        "tensors_unequal": unequal,
        "epoch": [final["epoch"], expected["epoch"]],
        "bit_identical": not (missing or differing or unequal)
        and final["epoch"] == expected["epoch"],
        "wall_s": {"uninterrupted": round(wall_full, 1), "killed_and_resumed": round(wall, 1)},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", default="file,streaming")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=int(time.time()) % 10_000)
    args = parser.parse_args(argv)
    data = os.environ.get("DOMAINFM_DATA", str(REPO.parent / "shared/data"))
    env = {**os.environ, "DOMAINFM_DATA": data, "OMP_NUM_THREADS": "1"}
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.paths.split(","):
            result = _measure(path, Path(tmp), env, args.seed, args.workers)
            results.append(result)
            print(json.dumps(result), flush=True)
    ok = all(r["bit_identical"] for r in results)
    lines = [
        "resume exactness: quickstart killed (SIGKILL) once in each of epochs 0-3, "
        f"seed {args.seed}",
        f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    ]
    for r in results:
        lines.append(
            f"  {r['path']:<9} {r['workers']} workers: killed after steps {r['kill_after_steps']}, "
            f"resumed from {r['resumed_from_steps']} of {r['max_steps']} "
            f"({r['steps_per_epoch']}/epoch): {r['losses_compared']} losses, "
            f"{r['tensors_compared']} tensors -> "
            + ("bit-identical" if r["bit_identical"] else f"DIFFERENT {r}")
        )
    print("\n".join(lines))
    if args.paths == "file,streaming":
        out = REPO / "benchmarks/results"
        (out / "resume_exactness.txt").write_text("\n".join(lines) + "\n")
        (out / "resume_exactness.json").write_text(json.dumps(results, indent=2) + "\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
