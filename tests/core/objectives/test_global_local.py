"""Chaitanya et al.'s global (partition positives) and local (dense regions) contrast against
loop-by-loop transcriptions of Eq. 1-3 of arXiv:2006.10511, and the global loss's
data-parallel contract on 2 Gloo ranks."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from runpy import run_path
from typing import Any

import pytest
import torch
from torch import Tensor

from domainfm.core import distributed
from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives import GlobalPartitionContrast, InfoNCE, LocalContrast
from domainfm.core.objectives.base import BackboneBound, BatchObjective, ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.vit import VisionTransformerND
from domainfm.tasks.pretrain_module import PretrainModule


def _cos(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum())


def reference_global(
    z1: Tensor, z2: Tensor, partition: Tensor, temperature: float, *, same_crop_only: bool = False
) -> Tensor:
    """Eq. 1-2 with strategy G_D, one positive pair at a time: the 2N embeddings (view 1 of
    every sample, then view 2) carry their sample's partition; for every ordered pair (i, j),
    j != i of the same partition,
    l(i, j) = -log(e^{s_ij / t} / (e^{s_ij / t} + sum_{k of another partition} e^{s_ik / t})),
    averaged over the pairs. ``same_crop_only``: only (view 1, view 2) of one sample pair up
    (what the loss would be without the cross-volume partition positives)."""
    n = z1.shape[0]
    z = [z1[b] for b in range(n)] + [z2[b] for b in range(n)]
    label = [int(partition[b]) for b in range(n)] * 2
    terms = []
    for i in range(2 * n):
        for j in range(2 * n):
            if j == i or label[j] != label[i]:
                continue
            if same_crop_only and j % n != i % n:
                continue
            numerator = torch.exp(_cos(z[i], z[j]) / temperature)
            denominator = numerator
            for k in range(2 * n):
                if label[k] != label[i]:
                    denominator = denominator + torch.exp(_cos(z[i], z[k]) / temperature)
            terms.append(-torch.log(numerator / denominator))
    return torch.stack(terms).mean()


def reference_regions(f: Tensor, k: int) -> list[Tensor]:
    """The local regions of one map ``(C, *m)``: the mean feature of each non-overlapping
    ``k^n`` cell, cells in C order, computed voxel by voxel."""
    cells = [s // k for s in f.shape[1:]]
    out = []
    for cell in torch.cartesian_prod(*(torch.arange(c) for c in cells)).reshape(-1, len(cells)):
        total = torch.zeros(f.shape[0], dtype=f.dtype)
        for offset in torch.cartesian_prod(*(torch.arange(k) for _ in cells)).reshape(
            -1, len(cells)
        ):
            index = tuple(int(c) * k + int(o) for c, o in zip(cell, offset, strict=True))
            total = total + f[(slice(None), *index)]
        out.append(total / k ** len(cells))
    return out


def reference_local(f1: Tensor, f2: Tensor, k: int, temperature: float) -> Tensor:
    """Eq. 3, one anchor at a time: for region u of one view's map the positive is u of the
    other view, the negatives every other region u' != u of both maps; averaged over samples,
    regions and both directions."""
    terms = []
    for b in range(f1.shape[0]):
        regions = (reference_regions(f1[b], k), reference_regions(f2[b], k))
        for view in (0, 1):
            own, other = regions[view], regions[1 - view]
            for u in range(len(own)):
                numerator = torch.exp(_cos(own[u], other[u]) / temperature)
                denominator = numerator
                for v in range(len(own)):
                    if v == u:
                        continue
                    denominator = denominator + torch.exp(_cos(own[u], own[v]) / temperature)
                    denominator = denominator + torch.exp(_cos(own[u], other[v]) / temperature)
                terms.append(-torch.log(numerator / denominator))
    return torch.stack(terms).mean()


def assert_same_loss_and_grads(
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    reference_fn: Callable[[Tensor, Tensor], Tensor],
    *inputs: Tensor,
) -> None:
    """The vectorized loss and the loop reference agree on ``inputs``, value and gradients."""
    ours = [x.clone().requires_grad_() for x in inputs]
    theirs = [x.clone().requires_grad_() for x in inputs]
    loss, expected = loss_fn(*ours), reference_fn(*theirs)
    torch.testing.assert_close(loss, expected)
    torch.autograd.backward([loss, expected])
    for mine, ref in zip(ours, theirs, strict=True):
        assert mine.grad is not None and ref.grad is not None
        torch.testing.assert_close(mine.grad, ref.grad)


def _views(partition: Tensor, d: int = 12, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Two float64 views ``(N, d)`` of samples whose embeddings cluster by partition."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(int(partition.max()) + 1, d, generator=gen, dtype=torch.float64)
    base = centres[partition] + 0.8 * torch.randn(len(partition), d, generator=gen).double()
    z1 = base + 0.5 * torch.randn(base.shape, generator=gen, dtype=torch.float64)
    z2 = 2.0 * base + 0.5 * torch.randn(base.shape, generator=gen, dtype=torch.float64)
    return z1, z2


PARTITIONS = {
    "mixed": [0, 1, 2, 0, 1, 3, 0, 2],  # partitions of 1 to 3 samples
    "two_per_partition": [0, 1, 2, 3, 0, 1, 2, 3],
    "one_partition_alone": [5, 5, 5, 5, 5, 5, 5, 2],
}


def _global_objective(temperature: float) -> GlobalPartitionContrast:
    return GlobalPartitionContrast(embed_dim=4, temperature=temperature)


@pytest.mark.parametrize("name", sorted(PARTITIONS))
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_global_matches_paper_loss_and_grads(name: str, temperature: float) -> None:
    partition = torch.tensor(PARTITIONS[name])
    z1, z2 = _views(partition)
    objective = _global_objective(temperature)
    assert_same_loss_and_grads(
        lambda a, b: objective(a, b, partition).loss,
        lambda a, b: reference_global(a, b, partition, temperature),
        z1,
        z2,
    )


def test_cross_volume_positives_change_the_loss() -> None:
    """The test above discriminates: with the same-crop pairs only, the loss differs."""
    partition = torch.tensor(PARTITIONS["mixed"])
    z1, z2 = _views(partition)
    full = reference_global(z1, z2, partition, 0.1)
    same_crop = reference_global(z1, z2, partition, 0.1, same_crop_only=True)
    assert not torch.allclose(full, same_crop, rtol=1e-3)


def test_global_with_distinct_partitions_is_nt_xent() -> None:
    """One sample per partition: the only positive is the other view and every other
    embedding is a negative, which is SimCLR's NT-Xent."""
    partition = torch.arange(8) * 3
    z1, z2 = _views(partition)
    out = _global_objective(0.2)(z1, z2, partition)
    torch.testing.assert_close(out.loss, InfoNCE(temperature=0.2)(z1, z2).loss)
    torch.testing.assert_close(out.terms["cross_positives"], torch.tensor(0.0))


