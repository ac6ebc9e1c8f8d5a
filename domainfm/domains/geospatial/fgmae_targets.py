"""FG-MAE targets for multispectral imagery: normalized-difference indices and HOG together.

FG-MAE (Wang et al. 2023, "Feature Guided Masked Autoencoder for Self-supervised Learning in
Remote Sensing", arXiv:2310.18653) replaces MAE's pixel target with image features that
carry the physics of the bands: for multispectral input, **HOG** (texture, edges; see
:class:`~domainfm.core.objectives.hog_target.HOGTarget`) and **normalized-difference
indices** (spectral ratios such as NDVI); for SAR, HOG only.

* :class:`NormalizedDifferenceTarget`: per pixel of each patch, for band pairs ``(a, b)``:
  ``(a - b) / (a + b + eps)`` — NDVI ``(B08, B04)``, NDWI ``(B03, B08)``, NDBI
  ``(B11, B08)`` by default. Indices are ratios of **physical** values, but the pipeline
  feeds the model standardized bands ``(x - mean) / std``; the target takes the same
  ``mean``/``std`` (e.g. from ``RasterPretrainDataModule``'s band statistics) and undoes
  the standardization first, so an index is never computed on standardized numbers. Values
  are clamped to ``[-1, 1]``. In a YAML config, give the data module's ``files`` and
  ``stats_cache`` instead (``stats_files``/``stats_cache``): the statistics are then
  :func:`~domainfm.domains.geospatial.stats.compute_band_stats` of the same files with the
  same settings — the data module's own — read from the cache at the first call.
* :class:`FeatureTargets`: several targets concatenated per token, each part scaled so that
  it contributes its ``weight`` to the mean squared error regardless of its width: with
  ``D = Σ d_i`` dims, part ``i`` is multiplied by ``sqrt(w_i · D / d_i)`` (weights
  normalized to sum 1), so ``MSE = Σ_i w_i · MSE_i``.

Shapes::

    x       (B, C, H, W)   standardized bands, in ``band_names`` order
    target  (B, N, n_pairs · p²)                       NormalizedDifferenceTarget
            (B, N, Σ d_i)                              FeatureTargets

Example::

    >>> ndi = NormalizedDifferenceTarget(band_names=SENTINEL2_L1C_BANDS, mean=stats.mean,
    ...                                  std=stats.std)
    >>> target = FeatureTargets(targets=[HOGTarget(cell_size=8), ndi], weights=[1.0, 1.0])
    >>> mae = MAE(embed_dim=96, in_chans=13, patch_size=(8, 8), target=target)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from domainfm.core.grid import TokenGrid
from domainfm.core.objectives.mae_targets import MAETarget
from domainfm.core.patching import patchify
from domainfm.data.data_root import expand_files
from domainfm.domains.geospatial.stats import compute_band_stats

DEFAULT_INDICES: tuple[tuple[str, str], ...] = (("B08", "B04"), ("B03", "B08"), ("B11", "B08"))
"""NDVI, NDWI (McFeeters) and NDBI on Sentinel-2 band names."""


class NormalizedDifferenceTarget(MAETarget):
    """Per-pixel normalized-difference indices of each patch (see the module docstring).

    Args:
        band_names: names of the input's bands, in order.
        mean, std: the standardization the input went through, one value per band.
        pairs: ``(a, b)`` band-name pairs; index ``(a - b) / (a + b + eps)``.
        eps: added to the denominator.
        stats_files: instead of ``mean``/``std``: the rasters (paths or globs, as the data
            module's ``files``) whose band statistics standardized the input.
        stats_cache: the data module's statistics cache (JSON) for ``stats_files``.
    """

    def __init__(
        self,
        *,
        band_names: Sequence[str],
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pairs: Sequence[Sequence[str]] = DEFAULT_INDICES,
        eps: float = 1e-6,
        stats_files: Sequence[str] | None = None,
        stats_cache: str | None = None,
    ) -> None:
        names = list(band_names)
        if (mean is None or std is None) and stats_files is None:
            raise ValueError("give mean= and std= (one per band), or stats_files=")
        if (
            mean is not None
            and std is not None
            and (len(mean) != len(names) or len(std) != len(names))
        ):
            raise ValueError(
                f"mean ({len(mean)}) and std ({len(std)}) need one value per band of {names}"
            )
        missing = sorted({b for pair in pairs for b in pair} - set(names))
        if missing or any(len(p) != 2 for p in pairs) or not pairs:
            raise ValueError(
                f"pairs={[list(p) for p in pairs]} must be (a, b) band names of {names}; "
                f"unknown: {missing}"
            )
        self.band_names = names
        self.pairs = [(str(a), str(b)) for a, b in pairs]
        self.index = torch.tensor([[names.index(a), names.index(b)] for a, b in self.pairs])
        self.mean = torch.tensor([float(m) for m in mean]) if mean is not None else None
        self.std = torch.tensor([float(s) for s in std]) if std is not None else None
        self.stats_files = list(stats_files) if stats_files is not None else None
        self.stats_cache = stats_cache
        self.eps = eps

    def _moments(self) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.std is None:
            assert self.stats_files is not None
            stats = compute_band_stats(
                expand_files(self.stats_files),
                cache=self.stats_cache,
                band_names=self.band_names,
            )
            if list(stats.band_names) != self.band_names:
                raise ValueError(
                    f"the statistics cover {list(stats.band_names)}, not {self.band_names}"
                )
            mean, std = stats.contract().moments()  # std floored
            self.mean, self.std = torch.from_numpy(mean), torch.from_numpy(std)
        return self.mean, self.std

    def out_dim(self, in_chans: int, patch_size: Sequence[int]) -> int:
        if in_chans != len(self.band_names):
            raise ValueError(
                f"the target is built for {len(self.band_names)} bands, the MAE for {in_chans}"
            )
        return len(self.pairs) * math.prod(patch_size)

    def indices(self, x: Tensor) -> Tensor:
        """Standardized ``(B, C, *spatial)`` → indices ``(B, n_pairs, *spatial)``."""
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean, std = self._moments()
        raw = x * std.to(x).view(shape) + mean.to(x).view(shape)  # physical values
        a = raw[:, self.index[:, 0]]
        b = raw[:, self.index[:, 1]]
        return ((a - b) / (a + b + self.eps)).clamp(-1.0, 1.0)

    def __call__(self, x: Tensor, grid: TokenGrid) -> Tensor:
        return patchify(self.indices(x.float()), grid)  # (B, N, p² · n_pairs)


class FeatureTargets(MAETarget):
    """Several targets concatenated per token, weighted (see the module docstring).

    Args:
        targets: the targets (e.g. ``HOGTarget`` and ``NormalizedDifferenceTarget``).
        weights: relative weight of each in the loss (default equal).
    """

    def __init__(
        self, *, targets: Sequence[MAETarget], weights: Sequence[float] | None = None
    ) -> None:
        if not targets:
            raise ValueError("targets is empty")
        w = [1.0] * len(targets) if weights is None else [float(v) for v in weights]
        if len(w) != len(targets) or any(v <= 0 for v in w):
            raise ValueError(f"weights={weights!r}: one positive weight per target")
        self.targets = list(targets)
        self.weights = [v / sum(w) for v in w]

    def _dims(self, in_chans: int, patch_size: Sequence[int]) -> list[int]:
        return [t.out_dim(in_chans, patch_size) for t in self.targets]

    def out_dim(self, in_chans: int, patch_size: Sequence[int]) -> int:
        return sum(self._dims(in_chans, patch_size))

    def __call__(self, x: Tensor, grid: TokenGrid) -> Tensor:
        dims = self._dims(x.shape[1], grid.patch_size)
        total = sum(dims)
        parts = [
            t(x, grid) * math.sqrt(w * total / d)
            for t, w, d in zip(self.targets, self.weights, dims, strict=True)
        ]
        return torch.cat(parts, dim=-1)  # (B, N, Σ d_i)
