"""label_components: union-find labelling against a plain breadth-first flood fill (loops over
voxels), in 2D and 3D, both connectivities; numbering by first element in C order."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
import torch

from domainfm.core.connected_components import half_offsets, label_components


def _flood_fill(mask: torch.Tensor, connectivity: str) -> tuple[torch.Tensor, int]:
    """Reference: scan elements in C order; an unlabelled foreground element starts a new
    region, grown breadth-first over its neighbours."""
    shape = tuple(mask.shape)
    steps = [
        s
        for s in itertools.product((-1, 0, 1), repeat=len(shape))
        if any(s) and (connectivity == "full" or sum(map(abs, s)) == 1)
    ]
    labels = torch.zeros(shape, dtype=torch.long)
    count = 0
    for start in itertools.product(*(range(n) for n in shape)):
        if not mask[start] or labels[start]:
            continue
        count += 1
        labels[start] = count
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for step in steps:
                there = tuple(h + s for h, s in zip(here, step, strict=True))
                inside = all(0 <= t < n for t, n in zip(there, shape, strict=True))
                if inside and mask[there] and not labels[there]:
                    labels[there] = count
                    queue.append(there)
    return labels, count


@pytest.mark.parametrize("connectivity", ["full", "face"])
@pytest.mark.parametrize("shape", [(9, 11), (6, 7, 8)])
@pytest.mark.parametrize("density", [0.2, 0.35])
def test_matches_flood_fill(shape: tuple[int, ...], connectivity: str, density: float) -> None:
    gen = torch.Generator().manual_seed(len(shape) * 100 + int(density * 10))
    mask = torch.rand(shape, generator=gen) < density
    got, count = label_components(mask, connectivity=connectivity)  # type: ignore[arg-type]
    expected, expected_count = _flood_fill(mask, connectivity)
    assert count == expected_count > 1
    assert torch.equal(got, expected)


def test_long_snake_needs_many_rounds_and_still_joins() -> None:
    """A serpentine path whose ends are far apart in index order is one region."""
    mask = torch.zeros(9, 9, dtype=torch.bool)
    mask[0::2, :] = True
    for row in range(1, 9, 2):
        mask[row, 8 if row % 4 == 1 else 0] = True
    labels, count = label_components(mask, connectivity="face")
    assert count == 1 and labels[mask].eq(1).all() and labels[~mask].eq(0).all()


def test_empty_full_and_offsets() -> None:
    assert label_components(torch.zeros(3, 4, 5, dtype=torch.bool))[1] == 0
    labels, count = label_components(torch.ones(3, 4, 5, dtype=torch.bool))
    assert count == 1 and labels.eq(1).all()
    assert len(half_offsets(3, "full")) == 13 and len(half_offsets(3, "face")) == 3
    with pytest.raises(ValueError, match="connectivity"):
        half_offsets(3, "edge")  # type: ignore[arg-type]
