"""prepare_shards: manifest, no-op re-runs, appends, changed files, refused settings, roll-back
of an interrupted run, bad inputs listed (on real spoken-digit recordings)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from litdata import StreamingDataset

from domainfm.data.shards import INDEX, MANIFEST, prepare_shards, read_manifest
from domainfm.domains.audio.shards import AudioPreparer


def _digits(data_root: Path, n: int, start: int = 0) -> list[Path]:
    files = sorted((data_root / "audio/fsdd_spoken_digits/recordings").glob("*.wav"))
    return files[start : start + n]


def _link(files: list[Path], src: Path) -> None:
    src.mkdir(parents=True, exist_ok=True)
    for f in files:
        (src / f.name).symlink_to(f)


def _chunks(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("chunk-*.bin")}


def _prepare(src: Path, out: Path, **kwargs: object):  # type: ignore[no-untyped-def]
    return prepare_shards(
        AudioPreparer(segment_s=1.0, **kwargs),  # type: ignore[arg-type]
        src,
        out,
        chunk_bytes="64KB",
    )


def test_manifest_noop_and_append(tmp_path: Path, data_root: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    first = _digits(data_root, 4)
    _link(first, src / "sub")
    summary = _prepare(src, out)
    assert len(summary.prepared) == 4 and not summary.skipped
    manifest = read_manifest(out)
    assert manifest["domain"] == "audio" and manifest["settings"]["segment_s"] == 1.0
    raw = StreamingDataset(str(out))
    assert {raw[i]["source"] for i in range(len(raw))} == set(manifest["sources"])
    for f in first:
        entry = manifest["sources"][f"sub/{f.name}"]
        assert entry["status"] == "ok" and entry["items"] >= 1
        assert entry["files"][0]["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
    items = manifest["totals"]["items"]
    assert items == sum(e["items"] for e in manifest["sources"].values())
    assert len(StreamingDataset(str(out))) == items
    before = _chunks(out)

    # same input: nothing written
    again = _prepare(src, out)
    assert not again.prepared and again.unchanged == sorted(f"sub/{f.name}" for f in first)
    assert "nothing new to prepare" in again.describe()
    assert _chunks(out) == before and read_manifest(out) == manifest

    # two new files: appended as new chunks, the old chunks untouched
    more = _digits(data_root, 2, start=10)
    _link(more, src)
    added = _prepare(src, out)
    assert sorted(added.prepared) == sorted(f.name for f in more)
    chunks = _chunks(out)
    assert {k: chunks[k] for k in before} == before and len(chunks) > len(before)
    total = read_manifest(out)["totals"]["items"]
    assert total == items + added.items_added == len(StreamingDataset(str(out)))
    assert len(read_manifest(out)["runs"]) == 2


def test_changed_touched_and_refused_settings(tmp_path: Path, data_root: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    a, b = _digits(data_root, 2)
    shutil.copy(a, src / "a.wav")
    shutil.copy(b, src / "b.wav")
    _prepare(src, out)
    chunks = _chunks(out)

    os.utime(src / "a.wav", ns=(1, 1_000_000_000))  # touched: same content
    shutil.copy(_digits(data_root, 1, start=20)[0], src / "b.wav")  # replaced content
    summary = _prepare(src, out)
    assert summary.unchanged == ["a.wav"] and summary.changed == ["b.wav"]
    assert "changed b.wav: kept the prepared version" in summary.describe()
    assert _chunks(out) == chunks
    assert read_manifest(out)["sources"]["a.wav"]["files"][0]["mtime_ns"] == 1_000_000_000

    with pytest.raises(ValueError, match=r"prepared for audio with settings.*segment_s"):
        _prepare(src, out, min_segment_s=0.25)


@pytest.mark.slow  # keeps the default suite under ~10 min on 2 cores
def test_bad_inputs_listed_and_all_bad_refused(tmp_path: Path, data_root: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    good = _digits(data_root, 2)
    _link(good, src)
    (src / "truncated.wav").write_bytes(good[0].read_bytes()[:3000])
    (src / "notaudio.wav").write_bytes(b"RIFF0000WAVEjunk")
    summary = _prepare(src, out)
    reasons = dict(summary.skipped)
    assert set(reasons) == {"truncated.wav", "notaudio.wav"}
    assert "truncated" in reasons["truncated.wav"] and "notaudio.wav" in reasons["notaudio.wav"]
    manifest = read_manifest(out)
    assert manifest["sources"]["truncated.wav"]["reason"] == reasons["truncated.wav"]
    assert manifest["totals"]["skipped"] == 2
    # unchanged bad files stay listed on re-runs
    assert {k for k, _ in _prepare(src, out).skipped_earlier} == set(reasons)

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.wav").write_bytes(b"not audio")
    with pytest.raises(ValueError, match=r"nothing could be prepared(.|\n)*x\.wav"):
        _prepare(only_bad, tmp_path / "out2")


def test_interrupted_run_is_rolled_back(tmp_path: Path, data_root: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _link(_digits(data_root, 2), src)
    _prepare(src, out)
    index = json.loads((out / INDEX).read_text())
    manifest = (out / MANIFEST).read_text()
    # what a run killed inside LitData leaves: the saved index, a staging folder, a chunk of
    # its own already merged into the index, the manifest not yet updated
    shutil.copyfile(out / INDEX, out / "index.json.before-prepare")
    (out / ".prepare-staging").mkdir()
    orphan = dict(index["chunks"][0], filename="chunk-9-0.bin")
    shutil.copyfile(out / index["chunks"][0]["filename"], out / "chunk-9-0.bin")
    (out / INDEX).write_text(json.dumps({**index, "chunks": [*index["chunks"], orphan]}))
    new = _digits(data_root, 1, start=30)
    _link(new, src)

    summary = _prepare(src, out)
    assert summary.recovered and summary.prepared == [new[0].name]
    assert not (out / "chunk-9-0.bin").exists() or "chunk-9-0.bin" in {
        c["filename"] for c in json.loads((out / INDEX).read_text())["chunks"]
    }
    assert not (out / ".prepare-staging").exists()
    assert not (out / "index.json.before-prepare").exists()
    total = read_manifest(out)["totals"]["items"]
    assert total == len(StreamingDataset(str(out)))  # no item of the killed run counted
    assert json.loads(manifest)["totals"]["items"] + summary.items_added == total


@pytest.mark.slow
def test_run_killed_after_its_manifest_is_not_rolled_back(tmp_path: Path, data_root: Path) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    _link(_digits(data_root, 2), src)
    _prepare(src, out)
    older_index = (out / INDEX).read_text()
    _link(_digits(data_root, 1, start=30), src)
    _prepare(src, out)
    total = read_manifest(out)["totals"]["items"]
    # killed between writing the manifest and removing its saved index
    (out / "index.json.before-prepare").write_text(older_index)
    (out / ".prepare-staging").mkdir()
    summary = _prepare(src, out)
    assert not summary.recovered and not summary.prepared
    assert len(StreamingDataset(str(out))) == total == read_manifest(out)["totals"]["items"]
    assert not (out / "index.json.before-prepare").exists()
