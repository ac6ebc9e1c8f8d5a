"""The HEAR 2021 API over any domainfm audio checkpoint, and streamed embedding of long files.

HEAR (Turian et al. 2022, "HEAR: Holistic Evaluation of Audio Representations",
arXiv:2203.03022) fixes three functions of a module:

* ``load_model(model_file_path)`` → a model (``torch.nn.Module``) with the attributes
  ``sample_rate``, ``scene_embedding_size`` and ``timestamp_embedding_size``;
* ``get_timestamp_embeddings(audio, model)`` → ``(embeddings, timestamps)``:
  ``(n_sounds, n_timestamps, timestamp_embedding_size)`` and ``(n_sounds, n_timestamps)``
  in **milliseconds**;
* ``get_scene_embeddings(audio, model)`` → ``(n_sounds, scene_embedding_size)``;

with ``audio`` ``(n_sounds, n_samples)`` float32 in ``[-1, 1]`` at ``model.sample_rate``.

``model_file_path`` is a ``domainfm export`` folder (or its ``config.json``), a domainfm
``.ckpt``, or a released audio weights file (e.g. BYOL-A's
``AudioNTT2020-BYOLA-64x96d512.pth``, a torchaudio wav2vec 2.0 / HuBERT file), whose release
is identified by its key layout (:func:`~domainfm.pretrained.load.load_backbone`;
``released=`` names it when the layout alone cannot tell): the backbone is rebuilt strictly,
and the front end (with its normalization statistics) and segment length are those of the
input contract the export, checkpoint or release records.

How embeddings are made, for a spectrogram model (token grid ``(g_f, g_t)``): the front end
turns the audio into ``(F, T)`` frames (10 ms apart); ``T`` is cut into consecutive chunks
of the model's segment length (the last one zero-padded in the normalized domain), each
chunk is encoded, and its tokens are averaged over the frequency axis of the token grid,
leaving one embedding per time column of tokens (every ``patch_t`` frames: 160 ms for
16-frame patches, 80 ms for AudioNTT2020).

For a waveform model (one-axis token grid over time: wav2vec 2.0, HuBERT, with the
``"waveform"`` front end) each token is a column. The samples are cut into chunks of at most
the contract's segment length, one every ``g * hop`` samples (``g`` the tokens of a full
chunk, ``hop`` the token hop), so chunks overlap by what a token sees beyond its hop and
the tokens of consecutive chunks continue one regular grid (every 20 ms for wav2vec 2.0);
the last chunk is as long as the audio left (zero-padded to one receptive field at least),
never padded to a full segment, since its zeros would change the other tokens.

Each column is stamped at the centre of what it covers (its frames; a waveform token's
receptive field); columns whose centre lies past the end of the audio are dropped (one
column is always kept), so timestamps are regular and within the audio, as HEAR's validator
checks. The scene embedding is the mean of the timestamp embeddings.

:func:`embed_file` does the same for a file of any length, read window by window
(:func:`~domainfm.domains.audio.io.iter_audio_windows`): memory holds one window and the
(small) embeddings, never the decoded file.

Example::

    >>> model = load_model("exports/audio_mae")
    >>> emb, ts = get_timestamp_embeddings(torch.zeros(2, 16000), model)
    >>> emb.shape, ts.shape
    (torch.Size([2, 7, 96]), torch.Size([2, 7]))
"""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange
from torch import Tensor, nn

from domainfm.domains.audio.contract import audio_contract
from domainfm.domains.audio.frontends import Frontend
from domainfm.domains.audio.io import iter_audio_windows
from domainfm.domains.audio.waveform_frontend import WaveformFrontend
from domainfm.pretrained.load import load_backbone

ENCODE_BATCH = 64
"""Chunks encoded per forward pass (bounds memory for long audio)."""


