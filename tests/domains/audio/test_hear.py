"""HEAR API over domainfm audio exports: the shapes and attributes HEAR specifies, timestamps
in ms, scene = mean of timestamps, streamed long-file embedding under a memory limit, front
ends taken from checkpoints (sample-rate mismatch refused)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from domainfm.core.checkpoint_io import save_safetensors
from domainfm.core.registry import init_config
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.audio import AudioNTT2020, LogMelFrontend, load_audio
from domainfm.domains.audio.datamodule import checkpoint_frontend
from domainfm.domains.audio.hear import (
    HEARModel,
    embed_file,
    get_scene_embeddings,
    get_timestamp_embeddings,
    load_model,
)
from domainfm.pretrained.export import CONFIG_NAME, FORMAT, WEIGHTS_NAME

DIGITS = "audio/fsdd_spoken_digits/recordings"


def _export(folder: Path, backbone: torch.nn.Module, frontend: LogMelFrontend, frames: int) -> Path:
    """A domainfm export folder (config.json + model.safetensors) for an audio backbone."""
    folder.mkdir(parents=True)
    arch = init_config(backbone)
    config = {
        "format": FORMAT,
        "format_version": 1,
        "architecture": arch["architecture"],
        "kwargs": arch["kwargs"],
        "domain": "audio",
        "input": {
            "sample_rate": frontend.sample_rate,
            "frontend": init_config(frontend),
            "frames": frames,
        },
    }
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    save_safetensors(folder / WEIGHTS_NAME, backbone.state_dict(), {"format": FORMAT})
    return folder


def _vit() -> VisionTransformerND:
    torch.manual_seed(0)
    return VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=16, embed_dim=32, depth=2, num_heads=2
    )


@pytest.mark.parametrize("kind", ["vit", "ntt"])
def test_hear_api_shapes_and_values(data_root: Path, tmp_path: Path, kind: str) -> None:
    backbone = _vit() if kind == "vit" else AudioNTT2020(n_mels=64, d=48)
    frontend = LogMelFrontend(mean=-6.0, std=5.0)
    model = load_model(str(_export(tmp_path / "exp", backbone, frontend, 96)))
    assert model.sample_rate == 16000
    width = 32 if kind == "vit" else 48
    assert model.scene_embedding_size == model.timestamp_embedding_size == width
    clips = sorted((data_root / DIGITS).glob("7_nicolas_*.wav"))[:3]
    waves = [load_audio(c, 16000)[0][0] for c in clips]
    n = min(len(w) for w in waves)
    audio = torch.stack([w[:n] for w in waves])  # (3, n)
    emb, ts = get_timestamp_embeddings(audio, model)
    hop_ms = 160.0 if kind == "vit" else 80.0
    columns = int(np.ceil(n / 16000 * 1000 / hop_ms))
    assert emb.shape == (3, columns, width) and ts.shape == (3, columns)
    torch.testing.assert_close(
        ts[0], hop_ms / 2 + hop_ms * torch.arange(columns, dtype=torch.float32)
    )
    scene = get_scene_embeddings(audio, model)
    assert scene.shape == (3, width)
    torch.testing.assert_close(scene, emb.mean(dim=1))
    # each sound is embedded on its own: batching does not mix sounds
    single, _ = get_timestamp_embeddings(audio[1:2], model)
    torch.testing.assert_close(single[0], emb[1], atol=1e-5, rtol=1e-4)
    # and the first columns equal the backbone's tokens on the first segment
    x = frontend(audio[:1])[:, :, :96][:, None]
    if x.shape[-1] == 96:
        tokens, grid = model.backbone.forward_tokens(x)
        prefix = model.backbone.num_prefix_tokens
        expected = tokens[:, prefix:].reshape(1, *grid.shape, -1).mean(dim=1)[0]
        torch.testing.assert_close(emb[0, : expected.shape[0]], expected, atol=1e-5, rtol=1e-4)


def test_load_model_refuses_non_audio_exports(tmp_path: Path) -> None:
    folder = _export(tmp_path / "exp", _vit(), LogMelFrontend(mean=0.0, std=1.0), 96)
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["input"] = {"bands": ["B02"]}
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="records no audio front end"):
        load_model(str(folder))


def test_frontend_from_checkpoint_and_rate_mismatch(tmp_path: Path) -> None:
    recorded = LogMelFrontend(mean=-4.5, std=4.0)
    folder = _export(tmp_path / "exp", _vit(), recorded, 96)
    built = checkpoint_frontend(folder)
    assert (built.mean, built.std, built.sample_rate) == (-4.5, 4.0, 16000)
    assert checkpoint_frontend(folder, LogMelFrontend()).mean == -4.5  # same settings: fine
    with pytest.raises(ValueError, match=r"exp fixes the sample rate at 16000 Hz.*8000 Hz"):
        checkpoint_frontend(folder, LogMelFrontend(sample_rate=8000, f_max=3800.0))
    with pytest.raises(ValueError, match="n_mels"):
        checkpoint_frontend(folder, LogMelFrontend(n_mels=128))


def test_ten_minute_file_embeds_with_bounded_memory(data_root: Path, tmp_path: Path) -> None:
    """10 minutes of real clips at 44.1 kHz stereo (212 MB as float32 once decoded) embed
    with the process growing by less than 60 MB."""
    clips = sorted((data_root / DIGITS).glob("*.wav"))
    pieces, total = [], 0
    for clip in clips:
        wave, _ = load_audio(clip, 44100)
        pieces.append(wave[0].numpy())
        total += wave.shape[1]
        if total >= 600 * 44100:
            break
    while total < 600 * 44100:  # the 800 clips are ~6 minutes: repeat them
        pieces += pieces
        total *= 2
    mono = np.concatenate(pieces)[: 600 * 44100]
    long_file = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(long_file, "w", samplerate=44100, channels=2, subtype="PCM_16") as out:
        for start in range(0, len(mono), 44100 * 30):
            part = mono[start : start + 44100 * 30]
            out.write(np.stack([part, 0.5 * part], axis=1))
    del pieces, mono
    export = _export(tmp_path / "exp", _vit(), LogMelFrontend(mean=-6.0, std=5.0), 96)
    script = textwrap.dedent(
        f"""
        import resource, torch
        from domainfm.domains.audio.hear import load_model, embed_file
        model = load_model({str(export)!r})
        torch.zeros(1)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        emb, ts, scene = embed_file({str(long_file)!r}, model, window_s=20.0)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(emb.shape[0], float(ts[-1]), (after - before) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    count, last_ms, grown_mb = out.stdout.split()
    assert int(count) == 3750  # 600 s / 160 ms
    assert abs(float(last_ms) - (600_000 - 80)) < 1
    assert float(grown_mb) < 60, f"embedding grew the process by {grown_mb} MB"


def test_streamed_equals_in_memory_away_from_window_edges(data_root: Path, tmp_path: Path) -> None:
    model = HEARModel(_vit(), LogMelFrontend(mean=-6.0, std=5.0), 96)
    clip = data_root / "audio/librosa_example_clips/198-209-0000.ogg"
    streamed, ts, _ = embed_file(clip, model, window_s=5.0)
    whole, whole_ts = get_timestamp_embeddings(load_audio(clip, 16000, mono=True)[0], model)
    assert streamed.shape == whole[0].shape
    torch.testing.assert_close(ts, whole_ts[0])
    inner = [i for i, t in enumerate(ts.tolist()) if 300 < t % (96 * 10 * 5) < 4500]
    assert (
        torch.corrcoef(torch.stack([streamed[inner].flatten(), whole[0, inner].flatten()]))[0, 1]
        > 0.99
    )
