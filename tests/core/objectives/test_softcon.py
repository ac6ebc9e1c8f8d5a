"""SoftCon against a loop-by-loop transcription of its soft-target loss (Wang et al. 2024,
arXiv:2405.20462), its heads and batch keys, and its data-parallel contract on 2 Gloo ranks."""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor

from domainfm.core import distributed
from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.base import ObjectiveOutput, ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.softcon import SoftCon
from domainfm.core.vit import VisionTransformerND


def _label_sim(a: list[float], b: list[float], kind: str) -> float:
    """The paper's label similarity of two vectors, written out: cosine, or weighted Jaccard
    ``sum min / sum max``; 0 when a vector is zero."""
    if kind == "cosine":
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(y * y for y in b))
        return dot / (na * nb) if na > 0 and nb > 0 else 0.0
    low = sum(min(x, y) for x, y in zip(a, b, strict=True))
    high = sum(max(x, y) for x, y in zip(a, b, strict=True))
    return low / high if high > 0 else 0.0


def reference_softcon(
    z1: Tensor,
    z2: Tensor,
    y1: Tensor,
    y2: Tensor,
    temperature: float,
    kind: str = "cosine",
    threshold: float | None = None,
    soft: bool = True,
) -> Tensor:
    """Loops over anchors i and candidates j: s_ij the label similarity (s_ii = 1), the soft
    target s_ij / sum_k s_ik, cross-entropy against the softmax over j of cos(z1_i, z2_j) / t;
    the same with the views swapped; the mean of both directions. ``soft=False``: one-hot
    identity targets (symmetric InfoNCE)."""
    n = z1.shape[0]
    u = [z1[i] / torch.sqrt((z1[i] * z1[i]).sum()) for i in range(n)]
    v = [z2[j] / torch.sqrt((z2[j] * z2[j]).sum()) for j in range(n)]

    def labels(y: Tensor) -> list[list[float]]:
        rows = y.tolist()
        return [[float(x > threshold) for x in r] for r in rows] if threshold is not None else rows

    a, b = labels(y1), labels(y2)
    s = [
        [1.0 if i == j else (_label_sim(a[i], b[j], kind) if soft else 0.0) for j in range(n)]
        for i in range(n)
    ]
    total = torch.zeros((), dtype=z1.dtype)
    for i in range(n):  # view-1 anchors against every view-2 embedding
        logits = [(u[i] * v[j]).sum() / temperature for j in range(n)]
        log_norm = torch.log(sum(torch.exp(x) for x in logits))
        row = sum(s[i][j] for j in range(n))
        for j in range(n):
            total = total - (s[i][j] / row) * (logits[j] - log_norm)
    for j in range(n):  # view-2 anchors against every view-1 embedding
        logits = [(v[j] * u[i]).sum() / temperature for i in range(n)]
        log_norm = torch.log(sum(torch.exp(x) for x in logits))
        col = sum(s[i][j] for i in range(n))
        for i in range(n):
            total = total - (s[i][j] / col) * (logits[i] - log_norm)
    return total / (2 * n)


