"""I-JEPA against a loop reference written from the paper (float64: loss and gradients), its
stop-gradient into the target encoder, and its errors."""

from __future__ import annotations

import pytest
import torch

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.jepa_masking import JEPAMasks, MultiBlockMasking
from domainfm.core.objectives import IJEPA, OBJECTIVES, ParallelMode
from domainfm.core.pos_embed import sincos_pos_embed
from domainfm.core.registry import init_config
from domainfm.core.vit import VisionTransformerND

SHAPES = {2: (32, 48), 3: (24, 24, 24)}  # 4 x 6 and 3 x 3 x 3 grids of 8-patches


def _setup(spatial_dims: int, class_token: bool) -> tuple[VisionTransformerND, IJEPA, torch.Tensor]:
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=2,
        spatial_dims=spatial_dims,
        patch_size=8,
        embed_dim=16,
        depth=2,
        num_heads=2,
        class_token=class_token,
        global_pool="token" if class_token else "avg",
    )
    ijepa = IJEPA(predictor_dim=12, predictor_depth=2, predictor_heads=3, min_context=2)
    ijepa.bind_backbone(vit)
    vit.double()
    ijepa.double()
    with torch.no_grad():  # a target encoder that is not the context encoder
        for p in ijepa.target_encoder.parameters():  # type: ignore[union-attr]
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(3, 2, *SHAPES[spatial_dims], dtype=torch.float64)
    return vit, ijepa, x


def _masks(vit: VisionTransformerND, x: torch.Tensor, ijepa: IJEPA) -> JEPAMasks:
    grid = vit.token_grid(x.shape[2:])
    return ijepa.masking(grid, x.shape[0], torch.Generator().manual_seed(1))


def _reference(
    vit: VisionTransformerND, ijepa: IJEPA, x: torch.Tensor, masks: JEPAMasks
) -> tuple[torch.Tensor, set[str]]:
    """The paper's loss with the official code's distance, sample by sample, block by block,
    token by token: ``(1 / #) Σ_b Σ_i Σ_{j ∈ B_i} Σ_d smoothL1(ŝ_yj - s_yj)_d``; and which
    branches of the smooth L1 were taken."""
    teacher = ijepa.target_encoder.teacher  # type: ignore[union-attr]
    predictor = ijepa.predictor
    prefix = vit.num_prefix_tokens
    total = torch.zeros((), dtype=torch.float64)
    count = 0
    branches = set()
    for b in range(x.shape[0]):
        context_idx = masks.context[b]
        tokens, grid = vit.forward_tokens(x[b : b + 1], context_idx[None])  # context encoder
        s_x = tokens[0, prefix:]  # (Kc, D)
        with torch.no_grad():  # target encoder on the full input, stop-gradient
            full, _ = teacher.forward_tokens(x[b : b + 1])
        full = full[0, prefix:]  # (N, D)
        table = sincos_pos_embed(grid.shape, 12).double()  # (N, Dp)
        for block in masks.targets[b]:
            sequence = [predictor.embed(s_x[k]) + table[int(j)] for k, j in enumerate(context_idx)]
            sequence += [predictor.mask_token[0, 0] + table[int(j)] for j in block]
            h = torch.stack(sequence)[None]  # (1, Kc + Kt, Dp)
            for layer in predictor.blocks:
                h = layer(h)
            predictions = predictor.proj(predictor.norm(h[0, len(context_idx) :]))  # (Kt, D)
            for prediction, j in zip(predictions, block, strict=True):
                s = full[int(j)]
                target = (s - s.mean()) / torch.sqrt(((s - s.mean()) ** 2).mean() + 1e-5)
                for diff in prediction - target:  # smooth L1 with beta 1, channel by channel
                    quadratic = bool(diff.abs() < 1)
                    total = total + (0.5 * diff**2 if quadratic else diff.abs() - 0.5)
                    branches.add("quadratic" if quadratic else "linear")
                    count += 1
    return total / count, branches


def _grads(*modules: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {
        f"{i}.{name}": p.grad.clone()
        for i, module in enumerate(modules)
        for name, p in module.named_parameters()
        if p.grad is not None
    }


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("class_token", [False, True])
def test_loss_and_gradients_match_the_loop_reference(spatial_dims: int, class_token: bool) -> None:
    vit, ijepa, x = _setup(spatial_dims, class_token)
    masks = _masks(vit, x, ijepa)
    assert masks.targets.shape[1] == 4 and masks.context.shape[1] > 2

    out = ijepa(vit, x, masks)
    out.loss.backward()
    got = _grads(vit, ijepa)
    vit.zero_grad(set_to_none=True)
    ijepa.zero_grad(set_to_none=True)

    expected_loss, branches = _reference(vit, ijepa, x, masks)
    assert branches == {"quadratic", "linear"}
    expected_loss.backward()
    expected = _grads(vit, ijepa)

    torch.testing.assert_close(out.loss, expected_loss, rtol=1e-10, atol=1e-12)
    assert got.keys() == expected.keys()
    assert any(key.startswith("0.") for key in got) and any(key.startswith("1.") for key in got)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-8, atol=1e-12, msg=key)
    assert not any("target_encoder" in key for key in got), "gradient into the target encoder"


