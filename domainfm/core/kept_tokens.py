"""The kept tokens of a masked input: checking and applying ``forward_tokens``' ``keep_idx``.

Masked objectives pass ``keep_idx`` ``(B, K)``, indices into the flattened token grid of the
tokens to encode (:func:`~domainfm.core.masking.keep_indices`). Encoders that embed every
token first (a generated patch kernel, a position code per band group, timm's embedding)
select the kept ones with :func:`gather_kept`; the ones that embed only the kept patches check
the indices with :func:`check_keep_idx`.

Example::

    >>> tokens = torch.arange(12.0).view(1, 4, 3)                # (B, N, D)
    >>> gather_kept(tokens, torch.tensor([[2, 0]]))[0, :, 0]
    tensor([6., 0.])
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_keep_idx(keep_idx: Tensor, batch: int) -> None:
    """Refuse ``keep_idx`` that is not ``(B, K)`` for a batch of ``batch``.

    Raises:
        ValueError: ``keep_idx must be (B=batch, K), got shape ...``.
    """
    if keep_idx.ndim != 2 or keep_idx.shape[0] != batch:
        raise ValueError(f"keep_idx must be (B={batch}, K), got shape {tuple(keep_idx.shape)}")


def gather_kept(tokens: Tensor, keep_idx: Tensor) -> Tensor:
    """``tokens`` ``(B, N, D)`` at ``keep_idx`` ``(B, K)`` (checked, moved to the tokens'
    device) → ``(B, K, D)``."""
    check_keep_idx(keep_idx, tokens.shape[0])
    index = keep_idx.to(tokens.device)[..., None].expand(-1, -1, tokens.shape[-1])
    return torch.gather(tokens, 1, index)
