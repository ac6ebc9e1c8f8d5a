"""HEAR API over domainfm audio exports: the shapes and attributes HEAR specifies, timestamps
in ms, scene = mean of timestamps, streamed long-file embedding under a memory limit, front
ends taken from checkpoints (sample-rate mismatch refused)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

from domainfm.core.checkpoint_io import save_safetensors
from domainfm.core.registry import init_config
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.audio import AudioNTT2020, LogMelFrontend, load_audio
from domainfm.domains.audio.contract import AudioContract
from domainfm.domains.audio.datamodule import checkpoint_frontend
from domainfm.domains.audio.frontends import build_frontend
from domainfm.domains.audio.hear import (
    HEARModel,
    embed_file,
    get_scene_embeddings,
    get_timestamp_embeddings,
    load_model,
)
from domainfm.domains.audio.released.byola import BYOLA_FRONTEND
from domainfm.domains.audio.released.wav2vec2 import torchaudio_wav2vec2_keys
from domainfm.domains.audio.wav2vec2_encoder import Wav2Vec2Encoder
from domainfm.domains.audio.waveform_frontend import WaveformFrontend
from domainfm.pretrained.export import CONFIG_NAME, FORMAT, WEIGHTS_NAME
from domainfm.pretrained.load import load_backbone
from domainfm.pretrained.registry import RELEASED, load_released, released_checkpoint

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
    # columns whose centre lies within the audio (HEAR's validator refuses later timestamps)
    columns = int(np.floor(n / 16000 * 1000 / hop_ms + 0.5))
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


# -- released files ------------------------------------------------------------------------

BYOLA = "byola-audiontt2020-d512"


def _byola_file(folder: Path) -> Path:
    """BYOL-A's ``AudioNTT2020-BYOLA-64x96d512.pth`` as published (a plain state dict, 5 M
    parameters), random weights."""
    torch.manual_seed(0)
    path = folder / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(AudioNTT2020(n_mels=64, d=512).state_dict(), path)
    return path


def test_load_model_on_the_byola_release_file(tmp_path: Path) -> None:
    """The release is identified from the file; its embeddings are BYOL-A's front end (from
    the release's contract) + the released weights, computed directly."""
    path = _byola_file(tmp_path)
    model = load_model(str(path))
    assert (model.sample_rate, model.scene_embedding_size, model.frames) == (16000, 512, 96)
    recorded = init_config(model.frontend)
    assert recorded["architecture"] == BYOLA_FRONTEND["architecture"] == "log_mel"
    assert recorded["kwargs"].items() >= BYOLA_FRONTEND["kwargs"].items()
    torch.manual_seed(1)
    audio = torch.rand(2, 191 * 160) * 2 - 1  # 192 frames: two whole 96-frame segments
    emb, ts = get_timestamp_embeddings(audio, model)
    reference, _ = load_released(BYOLA, path)
    feats = build_frontend(BYOLA_FRONTEND)(audio)  # (2, 64, 192)
    chunks = feats.reshape(2, 64, 2, 96).permute(0, 2, 1, 3).reshape(4, 1, 64, 96)
    with torch.no_grad():
        tokens, grid = reference.eval().forward_tokens(chunks)  # (4, 12, 512), grid (1, 12)
    assert tuple(grid.shape) == (1, 12)
    torch.testing.assert_close(emb, tokens.reshape(2, 24, 512), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ts[0], 40.0 + 80.0 * torch.arange(24, dtype=torch.float32))
    torch.testing.assert_close(get_scene_embeddings(audio, model), emb.mean(dim=1))


TINY_WAV2VEC2: dict[str, Any] = {
    "extractor_conv_layer_config": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2,
    "encoder_embed_dim": 32,
    "encoder_pos_conv_kernel": 16,
    "encoder_pos_conv_groups": 4,
    "encoder_num_layers": 1,
    "encoder_num_heads": 2,
    "encoder_ff_interm_features": 64,
}
"""A shrunk wav2vec 2.0 base: the same layout and hop (320) / receptive field (400)."""
TINY_SEGMENT = 4000
"""Its segment (samples), short so that a second of audio spans several chunks."""


