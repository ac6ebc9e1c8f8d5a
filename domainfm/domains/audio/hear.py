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

``model_file_path`` is a ``domainfm export`` folder (or its ``config.json``) or a domainfm
``.ckpt``: the backbone is rebuilt strictly, and the front end (with its normalization
statistics) and segment length are those recorded in the checkpoint's input contract.

How embeddings are made: the front end turns the audio into ``(F, T)`` frames (10 ms
apart); ``T`` is cut into consecutive chunks of the model's segment length (the last one
zero-padded in the normalized domain), each chunk is encoded, and its tokens are averaged
over the frequency axis of the token grid, leaving one embedding per time column of tokens
(every ``patch_t`` frames: 160 ms for 16-frame patches, 80 ms for AudioNTT2020). Each is
stamped at the centre of its frames; columns starting at or past the audio's last sample
are dropped. The scene embedding is the mean of the timestamp embeddings.

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

from domainfm.core.backbone import build_backbone
from domainfm.domains.audio.contract import audio_contract
from domainfm.domains.audio.frontends import Frontend
from domainfm.domains.audio.io import iter_audio_windows
from domainfm.pretrained.load import read_backbone_source
from domainfm.pretrained.report import load_state_dict_with_report


def segment_chunks(feats: Tensor, frames: int) -> Tensor:
    """``(n, F, T)`` features → ``(n * c, 1, F, frames)`` consecutive chunks, the last one
    zero-padded (the normalized mean), ``c = ceil(T / frames)``."""
    total = feats.shape[-1]
    chunks = max(1, -(-total // frames))
    feats = nn.functional.pad(feats, (0, chunks * frames - total))
    return rearrange(feats, "n f (c t) -> (n c) 1 f t", t=frames)


def token_columns(backbone: nn.Module, x: Tensor) -> Tensor:
    """``(B, 1, F, T)`` → ``(B, g_t, D)``: the backbone's patch tokens averaged over the
    frequency axis of the token grid (one embedding per time column of tokens)."""
    encode = backbone.forward_tokens  # (B, P + N, D), grid
    tokens, grid = encode(x)  # type: ignore[operator]
    prefix = int(getattr(backbone, "num_prefix_tokens", 0))
    tokens = tokens[:, prefix:].reshape(tokens.shape[0], *grid.shape, -1)  # (B, g_f, g_t, D)
    return tokens.mean(dim=1)


class HEARModel(nn.Module):
    """A backbone with its front end, as HEAR expects (see the module docstring).

    Args:
        backbone: a domainfm backbone taking ``(B, 1, F, frames)``.
        frontend: the checkpoint's front end (normalizing).
        frames: the segment length the backbone was trained on.
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
        grid = backbone.token_grid((frontend.n_bins, self.frames))  # type: ignore[operator]
        self.column_frames = self.frames // grid.shape[-1]  # frames per token column

    def _device(self) -> torch.device:
        first = next(iter(self.backbone.parameters()), None)
        return first.device if first is not None else torch.device("cpu")

    def columns(self, audio: Tensor) -> tuple[Tensor, Tensor]:
        """``(n, N)`` audio → token-column embeddings ``(n, K, D)`` and their centres in ms
        ``(K,)`` (relative to the audio's start)."""
        if audio.ndim != 2:
            raise ValueError(f"audio must be (n_sounds, n_samples), got {tuple(audio.shape)}")
        if not torch.isfinite(audio).all():
            raise ValueError("audio contains NaN/Inf samples")
        with torch.no_grad():
            feats = self.frontend(audio.float().cpu())  # (n, F, T)
            chunks = segment_chunks(feats, self.frames)  # (n*c, 1, F, frames)
            device = self._device()
            columns = torch.cat(  # (n*c, g, D), a bounded number of segments per forward
                [token_columns(self.backbone, part.to(device)) for part in chunks.split(64)]
            )
            out = rearrange(columns, "(n c) g d -> n (c g) d", n=audio.shape[0]).float().cpu()
        starts = torch.arange(out.shape[1]) * self.column_frames
        # columns starting inside the audio (frame k starts at sample k * hop)
        keep = starts * self.frontend.hop_length < max(1, audio.shape[-1])
        centres = (starts[keep] + self.column_frames / 2.0) * self.hop_ms
        return out[:, keep], centres.to(torch.float32)


def load_model(model_file_path: str = "", device: str | None = None) -> HEARModel:
    """HEAR ``load_model``: a domainfm export folder / ``config.json`` or ``.ckpt`` →
    :class:`HEARModel` in eval mode (weights loaded strictly).

    Raises:
        ValueError: naming the file when it records no audio front end (not an audio
            model) or its weights do not match.
    """

    if not model_file_path:
        raise ValueError("load_model needs model_file_path: a domainfm export folder or .ckpt")
    path = Path(model_file_path)
    config, state, source = read_backbone_source(path)
    contract = audio_contract(config.get("input"), source=str(path))
    backbone = build_backbone(config["architecture"], config["kwargs"], source=source)
    load_state_dict_with_report(backbone, state, source=source).check()
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

    segment_s = model.frames * model.hop_ms / 1000.0
    window_s = max(1, round(window_s / segment_s)) * segment_s  # whole segments per window
    parts, stamps = [], []
    for start, window in iter_audio_windows(
        path, window_s=window_s, sample_rate=model.sample_rate, mono=True, pad_last=False
    ):
        embeddings, centres = model.columns(window)  # (1, K, D), (K,)
        parts.append(embeddings[0])
        stamps.append(centres + 1000.0 * start)
    embeddings = torch.cat(parts)
    return embeddings, torch.cat(stamps), embeddings.mean(dim=0)