def test_no_gradient_reaches_the_target_encoder_even_when_trainable() -> None:
    """The targets are under a stop-gradient, not only frozen: made trainable (e.g. by a
    ``requires_grad_(True)`` over the whole module), the target encoder still gets none."""
    vit, ijepa, x = _setup(2, class_token=False)
    target = ijepa.target_encoder
    assert target is not None and not any(p.requires_grad for p in target.parameters())
    target.requires_grad_(True)
    ijepa(vit, x, _masks(vit, x, ijepa)).loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert vit.patch_embed.proj.weight.grad is not None


def test_the_loss_of_a_perfect_prediction_is_zero() -> None:
    """Sanity of the distance: predictions equal to the layer-normed targets cost nothing."""
    vit, ijepa, x = _setup(3, class_token=False)
    masks = _masks(vit, x, ijepa)
    targets = ijepa.targets(x, masks.targets)
    assert targets.shape == (*masks.targets.shape, 16)
    torch.testing.assert_close(targets.mean(-1), torch.zeros_like(targets[..., 0]))
    ijepa.predictor.forward = lambda *args: targets  # type: ignore[method-assign]
    assert float(ijepa(vit, x, masks).loss) == 0.0


def test_forward_batch_draws_blocks_on_the_backbone_grid() -> None:
    vit, ijepa, x = _setup(2, class_token=True)
    torch.manual_seed(5)
    first = ijepa.forward_batch(BatchFeatures(vit, {"input": x}))
    torch.manual_seed(5)
    masks = ijepa.masking(vit.token_grid(x.shape[2:]), x.shape[0])
    torch.manual_seed(5)
    again = ijepa.forward_batch(BatchFeatures(vit, {"input": x}))
    losses = [first.loss, again.loss, ijepa(vit, x, masks).loss]
    assert len({float(loss.detach()) for loss in losses}) == 1
    other = IJEPA(predictor_dim=12, predictor_depth=1, predictor_heads=3, key="view1")
    other.bind_backbone(vit)
    other.double()
    assert other.forward_batch(BatchFeatures(vit, {"view1": x})).loss.ndim == 0


def test_update_target_is_an_ema_of_the_backbone() -> None:
    vit, ijepa, _ = _setup(2, class_token=False)
    target = ijepa.target_encoder
    assert target is not None
    before = {n: p.clone() for n, p in target.teacher.named_parameters()}
    ijepa.update_target(vit, momentum=0.9)
    for name, p in target.teacher.named_parameters():
        student = dict(vit.named_parameters())[name]
        torch.testing.assert_close(p, 0.9 * before[name] + 0.1 * student)


def test_registered_sized_from_the_backbone_and_recorded() -> None:
    assert OBJECTIVES.get("ijepa") is IJEPA and IJEPA.parallel_mode is ParallelMode.LOCAL
    ijepa = IJEPA(predictor_dim=12, predictor_depth=1, predictor_heads=3, num_targets=2)
    with pytest.raises(RuntimeError, match="bind_backbone"):
        ijepa.update_target(torch.nn.Linear(1, 1), 0.5)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=8, embed_dim=16, depth=1, num_heads=2
    )
    ijepa.bind_backbone(vit)
    ijepa.bind_backbone(vit)  # once: the target encoder is not copied again
    assert ijepa.predictor.proj.out_features == 16 and ijepa.masking.num_targets == 2
    kwargs = init_config(ijepa)["kwargs"]
    assert kwargs["embed_dim"] == 16 and kwargs["num_targets"] == 2
    assert kwargs["target_scale"] == (0.15, 0.2)
    assert isinstance(ijepa.masking, MultiBlockMasking)
    with pytest.raises(ValueError, match="embed_dim"):
        IJEPA(embed_dim=8, predictor_dim=12, predictor_heads=3).bind_backbone(vit)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        IJEPA(predictor_dim=10, predictor_heads=3)
    with pytest.raises(ValueError, match="target_scale"):
        IJEPA(target_scale=(0.5, 0.1))
    vit, ijepa, x = _setup(2, class_token=False)
    masks = _masks(vit, x, ijepa)
    with pytest.raises(ValueError, match="masks must be"):
        ijepa(vit, x[:2], masks)
    with pytest.raises(ValueError, match="masks must be"):
        ijepa(vit, x, JEPAMasks(context=masks.context, targets=masks.targets[:, 0]))
