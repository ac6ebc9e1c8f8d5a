"""VoCo against a loop-by-loop transcription of the official code (Luffy03/VoCo,
``models/voco_head.py``: per-instance head, ``online_assign``, ``ce_loss``,
``regularization_loss``; ``voco_train.py``: ``loss = pos + neg + b_loss``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives import VoCo
from domainfm.core.objectives.base import BatchObjective, ObjectiveOutput, ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.voco import prediction_loss
from domainfm.core.vit import VisionTransformerND
from domainfm.tasks.pretrain_module import PretrainModule


def reference_head(voco: VoCo, x: Tensor) -> Tensor:
    """The official projection head, its BatchNorm (no affine, no running stats) applied to
    one instance's rows ``(N, D)`` at a time, written out with the module's weights."""
    lin1, _, _, lin2, _, _, lin3 = voco.head
    h = x
    for lin in (lin1, lin2):
        h = h @ lin.weight.T + lin.bias
        mean = h.mean(dim=0)
        var = ((h - mean) ** 2).mean(dim=0)
        h = torch.relu((h - mean) / torch.sqrt(var + 1e-5))
    return h @ lin3.weight.T + lin3.bias


def reference_voco(voco: VoCo, crops: Tensor, base: Tensor, overlap: Tensor) -> Tensor:
    """pos + neg + reg_weight * reg, averaged over the batch, loop by loop."""
    batch, r = crops.shape[:2]
    k = base.shape[1]
    pos_all, neg_all, reg_all = 0.0, 0.0, 0.0
    for b in range(batch):
        z = reference_head(voco, torch.cat([crops[b], base[b]]))
        feats, bases = z[:r], z[r:]

        # online_assign: relu of cosine similarity of each crop to every base crop, with the
        # EMA teacher replaced by the detached student
        def online_assign(x: Tensor, q: Tensor) -> Tensor:
            return torch.stack(
                [F.relu(F.cosine_similarity(x[i][None], q, dim=1)) for i in range(r)]
            )

        logits = online_assign(feats, bases.detach())
        if not voco.stop_grad_bases:
            logits = (logits + online_assign(feats.detach(), bases)) * 0.5
        # ce_loss
        labels = overlap[b]
        pos_dis = torch.abs(labels - logits)
        pos = (-labels * torch.log(1 - pos_dis + 1e-6)).sum() / (labels.sum() + 1e-6)
        neg_lab = (labels == 0).long()
        neg = (neg_lab * logits**2).sum() / (neg_lab.sum() + 1e-6)
        # regularization_loss
        reg, num = 0.0, 0
        for i in range(k - 1):
            for j in range(i + 1, k):
                num += 1
                simi = F.cosine_similarity(bases[i][None], bases[j][None].detach(), dim=1)
                reg = reg + F.relu(simi) ** 2
        pos_all, neg_all, reg_all = pos_all + pos, neg_all + neg, reg_all + reg / num
    return (pos_all + neg_all) / batch + voco.reg_weight * (reg_all / batch).sum()


def _overlap(batch: int, r: int, k: int, gen: torch.Generator) -> Tensor:
    """Rows that sum to 1 with some exact zeros, like real crop overlaps."""
    y = torch.rand(batch, r, k, generator=gen, dtype=torch.float64)
    y = torch.where(y < 0.4, torch.zeros_like(y), y)
    y[..., 0] += 0.1  # no empty row
    return y / y.sum(dim=-1, keepdim=True)


def _inputs(batch: int = 3, r: int = 4, k: int = 6, d: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    crops = torch.randn(batch, r, d, generator=gen, dtype=torch.float64)
    base = torch.randn(batch, k, d, generator=gen, dtype=torch.float64)
    return crops, base, _overlap(batch, r, k, gen)


def _voco(d: int = 16, **kwargs: object) -> VoCo:
    torch.manual_seed(0)
    return VoCo(embed_dim=d, hidden_dim=32, out_dim=24, **kwargs).double()  # type: ignore[arg-type]


@pytest.mark.parametrize("stop_grad_bases", [True, False])
@pytest.mark.parametrize("reg_weight", [1.0, 0.3])
def test_matches_official_code_loss_and_grads(stop_grad_bases: bool, reg_weight: float) -> None:
    voco = _voco(stop_grad_bases=stop_grad_bases, reg_weight=reg_weight)
    crops, base, overlap = _inputs()
    a_crops, a_base = crops.clone().requires_grad_(), base.clone().requires_grad_()
    r_crops, r_base = crops.clone().requires_grad_(), base.clone().requires_grad_()

    out = voco(a_crops, a_base, overlap)
    expected = reference_voco(voco, r_crops, r_base, overlap)

    assert isinstance(out, ObjectiveOutput)
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(out.loss, out.terms["pred"] + reg_weight * out.terms["reg"])
    torch.testing.assert_close(out.terms["pred"], out.terms["pos"] + out.terms["neg"])
    (grad_crops, grad_base) = torch.autograd.grad(out.loss, (a_crops, a_base))
    (ref_crops, ref_base) = torch.autograd.grad(expected, (r_crops, r_base))
    torch.testing.assert_close(grad_crops, ref_crops)
    torch.testing.assert_close(grad_base, ref_base)


def test_loss_is_per_sample() -> None:
    """LOCAL: the batch loss is the mean of the samples' losses (head norm per sample)."""
    voco = _voco()
    crops, base, overlap = _inputs(batch=4)
    whole = voco(crops, base, overlap).loss
    single = [voco(crops[b : b + 1], base[b : b + 1], overlap[b : b + 1]).loss for b in range(4)]
    torch.testing.assert_close(whole, torch.stack(single).mean())


