"""BYOL-A's mixup memory survives a loader resume: a loader restored from ``state_dict()``
mid-epoch continues with the very views of the uninterrupted loader (0 and 2 workers), also
with a bad file among the clips (its verdict re-derived after the resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.data.sampling import seeded_loader
from domainfm.domains.audio import (
    AudioSegmentDataset,
    LogMelFrontend,
    MixupBYOLA,
    index_audio,
)
from domainfm.domains.audio.file_checks import FileChecks

pytestmark = pytest.mark.filterwarnings(
    "ignore::domainfm.domains.audio.index.AudioSkippedWarning"  # the NaN file, expected
)

DIGITS = "audio/fsdd_spoken_digits/recordings"
BATCHES_PER_EPOCH = 4  # 16 samples / 4
STOP_AFTER = 2  # batches of epoch 1 before the snapshot


def _loader(paths: list[Path], views: str, workers: int) -> StatefulDataLoader:
    infos, _ = index_audio(paths)
    dataset = AudioSegmentDataset(
        infos=infos,
        frontend=LogMelFrontend(mean=-5.0, std=5.0),
        frames=32,
        views=views,  # type: ignore[arg-type]
        samples_per_epoch=4 * BATCHES_PER_EPOCH,
        checks=FileChecks([i.path for i in infos]),  # fresh verdicts, as after a restart
    )
    return seeded_loader(dataset, batch_size=4, seed=7, num_workers=workers)


def _views(loader: StatefulDataLoader, epoch: int, stop: int | None = None) -> list[Any]:
    """The ``(view1, view2)`` of each batch of ``epoch`` (the first ``stop`` only)."""
    loader.sampler.set_epoch(epoch)
    out = []
    for batch in loader:
        out.append((batch["view1"], batch["view2"]))
        if len(out) == stop:
            break
    return out


@pytest.fixture
def clips(data_root: Path, tmp_path: Path) -> list[Path]:
    """Five spoken digits and a long recording full of NaN (a bad file, often drawn)."""
    wave, rate = sf.read(data_root / DIGITS / "5_lucas_3.wav")
    bad = np.tile(wave, 20).astype(np.float32)
    bad[len(bad) // 2 :] = np.nan
    sf.write(tmp_path / "half_nan.wav", bad, rate, subtype="FLOAT")
    return [*sorted((data_root / DIGITS).glob("*.wav"))[:5], tmp_path / "half_nan.wav"]


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("views", ["byola", "frame_aligned"])
def test_a_restored_loader_continues_with_the_same_mixup_partners(
    clips: list[Path], views: str, workers: int
) -> None:
    # the uninterrupted loader: epoch 0, then epoch 1
    full = _loader(clips, views, workers)
    _views(full, 0)
    reference = _views(full, 1)

    # the same loader stopped mid-epoch 1, its state taken; then a new one from that state
    first = _loader(clips, views, workers)
    _views(first, 0)
    before = _views(first, 1, stop=STOP_AFTER)
    state = first.state_dict()
    del first
    resumed = _loader(clips, views, workers)
    resumed.load_state_dict(state)
    after = _views(resumed, 1)

    got = before + after
    assert len(got) == len(reference) == BATCHES_PER_EPOCH
    for k, ((a1, a2), (b1, b2)) in enumerate(zip(got, reference, strict=True)):
        assert torch.equal(a1, b1) and torch.equal(a2, b2), f"batch {k} of epoch 1 differs"


def test_the_state_holds_keys_and_restored_entries_are_recomputed() -> None:
    """The saved state is the keys alone; a restored entry is recomputed once, when drawn,
    and the mixes equal the original memory's."""
    inputs: dict[tuple[int, ...], torch.Tensor] = {
        (k, 10 * k): torch.randn(1, 8, 12) for k in range(6)
    }
    original = MixupBYOLA(memory=8)
    g = torch.Generator().manual_seed(1)
    for key, x in list(inputs.items())[:4]:
        for _ in range(2):  # two views: the input is remembered twice
            original(x, g, key)
    state = original.state_dict()
    assert state == {"keys": [[k, 10 * k] for k in range(4) for _ in range(2)]}

    calls: list[tuple[int, ...]] = []

    def recompute(key: tuple[int, ...]) -> torch.Tensor:
        calls.append(key)
        return inputs[key].clone()

    restored = MixupBYOLA(memory=8)
    restored.load_state_dict(state, recompute)
    assert len(restored.memory) == 8 and all(z is None for z in restored.memory)
    h = torch.Generator().set_state(g.get_state())
    for key, x in list(inputs.items())[4:]:
        torch.testing.assert_close(restored(x, h, key), original(x, g, key), rtol=0, atol=0)
    assert restored.state_dict() == original.state_dict()
    assert len(calls) == len(set(calls))  # each input read again at most once


def test_a_memory_of_keyless_inputs_cannot_be_saved() -> None:
    mix = MixupBYOLA()
    mix(torch.zeros(1, 4, 4), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="without keys"):
        mix.state_dict()


def test_a_state_saved_over_other_files_is_dropped_with_a_warning(clips: list[Path]) -> None:
    infos, _ = index_audio(clips)
    frontend = LogMelFrontend(mean=-5.0, std=5.0)
    saved = AudioSegmentDataset(infos=infos, frontend=frontend, frames=32, views="byola")
    saved[(0, 3)]
    other = AudioSegmentDataset(infos=infos[:-1], frontend=frontend, frames=32, views="byola")
    with pytest.warns(UserWarning, match="other audio files"):
        other.load_state_dict(saved.state_dict())
    assert other.two_views is not None and other.two_views.mixup is not None
    assert len(other.two_views.mixup.memory) == 0