def test_global_without_negatives_is_zero_with_finite_grads() -> None:
    partition = torch.zeros(4, dtype=torch.long)
    z1, z2 = (z.requires_grad_() for z in _views(partition))
    out = _global_objective(0.1)(z1, z2, partition)
    out.loss.backward()
    assert float(out.loss.detach()) == 0.0
    assert z1.grad is not None and torch.isfinite(z1.grad).all()
    # every other embedding is a positive: 2N - 1 per anchor, 1 of them the other view
    torch.testing.assert_close(out.terms["cross_positives"], torch.tensor(6.0))


def region_maps(b: int = 2, c: int = 5, spatial: tuple[int, ...] = (4, 4, 2)) -> list[Tensor]:
    gen = torch.Generator().manual_seed(1)
    base = torch.randn(b, c, *spatial, generator=gen, dtype=torch.float64)
    return [base + 0.5 * torch.randn(base.shape, generator=gen, dtype=torch.float64) for _ in "12"]


@pytest.mark.parametrize(
    ("region_size", "spatial"),
    [(1, (3, 2, 2)), (2, (4, 4, 2)), (2, (5, 4, 3)), (3, (6, 3, 3)), (2, (6, 4))],
    ids=["1x1x1", "2x2x2", "2x2x2-trailing-dropped", "3x3x3", "2d"],
)
def test_local_matches_paper_loss_and_grads(region_size: int, spatial: tuple[int, ...]) -> None:
    f1, f2 = region_maps(spatial=spatial)
    objective = LocalContrast(embed_dim=5, patch_size=(4,) * len(spatial), region_size=region_size)
    assert_same_loss_and_grads(
        objective.region_loss,
        lambda a, b: reference_local(a, b, region_size, objective.temperature),
        f1,
        f2,
    )


