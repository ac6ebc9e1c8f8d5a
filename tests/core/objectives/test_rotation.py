"""Rotation prediction against a plain cross-entropy of a linear head, plus behaviour."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.objectives.base import BatchObjective, ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.rotation import RotationPrediction
from domainfm.core.vit import VisionTransformerND


def _vit() -> VisionTransformerND:
    return VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )


def _batch(b: int = 4, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "view1": torch.randn(b, 1, 16, 16, 16, generator=g),
        "view2": torch.randn(b, 1, 16, 16, 16, generator=g),
        "rot1": torch.randint(0, 4, (b,), generator=g),
        "rot2": torch.randint(0, 4, (b,), generator=g),
    }


def reference_loss(z_views: list[Tensor], labels: list[Tensor], w: Tensor, bias: Tensor) -> Tensor:
    """Mean over views of mean_b -log softmax(W z_b + bias)[y_b], written out per sample."""
    per_view = []
    for z, y in zip(z_views, labels, strict=True):
        terms = []
        for b in range(z.shape[0]):
            logits = [(w[k] * z[b]).sum() + bias[k] for k in range(w.shape[0])]
            log_norm = torch.log(sum(torch.exp(v) for v in logits))
            terms.append(log_norm - logits[int(y[b])])
        per_view.append(torch.stack(terms).mean())
    return torch.stack(per_view).mean()


def test_matches_cross_entropy_of_a_linear_head() -> None:
    torch.manual_seed(0)
    vit, rotation = _vit(), RotationPrediction(embed_dim=32)
    batch = _batch()
    out = rotation.forward_batch(BatchFeatures(vit, batch))

    z1, z2 = vit(batch["view1"]), vit(batch["view2"])
    w, bias = rotation.head.weight, rotation.head.bias
    expected = reference_loss([z1, z2], [batch["rot1"], batch["rot2"]], w, bias)
    torch.testing.assert_close(out.loss, expected)

    grads = torch.autograd.grad(out.loss, [w, bias, vit.patch_embed.proj.weight])
    ref_grads = torch.autograd.grad(expected, [w, bias, vit.patch_embed.proj.weight])
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want)
    assert float(grads[2].abs().sum()) > 0  # the loss trains the encoder


def test_each_view_is_scored_against_its_own_labels() -> None:
    """Embeddings that encode each view's label: the identity head classifies them all
    correctly; scoring a view against the other view's labels does not."""

    class OneHot(torch.nn.Module):  # pooled embedding = 10 * one-hot of the voxel value
        patch_size = (1,)

        def forward(self, x: Tensor) -> Tensor:
            return 10.0 * torch.nn.functional.one_hot(x[:, 0, 0].long(), 4).float()

    rot1, rot2 = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 0, 1, 2])
    batch = {
        "view1": rot1.float()[:, None, None],  # (B, C=1, L=1)
        "view2": rot2.float()[:, None, None],
        "rot1": rot1,
        "rot2": rot2,
    }
    rotation = RotationPrediction(embed_dim=4)
    with torch.no_grad():
        rotation.head.weight.copy_(torch.eye(4))
        rotation.head.bias.zero_()
    out = rotation.forward_batch(BatchFeatures(OneHot(), batch))
    assert float(out.terms["acc"]) == 1.0
    assert float(out.loss.detach()) < 1e-3
    swapped = RotationPrediction(embed_dim=4, labels=("rot2", "rot1"))
    swapped.load_state_dict(rotation.state_dict())
    out = swapped.forward_batch(BatchFeatures(OneHot(), batch))
    assert float(out.terms["acc"]) == 0.0
    assert float(out.loss.detach()) > 5.0


def test_protocol_registry_and_terms() -> None:
    rotation = RotationPrediction(embed_dim=32)
    assert isinstance(rotation, BatchObjective)
    assert RotationPrediction.parallel_mode is ParallelMode.LOCAL
    assert OBJECTIVES.get("rotation") is RotationPrediction
    out = rotation.forward_batch(BatchFeatures(_vit(), _batch()))
    assert set(out.terms) == {"rotation", "acc"}
    assert 0.0 <= float(out.terms["acc"]) <= 1.0


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes=1"):
        RotationPrediction(embed_dim=8, num_classes=1)
    with pytest.raises(ValueError, match="same length"):
        RotationPrediction(embed_dim=8, views=("view1",), labels=("rot1", "rot2"))
    with pytest.raises(ValueError, match="views"):
        RotationPrediction(embed_dim=8, views=(), labels=())
    batch = _batch()
    batch["rot2"] = batch["rot2"][:2]
    with pytest.raises(ValueError, match="rot2"):
        RotationPrediction(embed_dim=32).forward_batch(BatchFeatures(_vit(), batch))


def test_embed_dim_from_the_backbone() -> None:
    rotation = RotationPrediction()
    rotation.bind_backbone(_vit())
    assert rotation.head.in_features == 32
    with pytest.raises(ValueError, match="RotationPrediction embed_dim 16 differs"):
        RotationPrediction(embed_dim=16).bind_backbone(_vit())
