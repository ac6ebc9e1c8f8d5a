"""wav2vec 2.0 / HuBERT waveform encoders, built by torchaudio's model builder.

wav2vec 2.0 (Baevski et al. 2020, arXiv:2006.11477) and HuBERT (Hsu et al. 2021,
arXiv:2106.07447) share one encoder: a 7-layer convolutional feature extractor over the raw
waveform (receptive field 400 samples, hop 320: one frame per 20 ms at 16 kHz), a linear
feature projection, a grouped convolutional positional embedding (weight-normalized) and a
Transformer. :class:`Wav2Vec2Encoder` builds it with ``torchaudio.models.wav2vec2_model`` (the
builder behind ``wav2vec2_base``/``hubert_base``), without the ASR head, and keeps
torchaudio's module names, so a torchaudio state dict (``feature_extractor.*``,
``encoder.*``) is its state dict. Nothing is re-implemented.

Backbone protocol, as far as it applies to a waveform encoder:

* input ``(B, 1, N)`` mono samples (``in_chans`` 1, ``spatial_dims`` 1, axis ``"t"``);
* ``token_grid((N,))``: ``T = 1 + (N - 400) // 320`` frames for the base layout (computed
  from the conv layers), ``patch_size`` = the hop (320); the grid's ``input_shape``
  (``T * 320``) is not ``N``: frames overlap, so no patchify/unpatchify of the input;
* ``forward_tokens(x)`` → ``(B, T, D)``, no prefix tokens: exactly torchaudio's
  ``Wav2Vec2Model(x[:, 0])[0]``;
* ``keep_idx`` (MAE-style token dropping) is refused: the positional embedding is a
  convolution over all frames, so a subset of frames is another input, not a masked one;
* ``forward_intermediates`` → ``(B, D, T)`` after the chosen Transformer layers
  (torchaudio's ``extract_features``);
* ``forward(x)`` → ``(B, D)``: mean over frames.

Shapes::

    x                        (B, 1, N)
    forward_tokens(x)        (B, T, D), TokenGrid(shape=(T,), patch_size=(320,))
    forward_intermediates    list of (B, D, T)
    forward(x)               (B, D)

Example::

    >>> enc = Wav2Vec2Encoder(**WAV2VEC2_BASE_CONFIG)
    >>> enc(torch.zeros(2, 1, 16000)).shape
    torch.Size([2, 768])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from torch import Tensor

from domainfm.core.backbone import BACKBONES
from domainfm.core.block_selection import select_blocks
from domainfm.core.grid import TokenGrid
from domainfm.core.token_encoder import TokenEncoder

BASE_CONV_LAYERS: list[tuple[int, int, int]] = (
    [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2
)
"""``(channels, kernel, stride)`` of the feature extractor of every wav2vec 2.0 / HuBERT model."""


class Wav2Vec2Config(TypedDict, total=False):
    """The keyword arguments of ``torchaudio.models.wav2vec2_model`` that a
    :class:`Wav2Vec2Encoder` takes (all but ``aux_num_out``: no ASR head)."""

    extractor_mode: str
    extractor_conv_layer_config: Sequence[Sequence[int]]
    extractor_conv_bias: bool
    encoder_embed_dim: int
    encoder_projection_dropout: float
    encoder_pos_conv_kernel: int
    encoder_pos_conv_groups: int
    encoder_num_layers: int
    encoder_num_heads: int
    encoder_attention_dropout: float
    encoder_ff_interm_features: int
    encoder_ff_interm_dropout: float
    encoder_dropout: float
    encoder_layer_norm_first: bool
    encoder_layer_drop: float


WAV2VEC2_BASE_CONFIG: dict[str, Any] = {
    "extractor_mode": "group_norm",
    "extractor_conv_layer_config": [list(layer) for layer in BASE_CONV_LAYERS],
    "extractor_conv_bias": False,
    "encoder_embed_dim": 768,
    "encoder_projection_dropout": 0.1,
    "encoder_pos_conv_kernel": 128,
    "encoder_pos_conv_groups": 16,
    "encoder_num_layers": 12,
    "encoder_num_heads": 12,
    "encoder_attention_dropout": 0.1,
    "encoder_ff_interm_features": 3072,
    "encoder_ff_interm_dropout": 0.0,
    "encoder_dropout": 0.1,
    "encoder_layer_norm_first": False,
    "encoder_layer_drop": 0.05,
}
"""``wav2vec2_model`` arguments of torchaudio's ``WAV2VEC2_BASE`` and ``HUBERT_BASE``
pipelines (identical; ``aux_num_out`` None)."""


@BACKBONES.register("wav2vec2")
class Wav2Vec2Encoder(TokenEncoder):
    """torchaudio's wav2vec 2.0 / HuBERT encoder as a domainfm backbone (see the module
    docstring).

    Args:
        config: the arguments of ``torchaudio.models.wav2vec2_model`` except ``aux_num_out``
            (:class:`Wav2Vec2Config`; defaults: the base architecture,
            :data:`WAV2VEC2_BASE_CONFIG`).
    """

    spatial_dims = 1
    axes = ("t",)
    in_chans = 1
    num_prefix_tokens = 0

    def __init__(self, **config: Unpack[Wav2Vec2Config]) -> None:
        super().__init__()
        from torchaudio.models import wav2vec2_model  # optional heavy import, as frontends

        unknown = sorted(set(config) - set(WAV2VEC2_BASE_CONFIG))
        if unknown:
            raise TypeError(f"Wav2Vec2Encoder() got unexpected keyword arguments {unknown}")
        arguments: dict[str, Any] = {**WAV2VEC2_BASE_CONFIG, **config}
        layers = [(int(c), int(k), int(s)) for c, k, s in arguments["extractor_conv_layer_config"]]
        arguments["extractor_conv_layer_config"] = layers
        model = wav2vec2_model(**arguments, aux_num_out=None)
        self.feature_extractor = model.feature_extractor
        self.encoder = model.encoder
        self.embed_dim = int(arguments["encoder_embed_dim"])
        self.conv_layers = layers
        self.hop = math.prod(s for _, _, s in layers)
        self.patch_size = (self.hop,)
        receptive = 1
        for _, kernel, stride in reversed(layers):
            receptive = (receptive - 1) * stride + kernel
        self.receptive_field = receptive  # 400 samples for the base layout

    def num_frames(self, num_samples: int) -> int:
        """Frames of ``num_samples`` samples (0 when shorter than one receptive field)."""
        n = int(num_samples)
        for _, kernel, stride in self.conv_layers:
            n = (n - kernel) // stride + 1 if n >= kernel else 0
        return n

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """The frame grid of ``(N,)`` samples.

        Raises:
            ValueError: not one axis, or fewer samples than one receptive field.
        """
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 1:
            raise ValueError(f"Wav2Vec2Encoder takes (B, 1, N) waveforms, got spatial {shape}")
        frames = self.num_frames(shape[0])
        if frames < 1:
            raise ValueError(
                f"a waveform of {shape[0]} samples is shorter than one frame "
                f"({self.receptive_field} samples); pad it"
            )
        return TokenGrid(shape=(frames,), patch_size=self.patch_size, axes=self.axes)

    def _check(self, x: Tensor) -> TokenGrid:
        if x.ndim != 3 or x.shape[1] != 1:
            raise ValueError(f"x must be (B, 1, N) mono waveforms, got shape {tuple(x.shape)}")
        return self.token_grid(x.shape[2:])

    def _features(self, x: Tensor) -> Tensor:
        features, _ = self.feature_extractor(x[:, 0], None)  # (B, T, C)
        return features

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """``(B, 1, N)`` → ``(B, T, D)`` (torchaudio's ``Wav2Vec2Model`` output) and the grid.

        Raises:
            ValueError: ``keep_idx`` given (see the module docstring).
        """
        if keep_idx is not None:
            raise ValueError(
                "Wav2Vec2Encoder cannot drop tokens (keep_idx): its convolutional positional "
                "embedding sees every frame; mask in feature space instead"
            )
        grid = self._check(x)
        tokens: Tensor = self.encoder(self._features(x))
        return tokens, grid

    def forward_intermediates(
        self, x: Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[Tensor]:
        """Outputs ``(B, D, T)`` of the selected Transformer layers (last ``n`` if int).

        ``norm`` applies the Transformer's final LayerNorm, which only pre-LN models
        (``encoder_layer_norm_first``) have after their last layer; post-LN layers (base)
        end in their own LayerNorm, and ``norm`` leaves them unchanged.
        """
        self._check(x)
        wanted = select_blocks(indices, len(self.encoder.transformer.layers))
        outs = self.encoder.extract_features(self._features(x), None, wanted[-1] + 1)
        layer_norm_first = bool(self.encoder.transformer.layer_norm_first)
        maps = []
        for i in wanted:
            out = outs[i]
            if norm and layer_norm_first:
                out = self.encoder.transformer.layer_norm(out)
            maps.append(out.transpose(1, 2))
        return maps