def test_local_loss_falls_when_positions_match() -> None:
    """Identical maps with distinct regions score far below unrelated maps."""
    objective = LocalContrast(embed_dim=5, patch_size=(4, 4, 4), temperature=0.1)
    eye = torch.eye(8, dtype=torch.float64).reshape(1, 8, 2, 2, 2)  # 8 orthogonal regions
    shuffled = eye[:, :, [1, 0]]  # region u of view 2 is another region of view 1
    assert float(objective.region_loss(eye, eye)) < 1e-3
    assert float(objective.region_loss(eye, shuffled)) > 5.0


def _vit(**kwargs: Any) -> VisionTransformerND:
    torch.manual_seed(0)
    return VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=1, num_heads=2, **kwargs
    )


def _batch(b: int = 4) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(b, 1, 16, 16, 16, generator=gen)
    return {
        "view1": x,
        "view2": 1.1 * x + 0.05,
        "partition": torch.tensor([0, 1, 0, 1])[:b],
    }


def test_pretrain_module_trains_both_losses_with_one_pass_per_view() -> None:
    vit = _vit()
    objectives = {
        "global": GlobalPartitionContrast(hidden_dim=16, out_dim=8),
        "local": LocalContrast(decoder_dim=8, out_dim=8, upsample=1, region_size=2),
    }
    module = PretrainModule(backbone=vit, objectives=objectives, weights={"local": 0.5})
    calls = []
    forward_tokens = vit.forward_tokens

    def counted(x: Tensor, keep_idx: Tensor | None = None) -> Any:
        calls.append(tuple(x.shape))
        return forward_tokens(x, keep_idx)

    vit.forward_tokens = counted  # type: ignore[method-assign]
    loss, logs = module.compute_losses(_batch())
    assert len(calls) == 2  # view1 and view2, shared by both objectives
    torch.testing.assert_close(loss, logs["global"] + 0.5 * logs["local"])
    assert set(logs) == {"global", "global/cross_positives", "local"}
    loss.backward()
    assert vit.patch_embed.proj.weight.grad is not None
    assert not module.projectors  # the objectives own their heads
    assert objectives["global"].embed_dim == 32 and objectives["local"].patch_size == (8, 8, 8)


def test_decoder_maps_are_upsampled_token_maps() -> None:
    vit = _vit()
    local = LocalContrast(decoder_dim=8, out_dim=6, upsample=2)
    local.bind_backbone(vit)
    tokens, grid = vit.forward_tokens(torch.rand(2, 1, 16, 16, 16))
    maps = tokens[:, vit.num_prefix_tokens :].transpose(1, 2).reshape(2, 32, *grid.shape)
    assert local.decoder(maps).shape == (2, 6, 8, 8, 8)  # (2, 2, 2) grid, x4


def test_stop_grad_encoder_trains_only_the_decoder() -> None:
    vit = _vit()
    local = LocalContrast(decoder_dim=8, out_dim=8, stop_grad_encoder=True)
    local.bind_backbone(vit)
    local.forward_batch(BatchFeatures(vit, _batch())).loss.backward()
    assert vit.patch_embed.proj.weight.grad is None
    assert all(p.grad is not None for p in local.decoder.parameters())


def test_losses_are_float32_under_bf16_autocast() -> None:
    partition = torch.tensor(PARTITIONS["mixed"])
    z1, z2 = (z.float().bfloat16() for z in _views(partition))
    maps = [f.float().bfloat16() for f in region_maps()]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = _global_objective(0.1)(z1, z2, partition).loss
        loc = LocalContrast(embed_dim=5, patch_size=(4, 4, 4), region_size=2).region_loss(*maps)
    assert g.dtype == torch.float32 and loc.dtype == torch.float32
    expected = reference_global(z1.double(), z2.double(), partition, 0.1)
    torch.testing.assert_close(g.double(), expected, rtol=1e-5, atol=1e-5)


