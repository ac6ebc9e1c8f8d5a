"""Memoized backbone outputs of a batch, for objectives that read several of its tensors.

Objectives such as VoCo's position contrast or the Swin UNETR self-supervised heads need the
backbone's output for several tensors of one batch (base crops, random crops, rotated
views…), and several objectives often read the same tensor. :class:`BatchFeatures` runs the
backbone once per batch key and per output kind, so a weighted set of objectives over the
same views costs one encoder pass per view.

A tensor ``batch[key]`` may carry extra leading axes before ``(C, *spatial)`` — e.g.
``(B, K, C, D, H, W)`` for ``K`` crops per sample; they are flattened for the backbone and
restored on the outputs. The number of spatial axes is ``len(backbone.patch_size)``.

Shapes::

    batch[key]          (*lead, C, *spatial)
    pooled(key)         (*lead, D)
    tokens(key)         (*lead, N, D) patch tokens (prefix tokens removed), TokenGrid

Example::

    >>> features = BatchFeatures(backbone, {"view1": x1, "crops": crops})  # crops (B, 4, C, ...)
    >>> features.pooled("crops").shape
    torch.Size([B, 4, D])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from domainfm.core.grid import TokenGrid


class BatchFeatures:
    """Backbone outputs of ``batch`` tensors, computed on first use and reused.

    Args:
        backbone: a :class:`~domainfm.core.backbone.Backbone`.
        batch: the batch dict.
    """

    def __init__(self, backbone: nn.Module, batch: Mapping[str, Any]) -> None:
        self.backbone = backbone
        self.batch = batch
        self.spatial_dims = len(tuple(getattr(backbone, "patch_size")))  # noqa: B009
        self._tokens: dict[str, tuple[Tensor, TokenGrid]] = {}
        self._pooled: dict[str, Tensor] = {}

    def _flat(self, key: str) -> tuple[Tensor, tuple[int, ...]]:
        if key not in self.batch:
            raise KeyError(
                f"the batch has no {key!r} (keys: {sorted(self.batch)}); the data module must "
                "produce the views this objective reads"
            )
        x: Tensor = self.batch[key]
        split = x.ndim - self.spatial_dims - 1
        if split < 1:
            raise ValueError(
                f"batch[{key!r}] has shape {tuple(x.shape)}; expected (*lead, C, *spatial) with "
                f"{self.spatial_dims} spatial axes and at least one leading axis"
            )
        lead = tuple(x.shape[:split])
        return x.reshape(-1, *x.shape[split:]), lead  # (prod(lead), C, *spatial)

    def tokens(self, key: str) -> tuple[Tensor, TokenGrid]:
        """Patch tokens ``(*lead, N, D)`` of ``batch[key]`` and their grid."""
        if key not in self._tokens:
            x, lead = self._flat(key)
            out, grid = self.backbone.forward_tokens(x)  # type: ignore[operator]
            prefix = int(getattr(self.backbone, "num_prefix_tokens", 0))
            patch = out[:, prefix:]
            self._tokens[key] = (patch.reshape(*lead, *patch.shape[1:]), grid)
            pool = getattr(self.backbone, "pool_tokens", None)
            if callable(pool) and key not in self._pooled:  # reuse this pass for pooling
                pooled: Tensor = pool(out)  # (prod(lead), D)
                self._pooled[key] = pooled.reshape(*lead, pooled.shape[-1])
        return self._tokens[key]

    def pooled(self, key: str) -> Tensor:
        """Pooled embeddings ``(*lead, D)`` of ``batch[key]`` (the backbone's ``forward``)."""
        if key not in self._pooled:
            if callable(getattr(self.backbone, "pool_tokens", None)):
                self.tokens(key)  # one pass gives both tokens and the pooled embedding
                return self._pooled[key]
            x, lead = self._flat(key)
            out: Tensor = self.backbone(x)  # (prod(lead), D)
            self._pooled[key] = out.reshape(*lead, out.shape[-1])
        return self._pooled[key]
