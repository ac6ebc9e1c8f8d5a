"""Geo-cluster pseudo-labels: which region of the archive a sample comes from.

Geography-aware self-supervised learning (Ayush et al. 2021, arXiv:2011.09980) adds a pretext
task to temporal contrast: cluster the images' locations with k-means into ``K`` regions
and classify each image's region from its embedding. :func:`geo_cluster_labels` clusters
places (lon/lat footprint centres, as unit vectors on the sphere so that clusters do not
break at the antimeridian) with seeded k-means++ and Lloyd iterations; every file gets its
place's cluster id. :class:`~domainfm.domains.geospatial.windows.RasterWindowDataset` with
``geo_clusters=K`` adds it to each sample as ``"geo_label"``; the classification objective is
the core's linear classifier on pooled embeddings,
:class:`~domainfm.core.objectives.rotation.RotationPrediction` with ``views: [input]``,
``labels: [geo_label]``, ``num_classes: K``.

Example::

    >>> index = SpatioTemporalIndex(files)
    >>> labels = geo_cluster_labels(index.footprints, num_clusters=8)   # one per file
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def _unit_vectors(footprints: Sequence[tuple[float, float, float, float]]) -> Tensor:
    """Footprint centres ``(west, south, east, north)`` in degrees → ``(N, 3)`` on the sphere."""
    lon = torch.tensor([(w + e) / 2 for w, _, e, _ in footprints], dtype=torch.float64)
    lat = torch.tensor([(s + n) / 2 for _, s, _, n in footprints], dtype=torch.float64)
    lon, lat = lon * math.pi / 180, lat * math.pi / 180
    return torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=1)


def geo_cluster_labels(
    footprints: Sequence[tuple[float, float, float, float]],
    *,
    num_clusters: int,
    seed: int = 0,
    iterations: int = 100,
) -> list[int]:
    """Cluster id per footprint (k-means++ seeded by ``seed``, then Lloyd iterations on the
    unit sphere; cluster ids ordered by their first member, so equal inputs give equal ids).

    Raises:
        ValueError: ``num_clusters`` < 1 or more clusters than distinct locations.
    """
    points = _unit_vectors(footprints)  # (N, 3)
    distinct = torch.unique(points.round(decimals=9), dim=0).shape[0]
    if num_clusters < 1 or num_clusters > distinct:
        raise ValueError(
            f"num_clusters={num_clusters} must be in [1, {distinct}] (distinct locations)"
        )
    generator = torch.Generator().manual_seed(seed)
    centers = points[torch.randint(len(points), (1,), generator=generator)]
    while len(centers) < num_clusters:  # k-means++: next centre ~ squared distance
        d2 = torch.cdist(points, centers).min(dim=1).values.square()
        pick = torch.multinomial(d2 / d2.sum(), 1, generator=generator)
        centers = torch.cat([centers, points[pick]])
    assign = torch.cdist(points, centers).argmin(dim=1)
    for _ in range(iterations):
        centers = torch.stack(
            [
                points[assign == k].mean(0) if (assign == k).any() else centers[k]
                for k in range(num_clusters)
            ]
        )
        new = torch.cdist(points, centers).argmin(dim=1)
        if torch.equal(new, assign):
            break
        assign = new
    order: dict[int, int] = {}
    for k in assign.tolist():
        order.setdefault(k, len(order))
    return [order[k] for k in assign.tolist()]