def test_registry_protocols_and_modes() -> None:
    assert OBJECTIVES.get("global_partition") is GlobalPartitionContrast
    assert OBJECTIVES.get("local_contrast") is LocalContrast
    assert GlobalPartitionContrast.parallel_mode is ParallelMode.GATHER
    assert LocalContrast.parallel_mode is ParallelMode.LOCAL
    for objective in (GlobalPartitionContrast(), LocalContrast()):
        assert isinstance(objective, BatchObjective) and isinstance(objective, BackboneBound)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GlobalPartitionContrast(temperature=0.0), "temperature"),
        (lambda: GlobalPartitionContrast(views=["view1"]), "exactly two"),
        (lambda: LocalContrast(region_size=0), "region_size"),
        (lambda: LocalContrast(upsample=-1), "upsample"),
        (lambda: LocalContrast(views=[]), "views"),
    ],
)
def test_bad_hyperparameters(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_shapes() -> None:
    z1, z2 = _views(torch.tensor(PARTITIONS["mixed"]))
    with pytest.raises(ValueError, match=r"partition must be \(B,\)"):
        _global_objective(0.1)(z1, z2, torch.zeros(3, dtype=torch.long))
    local = LocalContrast(embed_dim=5, patch_size=(4, 4, 4), region_size=2)
    with pytest.raises(ValueError, match="at least 2"):
        local.region_loss(*region_maps(spatial=(2, 3, 2)))
    with pytest.raises(RuntimeError, match="embed_dim"):
        LocalContrast()(*region_maps())
    with pytest.raises(RuntimeError, match="embed_dim"):
        GlobalPartitionContrast().forward_batch(BatchFeatures(_vit(), _batch()))


# -- data parallelism: 2 Gloo ranks -----------------------------------------------------------

GLOO = run_path(str(Path(__file__).parents[2] / "gloo_ranks.py"))
WORLD = 2
GLOBAL_PARTITIONS = [0, 0, 0, 1, 1, 2, 0, 2]
"""Rank 0 holds three samples of partition 0, rank 1 one: the ranks' positive pairs differ in
number, so per-rank means would not average to the global loss."""


def _global_run(gather: bool, z1: Tensor, z2: Tensor, partition: Tensor) -> dict[str, Tensor]:
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    objective = GlobalPartitionContrast(embed_dim=4, temperature=0.5, gather_distributed=gather)
    loss = objective(a1, a2, partition).loss
    loss.backward()
    assert a1.grad is not None and a2.grad is not None
    return {"loss": loss.detach(), "grad1": a1.grad, "grad2": a2.grad}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    with GLOO["gloo_group"](rank, init_file, world=WORLD):
        partition = torch.tensor(GLOBAL_PARTITIONS)
        z1, z2 = _views(partition)
        b = len(partition) // WORLD
        rows = slice(rank * b, (rank + 1) * b)
        results = {
            gather: _global_run(gather, z1[rows], z2[rows], partition[rows])
            for gather in (True, False)
        }
        GLOO["save_rank"](results, out_dir, rank)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[bool, dict[str, Tensor]]]:
    results: list[dict[bool, dict[str, Tensor]]] = GLOO["spawn_ranks"](
        _worker, tmp_path_factory.mktemp("global_local_dist"), world=WORLD
    )
    return results


def test_two_ranks_match_one_process_on_the_global_batch(
    ranks: list[dict[bool, dict[str, Tensor]]],
) -> None:
    assert not distributed.is_distributed()
    partition = torch.tensor(GLOBAL_PARTITIONS)
    reference = _global_run(True, *_views(partition), partition)
    mean_loss = torch.stack([r[True]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean_loss, reference["loss"])
    b = len(GLOBAL_PARTITIONS) // WORLD
    for r, result in enumerate(ranks):
        for key in ("grad1", "grad2"):
            torch.testing.assert_close(
                result[True][key] / WORLD, reference[key][r * b : (r + 1) * b]
            )
    # the ranks' losses differ (their positives do), yet they average to the global loss
    assert not math.isclose(float(ranks[0][True]["loss"]), float(ranks[1][True]["loss"]))


def test_without_gather_the_contract_fails(ranks: list[dict[bool, dict[str, Tensor]]]) -> None:
    partition = torch.tensor(GLOBAL_PARTITIONS)
    reference = _global_run(True, *_views(partition), partition)
    mean_loss = torch.stack([r[False]["loss"] for r in ranks]).mean()
    assert not torch.allclose(mean_loss, reference["loss"], rtol=1e-4, atol=1e-6)