def test_exact_logits_beat_shuffled_logits() -> None:
    gen = torch.Generator().manual_seed(1)
    overlap = _overlap(8, 4, 6, gen)
    pos, neg = prediction_loss(overlap, overlap)
    assert float((pos + neg).max()) < 1e-5  # log(1 + eps) only
    shuffled = overlap[:, :, torch.randperm(6, generator=gen)]
    s_pos, s_neg = prediction_loss(shuffled, overlap)
    assert bool(((s_pos + s_neg) > 0.05).all())
    # a logit farther from its label costs more
    worse = prediction_loss((overlap + 0.3).clamp(max=1.0), overlap)
    closer = prediction_loss((overlap + 0.1).clamp(max=1.0), overlap)
    assert bool((worse[0] + worse[1] > closer[0] + closer[1]).all())


def test_regularizer_pushes_base_crops_apart() -> None:
    """Identical base embeddings give reg = 1; after a few steps on reg alone it drops."""
    voco = _voco(reg_weight=1.0)
    crops, base, overlap = _inputs(batch=2)
    same = base[:, :1].expand_as(base).clone()
    same = same + 1e-3 * torch.randn_like(same)
    same.requires_grad_()
    optimizer = torch.optim.SGD([same], lr=1.0)
    first = None
    for _ in range(20):
        reg = voco(crops, same, overlap).terms["reg"]
        first = float(reg.detach()) if first is None else first
        optimizer.zero_grad()
        reg.backward()
        optimizer.step()
    assert first is not None and first > 0.5
    with torch.no_grad():
        assert float(voco(crops, same, overlap).terms["reg"]) < 0.5 * first


def test_float32_under_bf16_autocast() -> None:
    voco = _voco().float()
    crops, base, overlap = (t.float() for t in _inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = voco(crops.bfloat16(), base.bfloat16(), overlap)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def _batch(spatial: tuple[int, ...], b: int = 2, r: int = 3, k: int = 4) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(2)
    return {
        "input": torch.randn(b, 1, *spatial, generator=gen),
        "voco_base": torch.randn(b, k, 1, *spatial, generator=gen),
        "voco_crops": torch.randn(b, r, 1, *spatial, generator=gen),
        "voco_overlap": _overlap(b, r, k, gen).float(),
    }


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradients_reach_the_backbone_through_pretrain_module(spatial_dims: int) -> None:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=spatial_dims, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )
    voco = VoCo(embed_dim=32, hidden_dim=64, out_dim=32)
    assert isinstance(voco, BatchObjective)
    module = PretrainModule(backbone=vit, objectives={"voco": voco})
    assert len(module.projectors) == 0  # VoCo owns its head
    batch = _batch((16,) * spatial_dims)
    loss, logs = module.compute_losses(batch)
    assert {"voco", "voco/pred", "voco/pos", "voco/neg", "voco/reg"} <= set(logs)
    loss.backward()
    for param in (vit.patch_embed.proj.weight, voco.head[0].weight, voco.head[-1].weight):
        assert param.grad is not None and torch.isfinite(param.grad).all()
        assert float(param.grad.abs().sum()) > 0
    # forward_batch equals forward on the pooled embeddings
    with torch.no_grad():
        features = BatchFeatures(vit, batch)
        direct = voco(
            features.pooled("voco_crops"), features.pooled("voco_base"), batch["voco_overlap"]
        )
        torch.testing.assert_close(voco.forward_batch(BatchFeatures(vit, batch)).loss, direct.loss)


def test_metadata_and_bad_arguments() -> None:
    assert VoCo.parallel_mode is ParallelMode.LOCAL
    assert OBJECTIVES.get("voco") is VoCo
    with pytest.raises(ValueError, match="embed_dim=0"):
        VoCo(embed_dim=0)
    with pytest.raises(ValueError, match="reg_weight=-1"):
        VoCo(embed_dim=8, reg_weight=-1.0)
    voco = VoCo(embed_dim=8, hidden_dim=8, out_dim=8)
    with pytest.raises(ValueError, match="overlap must be"):
        voco(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.rand(2, 4, 3))
    with pytest.raises(ValueError, match="at least 2 base crops"):
        voco(torch.randn(2, 3, 8), torch.randn(2, 1, 8), torch.rand(2, 3, 1))
    with pytest.raises(ValueError, match="crops and base"):
        voco(torch.randn(2, 3, 8), torch.randn(2, 4, 7), torch.rand(2, 3, 4))
    with pytest.raises(KeyError, match="voco_base"):
        vit = VisionTransformerND(
            in_chans=1, spatial_dims=2, patch_size=8, embed_dim=8, depth=1, num_heads=2
        )
        voco.forward_batch(BatchFeatures(vit, {"voco_crops": torch.randn(1, 2, 1, 8, 8)}))


def test_embed_dim_from_the_backbone() -> None:
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=8, embed_dim=16, depth=1, num_heads=2
    )
    voco = VoCo(hidden_dim=8, out_dim=8)
    with pytest.raises(RuntimeError, match="bind_backbone"):
        voco(torch.zeros(1, 2, 16), torch.zeros(1, 2, 16), torch.zeros(1, 2, 2))
    PretrainModule(backbone=vit, objectives={"voco": voco})
    assert voco.head[0].in_features == 16
    with pytest.raises(ValueError, match="VoCo embed_dim 32 differs from the backbone's 16"):
        VoCo(embed_dim=32).bind_backbone(vit)