def segment_chunks(feats: Tensor, frames: int) -> Tensor:
    """``(n, F, T)`` features → ``(n * c, 1, F, frames)`` consecutive chunks, the last one
    zero-padded (the normalized mean), ``c = ceil(T / frames)``."""
    total = feats.shape[-1]
    chunks = max(1, -(-total // frames))
    feats = nn.functional.pad(feats, (0, chunks * frames - total))
    return rearrange(feats, "n f (c t) -> (n c) 1 f t", t=frames)


def token_columns(backbone: nn.Module, x: Tensor) -> Tensor:
    """``(B, 1, *spatial)`` → ``(B, g_t, D)``: the backbone's patch tokens averaged over every
    axis of the token grid but the last (time): the frequency axis of a spectrogram model's
    ``(g_f, g_t)`` grid; a waveform model's ``(g_t,)`` tokens are its columns."""
    encode = backbone.forward_tokens  # (B, P + N, D), grid
    tokens, grid = encode(x)  # type: ignore[operator]
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    tokens = tokens[:, prefix:].reshape(tokens.shape[0], -1, grid.shape[-1], tokens.shape[-1])
    return tokens.mean(dim=1)  # (B, g_t, D)


class HEARModel(nn.Module):
    """A backbone with its front end, as HEAR expects (see the module docstring).

    Args:
        backbone: a domainfm backbone taking ``(B, 1, F, frames)`` (spectrogram), or
            ``(B, 1, N)`` with a one-axis token grid (waveform; ``frontend`` then is the
            ``"waveform"`` front end).
        frontend: the checkpoint's front end (normalizing).
        frames: the segment length the backbone was trained on (frames; samples for a
            waveform model).

    Raises:
        ValueError: a waveform backbone with a spectrogram front end, or the reverse.
    """

    def __init__(self, backbone: nn.Module, frontend: Frontend, frames: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.frontend = frontend
        self.frames = int(frames)
        self.sample_rate = int(frontend.sample_rate)
        width = int(getattr(backbone, "embed_dim"))  # noqa: B009 - part of the contract
        self.scene_embedding_size = width
        self.timestamp_embedding_size = width
        self.hop_ms = 1000.0 * frontend.hop_length / frontend.sample_rate
        patch = tuple(getattr(backbone, "patch_size"))  # noqa: B009 - part of the contract
        self.waveform = len(patch) == 1
        if self.waveform != isinstance(frontend, WaveformFrontend):
            kind = "a waveform" if self.waveform else "a spectrogram"
            raise ValueError(
                f"{type(backbone).__name__} is {kind} model (patch_size {patch}), but the "
                f"front end is {type(frontend).__name__}"
            )
        if self.waveform:
            grid = backbone.token_grid((self.frames,))  # type: ignore[operator]
            self.column_frames = int(patch[0])  # the token hop (samples)
            self.span = int(getattr(backbone, "receptive_field", self.column_frames))
            self.min_frames = max(self.span, int(frontend.min_samples))
        else:
            grid = backbone.token_grid((frontend.n_bins, self.frames))  # type: ignore[operator]
            self.column_frames = self.frames // grid.shape[-1]  # frames per token column
            self.span = self.column_frames
            self.min_frames = self.frames
        # frames from one chunk's start to the next: a full chunk's columns, end to end
        self.stride = int(grid.shape[-1]) * self.column_frames

    def _device(self) -> torch.device:
        first = next(iter(self.backbone.parameters()), None)
        return first.device if first is not None else torch.device("cpu")

    def _encode(self, chunks: Tensor) -> Tensor:
        """``(B, 1, *spatial)`` chunks → ``(B, g, D)`` columns, a bounded number per forward."""
        device = self._device()
        parts = [
            token_columns(self.backbone, part.to(device)) for part in chunks.split(ENCODE_BATCH)
        ]
        return torch.cat(parts).float().cpu()

    def _spectrogram_columns(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, F, T)`` → columns ``(n, K, D)`` and their first frames ``(K,)``."""
        columns = self._encode(segment_chunks(feats, self.frames))  # (n*c, g, D)
        out = rearrange(columns, "(n c) g d -> n (c g) d", n=feats.shape[0])
        return out, torch.arange(out.shape[1]) * self.column_frames

    def _waveform_columns(self, samples: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, N)`` → columns ``(n, K, D)`` and their first samples ``(K,)``: full chunks
        of ``frames`` samples every ``stride``, then the rest (see the module docstring)."""
        n, total = samples.shape
        full = max(0, -(-(total - self.frames) // self.stride))  # chunks ending before the end
        outs: list[Tensor] = []
        starts: list[Tensor] = []
        if full:
            chunks = samples.unfold(-1, self.frames, self.stride)[:, :full]  # (n, c, frames)
            columns = self._encode(rearrange(chunks, "n c l -> (n c) 1 l"))  # (n*c, g, D)
            outs.append(rearrange(columns, "(n c) g d -> n (c g) d", n=n))
            per_chunk = torch.arange(columns.shape[1]) * self.column_frames
            starts += [c * self.stride + per_chunk for c in range(full)]
        rest = samples[:, full * self.stride :]
        rest = nn.functional.pad(rest, (0, max(0, self.min_frames - rest.shape[-1])))
        columns = self._encode(rest[:, None])  # (n, g, D)
        outs.append(columns)
        starts.append(full * self.stride + torch.arange(columns.shape[1]) * self.column_frames)
        return torch.cat(outs, dim=1), torch.cat(starts)

    def columns(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, N)`` audio → token-column embeddings ``(n, K, D)`` and their centres in ms
        ``(K,)`` (relative to the audio's start)."""
        if audio.ndim != 2:
            raise ValueError(f"audio must be (n_sounds, n_samples), got {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise ValueError("audio contains NaN/Inf samples")
        with torch.no_grad():
            feats = self.frontend(audio.float().cpu())  # (n, F, T), or (n, N) samples
            if self.waveform:
                out, starts = self._waveform_columns(feats)
            else:
                out, starts = self._spectrogram_columns(feats)
        centres = (starts + self.span / 2.0) * self.hop_ms
        # centres within the audio (HEAR's validator refuses timestamps past its end)
        keep = centres <= 1000.0 * audio.shape[-1] / self.sample_rate
        keep[0] = True
        return out[:, keep], centres[keep].to(torch.float32)

    def window_seconds(self, window_s: float) -> tuple[float, float]:
        """``(window, hop)`` in seconds for streaming ``window_s``-second windows: whole
        chunk strides per hop, and windows longer by the overlap of consecutive chunks, so
        that the columns of consecutive windows continue one regular grid."""
        stride_s = self.stride * self.hop_ms / 1000.0
        hop_s = max(1, round(window_s / stride_s)) * stride_s
        overlap_s = (self.frames - self.stride) * self.hop_ms / 1000.0 if self.waveform else 0.0
        return hop_s + overlap_s, hop_s


def load_model(
    model_file_path: str = "", device: str | None = None, *, released: str | None = None
) -> HEARModel:
    """HEAR ``load_model``: a domainfm export folder / ``config.json`` or ``.ckpt``, or a
    released audio weights file → :class:`HEARModel` in eval mode (weights loaded strictly),
    with the front end and segment length of the recorded (or the release's) input contract.

    Args:
        model_file_path: the export, checkpoint or released file.
        device: where the model runs (default CPU).
        released: the registered release a released file is, when its layout alone cannot
            tell (see :func:`~domainfm.pretrained.load.load_backbone`).

    Raises:
        ValueError: naming the file when it records no audio front end (not an audio
            model), its weights do not match, or no registered release fits it.
    """

    if not model_file_path:
        raise ValueError(
            "load_model needs model_file_path: a domainfm export folder, .ckpt or released "
            "audio weights file"
        )
    path = Path(model_file_path)
    backbone, report = load_backbone(path, released=released)
    contract = audio_contract(report.input, source=str(path))
    model = HEARModel(backbone, contract.frontend_module, contract.frames)
    return model.to(device or "cpu").eval()


def get_timestamp_embeddings(audio: Tensor, model: HEARModel) -> tuple[Tensor, Tensor]:
    """HEAR ``get_timestamp_embeddings``: ``(n_sounds, n_samples)`` →
    ``((n_sounds, n_timestamps, D), (n_sounds, n_timestamps))`` (timestamps in ms)."""
    embeddings, centres = model.columns(audio)
    return embeddings, centres[None].expand(audio.shape[0], -1).clone()


def get_scene_embeddings(audio: Tensor, model: HEARModel) -> Tensor:
    """HEAR ``get_scene_embeddings``: ``(n_sounds, n_samples)`` → ``(n_sounds, D)``: the mean
    of the timestamp embeddings."""
    embeddings, _ = model.columns(audio)
    return embeddings.mean(dim=1)


def embed_file(
    path: str | Path, model: HEARModel, *, window_s: float = 30.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Timestamp embeddings of a file of any length, streamed window by window.

    Args:
        path: the audio file (any rate: each window is resampled to ``model.sample_rate``).
        model: from :func:`load_model`.
        window_s: seconds read at a time (rounded to whole model segments).

    Returns:
        ``(embeddings (K, D), timestamps_ms (K,), scene (D,))``.

    Raises:
        ValueError: naming the file, for undecodable or NaN audio.
    """

    length_s, hop_s = model.window_seconds(window_s)  # whole segments per window
    parts, stamps = [], []
    for start, window in iter_audio_windows(
        path,
        window_s=length_s,
        hop_s=hop_s,
        sample_rate=model.sample_rate,
        mono=True,
        pad_last=False,
    ):
        embeddings, centres = model.columns(window)  # (1, K, D), (K,)
        parts.append(embeddings[0])
        stamps.append(centres + 1000.0 * start)
    embeddings = torch.cat(parts)
    return embeddings, torch.cat(stamps), embeddings.mean(dim=0)