@pytest.fixture
def tiny_wav2vec2_release() -> Iterator[str]:
    """A shrunk wav2vec 2.0 release (torchaudio layout, the raw-waveform contract with a
    short segment), registered for the test."""
    name = "toy-wav2vec2-tiny"
    contract = AudioContract.of(
        WaveformFrontend(sample_rate=16000, normalize=False, min_samples=400),
        frames=TINY_SEGMENT,
    )
    released_checkpoint(
        name=name,
        architecture="wav2vec2",
        kwargs=TINY_WAV2VEC2,
        source_layout="torchaudio Wav2Vec2Model state dict, shrunk",
        input=contract,
        license="MIT",
    )(torchaudio_wav2vec2_keys)
    yield name
    RELEASED.remove(name)


def _tiny_wav2vec2_file(folder: Path) -> Path:
    torch.manual_seed(0)
    path = folder / "wav2vec2_tiny.pth"
    torch.save(Wav2Vec2Encoder(**TINY_WAV2VEC2).state_dict(), path)
    return path


def test_load_model_on_a_waveform_release_file(tiny_wav2vec2_release: str, tmp_path: Path) -> None:
    """A one-axis (time) token grid: every token is a column, 20 ms apart on one regular grid
    across chunks (chunks overlap by receptive field - hop), stamped at the centre of its
    400-sample receptive field; each chunk's columns are the backbone's tokens on it."""
    path = _tiny_wav2vec2_file(tmp_path)
    model = load_model(str(path))
    assert model.waveform and (model.sample_rate, model.scene_embedding_size) == (16000, 32)
    assert (model.column_frames, model.span, model.stride) == (320, 400, 12 * 320)
    torch.manual_seed(1)
    audio = torch.rand(2, 16000) * 2 - 1
    emb, ts = get_timestamp_embeddings(audio, model)
    # 4 chunks of 4000 samples every 3840 (12 tokens each), then 640 samples left: 1 token
    assert emb.shape == (2, 49, 32) and ts.shape == (2, 49)
    torch.testing.assert_close(ts[1], 12.5 + 20.0 * torch.arange(49, dtype=torch.float32))
    backbone, _ = load_backbone(path)
    with torch.no_grad():
        for first, start, stop in ((0, 0, 4000), (12, 3840, 7840), (48, 15360, 16000)):
            tokens, _ = backbone.eval().forward_tokens(audio[:, None, start:stop])
            got = emb[:, first : first + tokens.shape[1]]
            torch.testing.assert_close(got, tokens, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(get_scene_embeddings(audio, model), emb.mean(dim=1))
    short, short_ts = get_timestamp_embeddings(audio[:, :100], model)  # padded to 400
    assert short.shape == (2, 1, 32) and short_ts.shape == (2, 1)


def test_streamed_waveform_embeddings_equal_in_memory(
    tiny_wav2vec2_release: str, tmp_path: Path
) -> None:
    """Windows overlap by what chunks overlap: streamed columns are the in-memory ones."""
    model = load_model(str(_tiny_wav2vec2_file(tmp_path)))
    torch.manual_seed(2)
    wave = torch.rand(40000) * 2 - 1  # 2.5 s
    clip = tmp_path / "noise.wav"
    sf.write(clip, wave.numpy(), 16000, subtype="FLOAT")
    streamed, ts, scene = embed_file(clip, model, window_s=1.0)
    whole, whole_ts = get_timestamp_embeddings(load_audio(clip, 16000, mono=True)[0], model)
    torch.testing.assert_close(ts, whole_ts[0])
    torch.testing.assert_close(streamed, whole[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(scene, whole[0].mean(dim=0), atol=1e-5, rtol=1e-4)


def test_a_waveform_backbone_needs_the_waveform_front_end() -> None:
    backbone = Wav2Vec2Encoder(**TINY_WAV2VEC2)
    with pytest.raises(ValueError, match="Wav2Vec2Encoder is a waveform model"):
        HEARModel(backbone, LogMelFrontend(), 96)


@pytest.mark.slow
def test_hear_validator_accepts_the_module(tmp_path: Path) -> None:
    """HEAR's own submission validator (``hearvalidator`` 2021.0.6: the API's functions and
    attributes, output shapes and dtypes, regular timestamps within the audio) on this module
    with BYOL-A's released file. Not a dependency: install it (it imports tensorflow) to run
    this test."""
    validate = pytest.importorskip(
        "hearvalidator.validate",
        reason="hearvalidator (HEAR 2021's validator, which imports tensorflow) is not installed",
    )
    validate.ValidateModel("domainfm.domains.audio.hear", str(_byola_file(tmp_path)), "cpu")()
