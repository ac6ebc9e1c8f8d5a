"""Bad and short clips on the file-based training path.

Clips shorter than a front end's window are zero-padded (the log-mel STFT failed with
torch's "Padding size should be less than ..."). They work in the data modules, in sound
event detection and in HEAR feature extraction. A truncated, damaged or silent file is
checked in full when the training path first reads it, warned about once, skipped, counted
(also when a loader worker found it) and replaced deterministically: batches keep their
shapes and seeded runs their samples."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from domainfm.core.masking import MaskingSpec
from domainfm.core.size_guard import LIMIT_ENV, AllocationTooLarge
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.audio import (
    AudioClipDataModule,
    AudioContract,
    AudioPreparer,
    AudioPretrainDataModule,
    AudioSegmentDataset,
    AudioSkippedWarning,
    EventSequenceDataset,
    KaldiFbankFrontend,
    LogMelFrontend,
    SoundEventModule,
    detect_events,
    index_audio,
    load_audio,
)
from domainfm.domains.audio.file_checks import FileChecks
from domainfm.domains.audio.hear import HEARModel, embed_file, get_scene_embeddings

BIRD = "audio/librosa_example_clips/456440__inspectorj__bird-whistling-robin-single-13.ogg"
SPEECH = "audio/librosa_example_clips/198-209-0000.ogg"
DIGITS = "audio/fsdd_spoken_digits/recordings"


def _vit() -> VisionTransformerND:
    torch.manual_seed(0)
    return VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=16, embed_dim=32, depth=1, num_heads=2
    )


def _short_clip(data_root: Path, path: Path, samples: int = 200) -> Path:
    """The first ``samples`` samples (25 ms at 8 kHz) of a real spoken digit."""
    wave, rate = sf.read(data_root / DIGITS / "3_jackson_0.wav", dtype="float32")
    sf.write(path, wave[1000 : 1000 + samples], rate)
    return path


def _skip_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, AudioSkippedWarning)]


# -- short clips ----------------------------------------------------------------------------


def test_frontends_zero_pad_short_clips() -> None:
    for frontend in (LogMelFrontend(), KaldiFbankFrontend()):
        need = frontend.min_samples
        for count in (1, 100, need - 1, need):
            wave = torch.randn(2, count) * 0.1
            out = frontend(wave)
            assert out.shape == (2, frontend.n_bins, frontend.num_frames(count))
            padded = frontend(torch.nn.functional.pad(wave, (0, need - count)))
            torch.testing.assert_close(out, padded[..., : out.shape[-1]])
        with pytest.raises(ValueError, match="empty waveform"):
            frontend(torch.zeros(1, 0))


def test_short_clips_train_detect_and_embed(data_root: Path, tmp_path: Path) -> None:
    """A 25 ms clip (400 samples at 16 kHz, under the log-mel's 513) in a clip data module,
    in ``domainfm sed``'s detection, in HEAR embeddings and in ``prepare``'s features."""
    rows = []
    for k in range(4):
        clip = _short_clip(data_root, tmp_path / f"short{k}.wav", samples=60 + 50 * k)
        rows.append({"file": clip.name, "label": str(k % 2), "group": "ab"[k // 2]})
    metadata = tmp_path / "metadata.csv"
    with open(metadata, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "group"])
        writer.writeheader()
        writer.writerows(rows)
    frontend = LogMelFrontend(mean=-6.0, std=5.0)
    dm = AudioClipDataModule(
        metadata=str(metadata), val_groups=["b"], frontend=frontend, frames=32, batch_size=2
    )
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["input"].shape == (2, 1, 64, 32)
    assert next(iter(dm.val_dataloader()))["input"].shape == (2, 1, 64, 32)

    short = tmp_path / "short0.wav"
    module = SoundEventModule(backbone=_vit(), num_classes=2).eval()
    meta = {"input": AudioContract.of(frontend, 96, class_names=["a", "b"]).to_dict()}
    events = detect_events(module, meta, [short], threshold=0.0, min_duration=0.0)
    assert all(e.file == str(short) and e.offset <= 0.2 for e in events)

    model = HEARModel(_vit(), frontend, 96)
    embeddings, stamps, scene = embed_file(short, model)
    assert embeddings.shape == (1, 32) and stamps.shape == (1,) and scene.shape == (32,)
    assert get_scene_embeddings(torch.randn(2, 100) * 0.1, model).shape == (2, 32)

    items = list(AudioPreparer(frontend=LogMelFrontend(), features="frontend").items((short,)))
    assert len(items) == 1 and items[0]["features"].shape == (64, 1 + 60 * 2 // 160)


# -- bad files on the training path ---------------------------------------------------------


@pytest.fixture
def corpus(data_root: Path, tmp_path: Path) -> dict[str, Path]:
    """Two good recordings, and three bad ones: cut (seen by the statistics pass, whose
    first window walks the container), silent and damaged after 10 s (both seen only by a
    full read)."""
    bird = tmp_path / "bird.ogg"
    shutil.copy(data_root / BIRD, bird)
    digit = tmp_path / "digit.wav"
    wave, rate = sf.read(data_root / DIGITS / "5_lucas_3.wav", dtype="float32")
    sf.write(digit, np.tile(wave, 4), rate)
    original = (data_root / SPEECH).read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(original[: len(original) // 3])
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(5 * 8000, np.float32), 8000)
    speech, speech_rate = sf.read(data_root / SPEECH, dtype="float32")
    flac = tmp_path / "late_damage.flac"
    sf.write(flac, speech, speech_rate, subtype="PCM_16")
    data = bytearray(flac.read_bytes())
    data[-3000:-2000] = bytes(1000)  # the last second or so
    flac.write_bytes(bytes(data))
    return {"bird": bird, "digit": digit, "cut": cut, "silent": silent, "flac": flac}


def _pretrain(files: dict[str, Path], **kwargs: Any) -> AudioPretrainDataModule:
    return AudioPretrainDataModule(
        files=[str(p) for p in files.values()],
        frames=32,
        views="single",
        masking=MaskingSpec(patch_size=16),
        samples_per_epoch=32,
        batch_size=8,
        **kwargs,
    )


def test_pretraining_skips_counts_and_stays_deterministic(corpus: dict[str, Path]) -> None:
    bad = {str(corpus[k]) for k in ("cut", "silent", "flac")}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dm = _pretrain(corpus)
        dm.setup("fit")
        batches = list(dm.train_dataloader())
    assert len(batches) == 4 and all(b["input"].shape == (8, 1, 64, 32) for b in batches)
    assert all(torch.isfinite(b["input"]).all() for b in batches)
    named = _skip_warnings(record)
    for path in bad:  # one warning per bad file, naming it
        assert sum(m.startswith(f"skipped {path}:") for m in named) == 1, named
    assert {p for p, _ in dm.skipped_files} == bad
    reasons = dict(dm.skipped_files)
    assert "truncated" in reasons[str(corpus["cut"])]
    assert "silent" in reasons[str(corpus["silent"])]
    assert "corrupt or truncated" in reasons[str(corpus["flac"])]
    assert dm.train_set is not None and dm.train_set.skipped_reads > 0

    # a fresh run draws the same batches, and so does a run that already knows the verdicts
    # (a resumed run, or another worker): a replacement depends on the sample's seed only
    again = _pretrain(corpus)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again.setup("fit")
        assert again.train_set is not None and again.train_set.checks is not None
        for k in range(len(again.train_set.infos)):
            again.train_set.checks.verdict(k)
        for first, second in zip(batches, again.train_dataloader(), strict=True):
            torch.testing.assert_close(first["input"], second["input"], rtol=0, atol=0)


def test_clean_files_draw_the_same_samples_with_checks(corpus: dict[str, Path]) -> None:
    infos, _ = index_audio([corpus["bird"], corpus["digit"]])
    frontend = LogMelFrontend(mean=-6.0, std=5.0)
    plain = AudioSegmentDataset(infos=infos, frontend=frontend, frames=32)
    checked = AudioSegmentDataset(
        infos=infos, frontend=frontend, frames=32, checks=FileChecks([i.path for i in infos])
    )
    for key in [(i, 1000 + i) for i in range(6)]:
        torch.testing.assert_close(plain[key]["input"], checked[key]["input"], rtol=0, atol=0)


def test_files_skipped_in_workers_are_counted_and_reported(corpus: dict[str, Path]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dm = _pretrain(corpus, num_workers=2)
        dm.setup("fit")
        assert dm.train_set is not None and dm.train_set.checks is not None
        assert dm.train_set.checks.reasons.keys() == {2}  # the cut file, in the main process
        for batch in dm.train_dataloader():
            assert batch["input"].shape == (8, 1, 64, 32)
    # the silent and damaged files were found by the workers; the main process knows them
    assert {Path(p).name for p, _ in dm.skipped_files} == {
        "cut.ogg",
        "silent.wav",
        "late_damage.flac",
    }
    logged: list[dict[str, float]] = []
    logger = SimpleNamespace(log_metrics=lambda m, step: logged.append(m), save=lambda: None)
    dm.trainer = SimpleNamespace(loggers=[logger], global_step=4)  # type: ignore[assignment]
    with pytest.warns(AudioSkippedWarning, match=r"3 of 5 audio files were skipped"):
        dm.teardown("fit")
    assert logged == [{"data/skipped_files": 3.0}]


def test_clip_modules_skip_bad_clips(data_root: Path, corpus: dict[str, Path]) -> None:
    folder = corpus["bird"].parent
    rows = [  # group a trains (two bad clips), group b validates (one bad clip)
        ("digit.wav", "0", "a"),
        ("cut.ogg", "1", "a"),
        ("bird.ogg", "1", "a"),
        ("silent.wav", "0", "a"),
        ("late_damage.flac", "0", "b"),
        ("digit.wav", "0", "b"),
        ("bird.ogg", "1", "b"),
    ]
    metadata = folder / "metadata.csv"
    with open(metadata, "w", newline="") as handle:
        csv.writer(handle).writerows([("file", "label", "group"), *rows])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dm = AudioClipDataModule(metadata=str(metadata), val_groups=["b"], frames=32, batch_size=2)
        dm.setup("fit")
        assert dm.val_set is not None and len(dm.val_set) == 2  # checked at setup
        assert [Path(p).name for p, _ in dm.skipped_files] == ["late_damage.flac", "cut.ogg"]
        batches = list(dm.train_dataloader())
    assert [b["input"].shape for b in batches] == [(2, 1, 64, 32)] * 2
    assert {Path(p).name for p, _ in dm.skipped_files} == {
        "late_damage.flac",
        "cut.ogg",
        "silent.wav",
    }
    assert len(_skip_warnings(record)) == 3
    # a bad clip is replaced by the next good one, its label with it
    assert dm.train_set is not None
    assert int(dm.train_set[(1, 7)]["label"]) == 1  # cut.ogg -> bird.ogg
    assert int(dm.train_set[(3, 7)]["label"]) == 0  # silent.wav -> digit.wav (cyclic)


def test_event_sequences_skip_bad_clips(corpus: dict[str, Path]) -> None:
    files = [str(corpus[k]) for k in ("bird", "cut", "digit", "silent")]
    frontend = LogMelFrontend(mean=-6.0, std=5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = EventSequenceDataset(
            files=files,
            labels=[0, 1, 0, 1],
            num_classes=2,
            frontend=frontend,
            frames=200,
            checks=FileChecks(files),
        )
        samples = [ds[(i, i)] for i in range(4)]
    assert all(s["input"].shape == (1, 64, 200) for s in samples)
    assert all(float(s["frame_labels"][1].sum()) == 0 for s in samples)  # label 1: bad clips
    assert ds.checks is not None and {p for p, _ in ds.checks.skipped()} == set(files[1::2])


def test_absurd_rates_are_refused_before_resampling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A header declaring 1 Hz (16000 samples: 4.4 hours to resample to 16 kHz, 2.9 GiB)
    or 44101 Hz (a 16000-phase sinc kernel, 16 GiB) is refused with the estimate, naming the
    file, before torchaudio allocates it (limit lowered to 1 GiB)."""
    monkeypatch.setenv(LIMIT_ENV, "1")
    tone = (0.1 * np.sin(np.arange(16000) * 0.3)).astype(np.float32)
    for rate in (1, 44101):
        path = tmp_path / f"rate_{rate}.wav"
        sf.write(path, tone, rate)
        with pytest.raises(AllocationTooLarge, match=rf"^{path}: resampling .* GiB"):
            load_audio(path, 16000)
    assert load_audio(tmp_path / "rate_1.wav")[1] == 1  # not resampled: fine
