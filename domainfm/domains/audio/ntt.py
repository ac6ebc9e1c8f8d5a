"""BYOL-A's AudioNTT2020 encoder as a domainfm backbone.

The encoder of BYOL for Audio (Niizumi et al. 2021, arXiv:2103.06695), an extension of the
NTT DCASE2020 Task 6 audio embedding network (Koizumi et al. 2020, arXiv:2007.00225):

* ``features``: three blocks of 3×3 conv (64 channels, padding 1) → BatchNorm → ReLU →
  2×2 max-pool, on a ``(B, 1, F, T)`` log-mel (F = 64);
* per time step, the ``64 × F/8`` values are flattened (mel-major, channel-minor: the
  map is permuted to ``(B, T/8, F/8, 64)``) and go through ``fc``: Linear → ReLU →
  Dropout(0.3) → Linear → ReLU to ``d`` (512, 1024 or 2048);
* the clip embedding is ``max_t + mean_t`` of those frame embeddings.

Module names (``features.0/1/4/5/8/9``, ``fc.0/3``) are those of the released weights, so
``AudioNTT2020-BYOLA-64x96d{512,1024,2048}.pth`` load key for key.

Backbone contract: one token per 8 frames (80 ms at a 10 ms hop), each covering every mel
bin: ``patch_size = (n_mels, 8)``, grid ``(1, T // 8)``; ``forward_tokens`` gives the frame
embeddings ``(B, T // 8, d)`` (for frame-level heads and HEAR timestamps), ``forward`` the
pooled ``(B, d)``. A CNN has no token dropping: ``keep_idx`` gathers after encoding.

Example::

    >>> net = AudioNTT2020(n_mels=64, d=512)
    >>> net(torch.randn(2, 1, 64, 96)).shape
    torch.Size([2, 512])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import TokenGrid


@BACKBONES.register("audio_ntt2020")
class AudioNTT2020(nn.Module):
    """BYOL-A's AudioNTT2020 (see the module docstring).

    Args:
        n_mels: mel bins ``F`` of the input (a multiple of 8).
        d: embedding width.
        in_chans: input channels (1: a mono log-mel).
        dropout: dropout inside ``fc``.
    """

    def __init__(self, *, n_mels: int = 64, d: int = 512, in_chans: int = 1, dropout: float = 0.3):
        super().__init__()
        if n_mels < 8 or n_mels % 8:
            raise ValueError(f"n_mels={n_mels}: must be a positive multiple of 8")
        layers: list[nn.Module] = []
        cin = in_chans
        for _ in range(3):
            layers += [
                nn.Conv2d(cin, 64, 3, stride=1, padding=1),
                nn.BatchNorm2d(64),
                nn.ReLU(),
                nn.MaxPool2d(2, stride=2),
            ]
            cin = 64
        self.features = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(64 * (n_mels // 8), d),
            nn.ReLU(),
            nn.Dropout(p=dropout),
            nn.Linear(d, d),
            nn.ReLU(),
        )
        self.n_mels = n_mels
        self.in_chans = in_chans
        self.embed_dim = d
        self.patch_size = (n_mels, 8)
        self.num_prefix_tokens = 0

    def token_grid(self, input_shape: Sequence[int]) -> TokenGrid:
        """``(F, T)`` → grid ``(1, T // 8)``; ``F`` must be ``n_mels`` and ``T >= 8``."""
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 2 or shape[0] != self.n_mels or shape[1] < 8:
            raise ValueError(
                f"AudioNTT2020 takes (F={self.n_mels}, T>=8) log-mels, got spatial shape {shape}"
            )
        return TokenGrid(shape=(1, shape[1] // 8), patch_size=self.patch_size, axes=("f", "t"))

    def frame_embeddings(self, x: Tensor) -> Tensor:
        """``(B, C, F, T)`` → ``(B, T // 8, d)``."""
        self.token_grid(x.shape[2:])
        maps = self.features(x)  # (B, 64, F/8, T/8)
        # BYOL-A flattens (mel, channel) per time step, channel fastest
        frames = rearrange(maps, "b c f t -> b t (f c)")
        out: Tensor = self.fc(frames)
        return out

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        grid = self.token_grid(x.shape[2:])
        tokens = self.frame_embeddings(x)  # (B, T', d)
        if keep_idx is not None:
            index = keep_idx[..., None].expand(-1, -1, tokens.shape[-1])
            tokens = torch.gather(tokens, 1, index)
        return tokens, grid

    def forward_intermediates(
        self, x: Tensor, indices: int | Sequence[int] = 1, norm: bool = False
    ) -> list[Tensor]:
        """The frame embeddings as one map ``(B, d, 1, T // 8)`` (a single level)."""
        if not (indices == 1 or (not isinstance(indices, int) and list(indices) in ([0], [-1]))):
            raise ValueError(f"AudioNTT2020 has one map; got indices={indices!r}")
        frames = self.frame_embeddings(x)
        return [rearrange(frames, "b t d -> b d 1 t")]

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """BYOL-A pooling: max over time + mean over time, ``(B, T', d)`` → ``(B, d)``."""
        return tokens.max(dim=1).values + tokens.mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, F, T)`` → ``(B, d)``."""
        return self.pool_tokens(self.frame_embeddings(x))
