from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from domainfm.core.grid import TokenGrid
from domainfm.core.masking import (
    BlockMasking,
    MaskingCollate,
    MaskingSpec,
    RandomMasking,
    TubeMasking,
    keep_indices,
    num_masked,
)

GRIDS = {
    "1d": TokenGrid.from_input((100,), 4),
    "2d": TokenGrid.from_input((64, 96), 8),
    "3d": TokenGrid.from_input((48, 48, 48), 8),
}


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.75, 0.9])
@pytest.mark.parametrize("grid_name", list(GRIDS))
@pytest.mark.parametrize("kind", ["random", "block"])
def test_exact_ratio(kind: str, grid_name: str, ratio: float) -> None:
    grid = GRIDS[grid_name]
    gen = RandomMasking(ratio=ratio) if kind == "random" else BlockMasking(ratio=ratio)
    mask = gen(grid, 6, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (6, grid.num_tokens) and mask.dtype == torch.bool
    assert (mask.sum(dim=1) == num_masked(grid.num_tokens, ratio)).all()
    assert keep_indices(mask).shape == (6, grid.num_tokens - num_masked(grid.num_tokens, ratio))


def test_random_masking_is_uniform_and_seeded() -> None:
    grid = GRIDS["2d"]
    gen = RandomMasking(ratio=0.75)
    a = gen(grid, 4, generator=torch.Generator().manual_seed(3))
    b = gen(grid, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    freq = gen(grid, 4000, generator=torch.Generator().manual_seed(0)).float().mean(dim=0)
    assert (freq - 0.75).abs().max() < 0.04  # every position masked ~75% of the time


def test_block_masking_is_clustered() -> None:
    """Masked tokens in block masks have far more masked neighbours than random ones."""
    grid = GRIDS["2d"]

    def neighbour_rate(mask: torch.Tensor) -> float:
        m = mask.view(-1, *grid.shape).float()
        right = (m[:, :, 1:] * m[:, :, :-1]).sum() / m[:, :, :-1].sum()
        down = (m[:, 1:] * m[:, :-1]).sum() / m[:, :-1].sum()
        return float(right + down) / 2

    g = torch.Generator().manual_seed(0)
    block = neighbour_rate(BlockMasking(ratio=0.4)(grid, 32, generator=g))
    rand = neighbour_rate(RandomMasking(ratio=0.4)(grid, 32, generator=g))
    assert block > rand + 0.25, (block, rand)


@pytest.mark.parametrize("axis", ["t", "h"])
def test_tube_masking_consistent_along_axis(axis: str) -> None:
    grid = TokenGrid.from_input((8, 32, 32), (2, 8, 8), axes=("t", "h", "w"))
    mask = TubeMasking(axis=axis, ratio=0.75)(grid, 5, generator=torch.Generator().manual_seed(0))
    a = grid.axis(axis)
    volume = mask.view(5, *grid.shape)
    first = volume.select(a + 1, 0).unsqueeze(a + 1)
    assert torch.equal(volume, first.expand_as(volume))
    rest = grid.num_tokens // grid.shape[a]
    assert (mask.sum(dim=1) == num_masked(rest, 0.75) * grid.shape[a]).all()
    # and the mask still differs between positions of the other axes
    assert 0 < first.float().mean() < 1


def test_bad_ratios_and_axis() -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=rf"mask ratio must be in \(0, 1\), got ratio={bad}"):
            RandomMasking(ratio=bad)
        with pytest.raises(ValueError, match="mask ratio"):
            BlockMasking(ratio=bad)
    with pytest.raises(ValueError, match="axis 'b' is not one of"):
        TubeMasking(axis="b")(GRIDS["2d"], 1)
    with pytest.raises(ValueError, match="same number of tokens"):
        keep_indices(torch.tensor([[True, False], [True, True]]))


def test_collate_in_workers_is_reproducible() -> None:
    data = [{"input": torch.randn(1, 16, 16, 16)} for _ in range(8)]
    collate = MaskingCollate(masking=RandomMasking(ratio=0.5), patch_size=8)

    def masks() -> list[torch.Tensor]:
        torch.manual_seed(7)
        loader = DataLoader(data, batch_size=4, num_workers=2, collate_fn=collate)  # type: ignore[arg-type]
        return [batch["mask"] for batch in loader]

    first, second = masks(), masks()
    assert len(first) == 2 and first[0].shape == (4, 8)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first[0], first[1])
    batch = collate(data[:2])
    assert batch["keep_idx"].shape == (2, 4)
    assert not batch["mask"].gather(1, batch["keep_idx"]).any()


def test_masking_spec_builds_the_collate_of_its_kind() -> None:
    seeds = torch.arange(2)
    samples = [{"input": torch.randn(1, 16, 16, 16), "seed": s} for s in seeds]
    spec = MaskingSpec(patch_size=8, ratio=0.5)
    collate = spec.collate()
    assert isinstance(collate.masking, RandomMasking) and collate.patch_size == 8
    # the same masks as the collate built by hand (seeded by the samples' seeds)
    by_hand = MaskingCollate(masking=RandomMasking(ratio=0.5), patch_size=8)(samples)
    assert torch.equal(collate(samples)["mask"], by_hand["mask"])
    block = MaskingSpec(patch_size=8, ratio=0.5, kind="block").collate()
    assert isinstance(block.masking, BlockMasking) and block.masking.ratio == 0.5
    tube = MaskingSpec(patch_size=8, kind="tube").collate(patch_size=(1, 8, 8), axes="thw")
    assert isinstance(tube.masking, TubeMasking) and tube.masking.axis == "t"
    assert tube.patch_size == (1, 8, 8)


def test_masking_spec_refuses_kinds_the_data_does_not_support() -> None:
    with pytest.raises(ValueError, match="kind='block' is not one of"):
        MaskingSpec(kind="block").collate(kinds=("random",))
    with pytest.raises(ValueError, match="kind='tube' needs a grid axis"):
        MaskingSpec(kind="tube").collate()
    with pytest.raises(ValueError, match="ratio"):
        MaskingSpec(ratio=1.5).collate()
