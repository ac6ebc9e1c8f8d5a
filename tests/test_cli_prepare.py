"""``domainfm prepare`` → ``domainfm fit`` on the streamed shards → SIGKILL mid-epoch →
resume, for each domain on the shipped real data (plus corrupt inputs that must be listed)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]

# tiny models: the point is the data path and exact resume, not the model
OVERRIDES = """\
trainer:
  max_steps: {max_steps}
  log_every_n_steps: 1
  enable_progress_bar: false
  default_root_dir: {root}
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args:
      save_dir: {root}
      name: logs
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args:
        dirpath: {root}/ckpt
        every_n_train_steps: 1
        save_last: true
        save_top_k: -1
model:
  init_args:
    backbone:
      init_args:
        embed_dim: 32
        depth: 2
        num_heads: 4
        drop_path_rate: 0.1
    objectives:
      mae:
        init_args:
          embed_dim: 32
          decoder_dim: 32
          decoder_depth: 1
          decoder_heads: 4
data:
  init_args:
    shards: {shards}
    batch_size: {batch_size}
    num_workers: 2
{data}"""


def _link(src: Path, dst_dir: Path, name: str | None = None) -> None:
    (dst_dir / (name or src.name)).symlink_to(src)


def _medical_inputs(data: Path, src: Path) -> list[str]:
    ts = data / "medical/totalsegmentator_examples"
    _link(ts / "ct_full/example_ct.nii.gz", src)
    _link(ts / "ct_labeled/example_ct_sm.nii.gz", src)
    _link(ts / "ct_full/example_ct.nii.gz", src, "example_ct_again.nii.gz")  # a 4th volume
    series = src / "dicom_series"
    series.mkdir()
    for dcm in sorted((ts / "ct_dicom_series/dicom").iterdir()):
        _link(dcm, series)
    (src / "truncated.nii.gz").write_bytes((ts / "ct_full/example_ct.nii.gz").read_bytes()[:5000])
    (src / "not_a_volume.nii").write_bytes(b"garbage")
    return ["truncated.nii.gz", "not_a_volume.nii"]


def _geospatial_inputs(data: Path, src: Path) -> list[str]:
    s2 = data / "geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band"
    for tif in sorted(s2.glob("*.tif")):
        _link(tif, src)
    _link(data / "geospatial/rasterio_landsat_rgb/RGB.byte.tif", src)  # 3 bands, not 13
    first = sorted(s2.glob("*.tif"))[0]
    (src / "truncated.tif").write_bytes(first.read_bytes()[:3000])
    return ["RGB.byte.tif", "truncated.tif"]


def _audio_inputs(data: Path, src: Path) -> list[str]:
    for ogg in sorted((data / "audio/librosa_example_clips").glob("*.ogg")):
        _link(ogg, src)
    digits = sorted((data / "audio/fsdd_spoken_digits/recordings").glob("*.wav"))[:10]
    for wav in digits:
        _link(wav, src)
    (src / "truncated.wav").write_bytes(digits[0].read_bytes()[:3000])
    sf.write(src / "silent.wav", np.zeros(8000, dtype=np.float32), 8000)
    return ["truncated.wav", "silent.wav"]


DOMAINS: dict[str, dict[str, object]] = {
    "medical3d": {
        "inputs": _medical_inputs,
        "prepare": ["--spacing", "3.0", "--modality", "ct"],
        "config": "configs/medical3d/mae_streaming.yaml",
        "batch_size": 1,
        "data": "    crop_size: 32\n    samples_per_volume: 2\n",
    },
    "geospatial": {
        "inputs": _geospatial_inputs,
        "prepare": ["--chip-size", "32"],
        "config": "configs/geospatial/mae_streaming.yaml",
        "batch_size": 4,
        "data": "    size: 16\n",
    },
    "audio": {
        "inputs": _audio_inputs,
        "prepare": ["--segment-s", "20"],
        "config": "configs/audio/mae_streaming.yaml",
        "batch_size": 4,
        "data": "    frames: 48\n",
    },
}


def _prepare(domain: str, src: Path, out: Path, env: dict[str, str]) -> str:
    cmd = [sys.executable, "-m", "domainfm.cli", "prepare", domain, str(src), str(out)]
    cmd += [*DOMAINS[domain]["prepare"], "--num-workers", "2", "--chunk-bytes", "2MB"]  # type: ignore[misc]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.parametrize(
    "domain",
    [
        "geospatial",
        pytest.param("medical3d", marks=pytest.mark.slow),
        pytest.param("audio", marks=pytest.mark.slow),
    ],
)
def test_prepare_fit_kill_resume(
    domain: str, tmp_path: Path, data_root: Path, kill_resume: Callable[..., int]
) -> None:
    spec = DOMAINS[domain]
    env = {**os.environ, "DOMAINFM_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    src, shards = tmp_path / "src", tmp_path / "prepared"
    src.mkdir()
    bad = spec["inputs"](data_root, src)  # type: ignore[operator]

    # prepare: the bad inputs are named with a reason, the run completes
    out = _prepare(domain, src, shards, env)
    for name in bad:
        line = next((x for x in out.splitlines() if x.strip().startswith(f"skipped {name}:")), "")
        assert line and len(line) > len(f"  skipped {name}: ") + 10, out
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["domain"] == domain
    assert {k for k, v in manifest["sources"].items() if v["status"] == "skipped"} == set(bad)
    items = manifest["totals"]["items"]
    assert items >= 3 and all(
        len(f["sha256"]) == 64 for e in manifest["sources"].values() for f in e["files"]
    )
    chunks = sorted(p.name for p in shards.glob("chunk-*.bin"))

    # re-running on the same input is a no-op
    again = _prepare(domain, src, shards, env)
    assert "nothing new to prepare" in again, again
    assert sorted(p.name for p in shards.glob("chunk-*.bin")) == chunks
    assert json.loads((shards / "manifest.json").read_text()) == manifest

    # fit on the shards, killed mid-epoch 1 and resumed, and resumed from the uninterrupted
    # run's checkpoint on the last batch of epoch 0: identical to it
    batch = int(spec["batch_size"])  # type: ignore[call-overload]
    steps_per_epoch = math.ceil(items / batch)
    max_steps = 2 * steps_per_epoch + 2  # into the third epoch
    kill_after = steps_per_epoch + max(1, steps_per_epoch // 3)
    assert steps_per_epoch >= 3 and kill_after < 2 * steps_per_epoch - 1, (items, batch)

    def command(root: Path, extra: list[str]) -> list[str]:
        overrides = root / "overrides.yaml"
        overrides.write_text(
            OVERRIDES.format(
                max_steps=max_steps,
                root=root,
                shards=shards,
                batch_size=batch,
                data=spec["data"],
            )
        )
        return [
            sys.executable,
            "-m",
            "domainfm.cli",
            "fit",
            "--config",
            str(REPO / str(spec["config"])),
            "--config",
            str(overrides),
            *extra,
        ]

    kill_resume(
        command,
        tmp_path,
        max_steps=max_steps,
        kill_after_step=kill_after,
        steps_per_epoch=steps_per_epoch,
        env=env,
        resume_steps=(steps_per_epoch,),
    )
