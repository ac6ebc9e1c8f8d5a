"""Projection / prediction MLP heads for joint-embedding objectives.

The SimCLR/BYOL head (Chen et al. 2020, arXiv:2002.05709; Grill et al. 2020,
arXiv:2006.07733): ``Linear → BatchNorm1d → ReLU → Linear``, ``(B, in_dim) → (B, out_dim)``.
Under DDP, set the Trainer's ``sync_batchnorm=True`` so the BatchNorm uses the global batch.

Example::

    >>> ProjectionHead(in_dim=64, hidden_dim=128, out_dim=32)(torch.randn(4, 64)).shape
    torch.Size([4, 32])
"""

from __future__ import annotations

from torch import Tensor, nn


class ProjectionHead(nn.Module):
    """Two-layer MLP with BatchNorm and ReLU.

    Args:
        in_dim: input width.
        hidden_dim: hidden width.
        out_dim: output width.
    """

    def __init__(self, *, in_dim: int, hidden_dim: int = 2048, out_dim: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out
