"""I-JEPA's context and target blocks on 1D, 2D and 3D token grids."""

from __future__ import annotations

import math

import pytest
import torch

from domainfm.core.grid import TokenGrid
from domainfm.core.jepa_masking import JEPAMasks, MultiBlockMasking, random_box

GRIDS = {
    "1d": TokenGrid.from_input((256,), 4),  # 64 tokens
    "2d": TokenGrid.from_input((224, 224), 16),  # 14 x 14, the paper's ViT-H/16 grid
    "2d_oblong": TokenGrid.from_input((64, 96), 8),  # 8 x 12, a log-mel F x T grid
    "3d": TokenGrid.from_input((48, 48, 48), 8),  # 6 x 6 x 6
}


def _draw(grid: TokenGrid, seed: int, batch: int = 8, **kw: object) -> JEPAMasks:
    masking = MultiBlockMasking(**kw)  # type: ignore[arg-type]
    return masking(grid, batch, torch.Generator().manual_seed(seed))


def _coords(grid: TokenGrid, idx: torch.Tensor) -> torch.Tensor:
    """Flat indices ``(K,)`` → grid coordinates ``(K, n)``."""
    return torch.stack(torch.unravel_index(idx, grid.shape), dim=1)


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("seed", range(5))
def test_blocks_are_boxes_and_the_context_avoids_every_target(name: str, seed: int) -> None:
    grid = GRIDS[name]
    masks = _draw(grid, seed)
    b, t, kt = masks.targets.shape
    assert (b, t) == (8, 4) and masks.context.shape[0] == 8
    assert masks.context.dtype == masks.targets.dtype == torch.long
    n = grid.num_tokens
    sides = None
    for sample in range(b):
        context = masks.context[sample]
        assert context.unique().numel() == context.numel() and bool((context < n).all())
        assert torch.equal(context, context.sort().values), "context indices sorted"
        assert context.numel() > 10, "more than min_context tokens"
        for block in masks.targets[sample]:
            assert torch.equal(block, block.sort().values) and block.unique().numel() == kt
            # the block fills its bounding box: one box of the batch's target shape
            coords = _coords(grid, block)
            extent = tuple(int(s) for s in coords.max(0).values - coords.min(0).values + 1)
            assert math.prod(extent) == kt
            assert sides in (None, extent), "one target shape per batch"
            sides = extent
            assert not set(block.tolist()) & set(context.tolist()), "context overlaps a target"


