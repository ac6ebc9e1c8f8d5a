"""The pooled forward pass that every token backbone shares.

A backbone (:class:`~domainfm.core.backbone.Backbone`) encodes with ``forward_tokens`` and
pools with ``pool_tokens``; ``forward`` is the one composed of the two. :class:`TokenEncoder`
writes that composition once, with the mean over all tokens as the default pooling (encoders
without prefix tokens: BEATs, wav2vec 2.0, CROMA); encoders with a class token override
``pool_tokens``.

Shapes::

    forward_tokens(x)     (B, N, D), grid
    pool_tokens(tokens)   (B, D)
    forward(x)            (B, D) = pool_tokens(forward_tokens(x)[0])
"""

from __future__ import annotations

from torch import Tensor, nn

from domainfm.core.grid import TokenGrid


class TokenEncoder(nn.Module):
    """Base of the token backbones: ``forward`` pools the tokens of ``forward_tokens``."""

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        """Encode ``x`` → tokens ``(B, N, D)`` and their grid (defined by each backbone)."""
        raise NotImplementedError

    def pool_tokens(self, tokens: Tensor) -> Tensor:
        """``forward_tokens`` output ``(B, N, D)`` → the mean over tokens ``(B, D)``."""
        return tokens.mean(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Pooled embedding ``(B, D)``: :meth:`pool_tokens` of :meth:`forward_tokens`."""
        tokens, _ = self.forward_tokens(x)
        return self.pool_tokens(tokens)