def _batch(n: int = 6, d: int = 16, k: int = 5, seed: int = 0) -> tuple[Tensor, ...]:
    """Correlated float64 views and land-cover fractions (one unlabeled scene: zeros)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z1 = base + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    z2 = 2.0 * base + 0.7 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.rand(n, k, generator=gen, dtype=torch.float64) ** 3  # some classes near 0
    y = y * (torch.rand(n, k, generator=gen, dtype=torch.float64) > 0.4)
    y[0] = 0.0  # a scene without labeled pixels
    y[1] = 0.0
    y[1, 2] = 1.0  # a scene of one class
    y = y / y.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return z1, z2, y, y.clone()


@pytest.mark.parametrize(
    ("kind", "threshold", "temperature"),
    [("cosine", None, 0.1), ("jaccard", None, 0.5), ("cosine", 0.1, 0.2), ("jaccard", 0.0, 1.0)],
)
def test_matches_the_paper_loop_loss_and_grads(
    kind: str, threshold: float | None, temperature: float
) -> None:
    z1, z2, y1, y2 = _batch()
    y2[3] = y2[4]  # the views' vectors need not agree
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    r1, r2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    objective = SoftCon(temperature=temperature, label_similarity=kind, label_threshold=threshold)  # type: ignore[arg-type]
    out = objective(a1, a2, y1, y2)
    expected = reference_softcon(r1, r2, y1, y2, temperature, kind, threshold)
    assert isinstance(out, ObjectiveOutput)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    expected.backward()
    assert a1.grad is not None and a2.grad is not None
    torch.testing.assert_close(a1.grad, r1.grad)
    torch.testing.assert_close(a2.grad, r2.grad)


def test_soft_targets_matter() -> None:
    """The soft targets are the method: with identity targets (symmetric InfoNCE) the loss
    and gradients differ; with labels that are all distinct classes they coincide."""
    z1, z2, y1, y2 = _batch()
    ours = SoftCon(temperature=0.2)(z1, z2, y1, y2).loss
    assert not torch.allclose(ours, reference_softcon(z1, z2, y1, y2, 0.2, soft=False))
    one_class_each = torch.eye(6, dtype=torch.float64)
    torch.testing.assert_close(
        SoftCon(temperature=0.2)(z1, z2, one_class_each, one_class_each).loss,
        reference_softcon(z1, z2, y1, y2, 0.2, soft=False),
    )


def test_terms_kl_is_loss_minus_target_entropy() -> None:
    z1, z2, y1, y2 = _batch()
    out = SoftCon(temperature=0.2)(z1, z2, y1, y2)
    assert set(out.terms) == {"softcon", "kl", "top1_acc"}
    assert float(out.terms["kl"]) >= 0.0 and float(out.terms["kl"]) < float(out.loss)
    same = torch.ones(6, 3, dtype=torch.float64)  # every scene alike: uniform targets
    flat = SoftCon(temperature=0.2)(torch.ones(6, 4), torch.ones(6, 4), same, same)
    torch.testing.assert_close(flat.loss, torch.tensor(math.log(6.0)))
    torch.testing.assert_close(flat.terms["kl"], torch.tensor(0.0), atol=1e-6, rtol=0)


def test_logits_are_float32_under_bf16_autocast() -> None:
    z1, z2, y1, y2 = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = SoftCon(temperature=0.1)(z1.bfloat16(), z2.bfloat16(), y1, y2).loss
    assert loss.dtype == torch.float32
    expected = reference_softcon(z1.bfloat16().double(), z2.bfloat16().double(), y1, y2, 0.1)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-5)


def test_forward_batch_projects_both_views_through_its_head() -> None:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=3, spatial_dims=2, patch_size=4, embed_dim=16, depth=1, num_heads=2
    )
    softcon = SoftCon(hidden_dim=24, out_dim=8)
    softcon.bind_backbone(vit)  # embed_dim: the backbone's
    assert softcon.embed_dim == 16 and softcon.head[0].in_features == 16
    _, _, y, _ = _batch(n=4, k=3)
    batch = {"view1": torch.randn(4, 3, 8, 8), "view2": torch.randn(4, 3, 8, 8)}
    batch |= {"landcover1": y.float(), "landcover2": y.float()}
    out = softcon.forward_batch(BatchFeatures(vit, batch))
    z1, z2 = softcon.head(vit(batch["view1"])), softcon.head(vit(batch["view2"]))
    torch.testing.assert_close(out.loss, softcon(z1, z2, y.float(), y.float()).loss)
    out.loss.backward()
    assert vit.patch_embed.proj.weight.grad is not None


def test_registry_metadata_and_errors() -> None:
    assert OBJECTIVES.get("softcon") is SoftCon
    assert SoftCon.parallel_mode is ParallelMode.GATHER
    with pytest.raises(ValueError, match="temperature"):
        SoftCon(temperature=0.0)
    with pytest.raises(ValueError, match="label_similarity"):
        SoftCon(label_similarity="dice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two views"):
        SoftCon(views=["a", "b", "c"], labels=["x", "y", "z"])
    with pytest.raises(ValueError, match="same length"):
        SoftCon(views=["a", "b"], labels=["x"])
    with pytest.raises(ValueError, match="y1 and y2"):
        SoftCon()(torch.randn(4, 8), torch.randn(4, 8), torch.rand(4, 3), torch.rand(5, 3))
    with pytest.raises(ValueError, match="non-negative"):
        SoftCon()(torch.randn(2, 8), torch.randn(2, 8), -torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(RuntimeError, match="embed_dim"):
        SoftCon().forward_batch(None)  # type: ignore[arg-type]  # sizes checked first


# -- 2-process Gloo: the mean of the rank losses and the gradients / W equal one process's --

WORLD = 2
GLOBAL_BATCH = 8


def _global_inputs() -> tuple[Tensor, ...]:
    return _batch(n=GLOBAL_BATCH, d=12, k=4, seed=3)


def _run(gather: bool, inputs: tuple[Tensor, ...]) -> dict[str, Tensor]:
    z1, z2, y1, y2 = inputs
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    loss = SoftCon(temperature=0.3, gather_distributed=gather)(a1, a2, y1, y2).loss
    loss.backward()
    assert a1.grad is not None and a2.grad is not None
    return {"loss": loss.detach(), "g1": a1.grad, "g2": a2.grad}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        assert distributed.world_size() == WORLD
        b = GLOBAL_BATCH // WORLD
        local = tuple(x[rank * b : (rank + 1) * b] for x in _global_inputs())
        results = {"gather": _run(True, local), "local": _run(False, local)}
        path = os.path.join(out_dir, f"rank{rank}.pt")
        torch.save(results, path + ".tmp")
        os.replace(path + ".tmp", path)  # the file exists only once complete
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp: Path = tmp_path_factory.mktemp("softcon_dist")
    files = [tmp / f"rank{r}.pt" for r in range(WORLD)]
    try:
        mp.start_processes(
            _worker,
            args=(str(tmp / "rendezvous"), str(tmp)),
            nprocs=WORLD,
            join=True,
            start_method="spawn",
        )
    except mp.ProcessExitedException:  # a rare Gloo teardown abort after the results exist
        if not all(f.exists() for f in files):
            raise
    return [torch.load(f) for f in files]


def test_two_ranks_match_one_process_on_the_global_batch(ranks: list[dict[str, Any]]) -> None:
    ref = _run(True, _global_inputs())
    b = GLOBAL_BATCH // WORLD
    mean_loss = torch.stack([r["gather"]["loss"] for r in ranks]).mean()
    torch.testing.assert_close(mean_loss, ref["loss"])
    for r, result in enumerate(ranks):
        for key in ("g1", "g2"):
            torch.testing.assert_close(result["gather"][key] / WORLD, ref[key][r * b : (r + 1) * b])


def test_without_gather_the_ranks_see_other_negatives(ranks: list[dict[str, Any]]) -> None:
    ref = _run(True, _global_inputs())
    mean_loss = torch.stack([r["local"]["loss"] for r in ranks]).mean()
    assert not torch.allclose(mean_loss, ref["loss"], rtol=1e-4, atol=1e-6)
    grads = torch.cat([r["local"]["g1"] for r in ranks]) / WORLD
    assert not torch.allclose(grads, ref["g1"], rtol=1e-4, atol=1e-6)