@pytest.mark.parametrize("name", ["2d", "2d_oblong", "3d"])
def test_contexts_are_cut_to_the_smallest_of_the_batch_keeping_their_first_tokens(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    grid = GRIDS[name]
    drawn: list[torch.Tensor] = []
    context = MultiBlockMasking._context

    def recording(self: MultiBlockMasking, *args: object) -> torch.Tensor:
        out = context(self, *args)  # type: ignore[arg-type]
        drawn.append(out.flatten().nonzero()[:, 0])
        return out

    monkeypatch.setattr(MultiBlockMasking, "_context", recording)
    masks = _draw(grid, 0)
    sizes = [len(d) for d in drawn]
    assert len(set(sizes)) > 1, "the test needs contexts of different sizes"
    assert masks.context.shape == (8, min(sizes))
    for got, whole in zip(masks.context, drawn, strict=True):
        assert torch.equal(got, whole[: min(sizes)])


def test_block_shape_is_the_papers_in_2d() -> None:
    """2D: ``h = round(sqrt(V a))``, ``w = round(sqrt(V / a))`` with ``V = int(N s)``."""
    grid = TokenGrid.from_input((448, 448), 16)  # 28 x 28
    masking = MultiBlockMasking()
    for seed in range(50):
        got = masking.block_shape(
            grid, (0.15, 0.2), (0.75, 1.5), torch.Generator().manual_seed(seed)
        )
        g = torch.Generator().manual_seed(seed)
        scale = 0.15 + float(torch.rand(1, generator=g)) * 0.05
        aspect = 0.75 + float(torch.rand(1, generator=g)) * 0.75
        volume = int(grid.num_tokens * scale)
        assert got == (round(math.sqrt(volume * aspect)), round(math.sqrt(volume / aspect)))


@pytest.mark.parametrize("shape", [(4096,), (64, 64), (24, 24, 24)])
def test_block_volumes_and_side_ratios_lie_in_their_ranges(shape: tuple[int, ...]) -> None:
    grid = TokenGrid(shape=shape, patch_size=(1,) * len(shape), axes=("a", "b", "c")[: len(shape)])
    masking = MultiBlockMasking()
    for seed in range(40):
        g = torch.Generator().manual_seed(seed)
        sides = masking.block_shape(grid, (0.15, 0.2), (0.75, 1.5), g)
        fraction = math.prod(sides) / grid.num_tokens
        assert 0.15 * 0.8 <= fraction <= 0.2 * 1.2, (sides, fraction)  # rounding of the sides
        for side in sides[:-1]:
            assert 0.75 * 0.85 <= side / sides[-1] <= 1.5 * 1.15, sides
        context = masking.block_shape(grid, (0.85, 1.0), (1.0, 1.0), g)
        assert len(set(context)) == 1 and 0.85 * 0.8 <= math.prod(context) / grid.num_tokens <= 1


def test_seeded_draws_repeat_and_differ_between_seeds() -> None:
    grid = GRIDS["3d"]
    a, b, c = _draw(grid, 3), _draw(grid, 3), _draw(grid, 4)
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    assert not (a.context.shape == c.context.shape and torch.equal(a.context, c.context))
    torch.manual_seed(7)
    d = MultiBlockMasking()(grid, 8)  # the global RNG when no generator is given
    torch.manual_seed(7)
    e = MultiBlockMasking()(grid, 8)
    assert torch.equal(d.context, e.context) and torch.equal(d.targets, e.targets)


def test_1d_targets_are_spans() -> None:
    masks = _draw(GRIDS["1d"], 0)
    diffs = masks.targets.diff(dim=-1)
    assert bool((diffs == 1).all())


def test_a_grid_too_small_for_min_context_gives_targets_back_and_ends() -> None:
    """2 x 2 x 2 tokens cannot keep more than 10 context tokens: the fallback gives the
    targets back one by one and finally takes the context box as it is."""
    grid = TokenGrid.from_input((2, 2, 2), 1)
    masks = _draw(grid, 0, batch=3)
    assert masks.context.shape[0] == 3 and masks.context.shape[1] >= 1
    assert masks.targets.shape == (3, 4, 1)


def test_min_context_is_honoured_when_reachable() -> None:
    grid = GRIDS["2d"]
    masks = _draw(grid, 1, batch=16, min_context=60)
    assert masks.context.shape[1] > 60


def test_random_box_sets_one_box_inside_the_grid() -> None:
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        box = random_box((5, 7), (5, 3), g)
        assert int(box.sum()) == 15 and bool(box.any(dim=1).all())  # every row: full height


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_targets": 0}, "num_targets"),
        ({"min_context": -1}, "min_context"),
        ({"target_scale": (0.3, 0.2)}, "target_scale"),
        ({"target_scale": (0.0, 0.2)}, "target_scale"),
        ({"context_scale": (0.85, 1.2)}, "context_scale"),
        ({"target_aspect": (0.75,)}, "target_aspect"),
    ],
)
def test_bad_settings_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MultiBlockMasking(**kwargs)  # type: ignore[arg-type]


def test_settings_from_a_config_become_float_pairs() -> None:
    masking = MultiBlockMasking(target_scale=[0.1, 0.2])  # type: ignore[arg-type]  # YAML list
    assert masking.target_scale == (0.1, 0.2)
    with pytest.raises(ValueError, match="batch_size"):
        masking(GRIDS["2d"], 0)
