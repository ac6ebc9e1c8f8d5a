from __future__ import annotations

import pytest
import torch

from domainfm.core.grid import TokenGrid
from domainfm.core.masking import RandomMasking, keep_indices
from domainfm.core.objectives import OBJECTIVES
from domainfm.core.objectives.mae import MAE
from domainfm.core.objectives.mae_targets import NormalizedPixelTarget
from domainfm.core.registry import init_config
from domainfm.core.vit import VisionTransformerND


def reference_norm_pix_loss(
    pred: torch.Tensor, x: torch.Tensor, mask: torch.Tensor, patch: int
) -> torch.Tensor:
    """MAE's forward_loss (facebookresearch/mae), written out for a 3D single-patch-size grid."""
    b, c, d, h, w = x.shape
    p = patch
    # patchify exactly as the MAE reference does in 2D, extended to (d, h, w)
    t = x.reshape(b, c, d // p, p, h // p, p, w // p, p)
    t = torch.einsum("bcxiyjzk->bxyzijkc", t).reshape(b, (d // p) * (h // p) * (w // p), -1)
    mean = t.mean(dim=-1, keepdim=True)
    var = t.var(dim=-1, keepdim=True)
    t = (t - mean) / (var + 1.0e-6) ** 0.5
    loss = ((pred - t) ** 2).mean(dim=-1)
    return (loss * mask).sum() / mask.sum()


def setup(seed: int = 0) -> tuple:
    torch.manual_seed(seed)
    vit = VisionTransformerND(
        in_chans=2, spatial_dims=3, patch_size=8, embed_dim=32, depth=2, num_heads=4
    ).double()
    mae = MAE(
        embed_dim=32,
        in_chans=2,
        patch_size=(8, 8, 8),
        decoder_dim=32,
        decoder_depth=2,
        decoder_heads=4,
    ).double()
    x = torch.randn(3, 2, 16, 16, 16, dtype=torch.float64)
    grid = vit.token_grid(x.shape[2:])
    mask = RandomMasking(ratio=0.75)(grid, 3, generator=torch.Generator().manual_seed(seed))
    keep = keep_indices(mask)
    tokens, _ = vit.forward_tokens(x, keep)
    return vit, mae, x, grid, mask, keep, tokens[:, 1:]


def test_loss_equals_mae_reference() -> None:
    _, mae, x, grid, mask, keep, tokens = setup()
    out = mae(tokens, grid, keep, mask, x)
    pred = mae.reconstruct(tokens, grid, keep)
    ref = reference_norm_pix_loss(pred, x, mask.double(), patch=8)
    torch.testing.assert_close(out.loss.double(), ref)
    assert OBJECTIVES.get("mae") is MAE


def test_gradients_reach_encoder_and_only_through_visible_tokens() -> None:
    vit, mae, x, grid, mask, keep, tokens = setup(1)
    out = mae(tokens, grid, keep, mask, x)
    out.loss.backward()
    assert vit.patch_embed.proj.weight.grad is not None
    assert vit.patch_embed.proj.weight.grad.abs().sum() > 0
    assert mae.mask_token.grad is not None and mae.mask_token.grad.abs().sum() > 0


def test_decoder_places_visible_tokens_at_their_positions() -> None:
    _, mae, _x, grid, _mask, keep, tokens = setup(2)
    mae.eval()
    # move one visible token's content to another sample's slot: prediction changes
    out_a = mae.reconstruct(tokens, grid, keep)
    keep_b = keep.clone()
    keep_b[0, 0], keep_b[0, 1] = keep[0, 1], keep[0, 0]
    out_b = mae.reconstruct(tokens, grid, keep_b)
    assert not torch.allclose(out_a[0], out_b[0])
    torch.testing.assert_close(out_a[1:], out_b[1:])


class MeanTarget:
    """A custom target: the per-channel mean of each patch (e.g. a feature-style target)."""

    def out_dim(self, in_chans: int, patch_size: tuple[int, ...]) -> int:
        return in_chans

    def __call__(self, x: torch.Tensor, grid: TokenGrid) -> torch.Tensor:
        pixels = NormalizedPixelTarget(normalize=False)(x, grid)  # (B, N, P*C)
        return pixels.view(*pixels.shape[:2], -1, x.shape[1]).mean(dim=2)


def test_pluggable_target() -> None:
    torch.manual_seed(0)
    mae = MAE(
        embed_dim=32,
        in_chans=2,
        patch_size=(8, 8, 8),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
        target=MeanTarget(),
    )
    assert mae.decoder_pred.out_features == 2
    x = torch.randn(2, 2, 16, 16, 16)
    grid = TokenGrid.from_input(x.shape[2:], 8)
    mask = RandomMasking(ratio=0.5)(grid, 2)
    keep = keep_indices(mask)
    tokens = torch.randn(2, keep.shape[1], 32)
    out = mae(tokens, grid, keep, mask, x)
    pred = mae.reconstruct(tokens, grid, keep)
    target = MeanTarget()(x, grid)
    expected = ((pred - target) ** 2)[mask].mean()
    torch.testing.assert_close(out.loss, expected)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="decoder_dim=30 must be divisible by decoder_heads=4"):
        MAE(embed_dim=32, in_chans=1, patch_size=(8, 8), decoder_dim=30, decoder_heads=4)
    _, mae, x, grid, mask, keep, tokens = setup()
    with pytest.raises(ValueError, match="pass patch tokens without prefix"):
        mae(torch.cat([tokens[:, :1], tokens], dim=1), grid, keep, mask, x)
    other = TokenGrid.from_input((16, 16, 16), 4)
    with pytest.raises(ValueError, match="differs from MAE patch_size"):
        mae(tokens, other, keep, mask, x)


def test_ssast_infonce_term_equals_loop_reference() -> None:
    """The discriminative term: per sample and masked token i, -log softmax_j(c_i · t_j)[i]
    over that sample's masked tokens, written as explicit loops (SSAST eq. 2)."""
    torch.manual_seed(0)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=8, embed_dim=32, depth=2, num_heads=4
    ).double()
    mae = MAE(
        embed_dim=32,
        in_chans=1,
        patch_size=(8, 8),
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=4,
        infonce_weight=0.5,
    ).double()
    x = torch.randn(2, 1, 32, 48, dtype=torch.float64)
    grid = vit.token_grid(x.shape[2:])
    mask = RandomMasking(ratio=0.5)(grid, 2, generator=torch.Generator().manual_seed(1))
    keep = keep_indices(mask)
    tokens = vit.forward_tokens(x, keep)[0][:, 1:]
    out = mae(tokens, grid, keep, mask, x)
    features = mae.decode(tokens, grid, keep)
    target = NormalizedPixelTarget()(x, grid)  # (B, N, T)
    total, count = 0.0, 0
    for b in range(2):
        idx = mask[b].nonzero().flatten().tolist()
        codes = mae.decoder_disc(features[b, idx])
        for i in range(len(idx)):
            scores = torch.stack([codes[i] @ target[b, j] for j in idx])
            total = total - torch.log_softmax(scores, dim=0)[i]
            count += 1
    infonce = total / count
    got = out.terms["mae_infonce"].double()  # objectives compute in float32 at least
    torch.testing.assert_close(got, infonce.detach(), rtol=1e-5, atol=1e-6)
    expected = out.terms["mae"].double() + 0.5 * infonce.detach()
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="infonce_weight"):
        MAE(
            embed_dim=32,
            in_chans=1,
            patch_size=(8, 8),
            decoder_dim=32,
            decoder_heads=4,
            infonce_weight=-1.0,
        )


def test_decoder_sized_from_the_backbone() -> None:
    """Left out, embed_dim / in_chans / patch_size are the backbone's; the decoder is built
    by bind_backbone and the recorded kwargs (the recipe in checkpoints) name them."""
    vit = VisionTransformerND(
        in_chans=2, spatial_dims=3, patch_size=8, embed_dim=32, depth=1, num_heads=4
    )
    mae = MAE(decoder_dim=16, decoder_depth=1, decoder_heads=4)
    assert not any(True for _ in mae.parameters())
    with pytest.raises(RuntimeError, match="bind_backbone"):
        mae.reconstruct(torch.zeros(1, 2, 32), vit.token_grid((16, 16, 16)), torch.zeros(1, 2))
    mae.bind_backbone(vit)
    assert (mae.embed_dim, mae.in_chans, mae.patch_size) == (32, 2, (8, 8, 8))
    assert mae.decoder_embed.in_features == 32
    assert mae.decoder_pred.out_features == 2 * 8**3
    kwargs = init_config(mae)["kwargs"]
    assert (kwargs["embed_dim"], kwargs["in_chans"], kwargs["patch_size"]) == (32, 2, (8, 8, 8))
    explicit = MAE(
        embed_dim=32,
        in_chans=2,
        patch_size=(8, 8, 8),
        decoder_dim=16,
        decoder_depth=1,
        decoder_heads=4,
    )
    assert explicit.state_dict().keys() == mae.state_dict().keys()
    params = dict(explicit.named_parameters())
    mae.bind_backbone(vit)  # binding again: checks only, the decoder is kept
    assert all(p is params[n] for n, p in explicit.named_parameters())


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"embed_dim": 64}, r"MAE embed_dim 64 differs from the backbone's 32"),
        ({"in_chans": 1}, r"MAE in_chans 1 differs from the backbone's 2"),
        ({"patch_size": (4, 4, 4)}, r"MAE patch_size \(4, 4, 4\) differs from the backbone's"),
    ],
)
def test_explicit_sizes_are_checked_against_the_backbone(given: dict, message: str) -> None:
    vit = VisionTransformerND(
        in_chans=2, spatial_dims=3, patch_size=8, embed_dim=32, depth=1, num_heads=4
    )
    with pytest.raises(ValueError, match=message):
        MAE(decoder_dim=16, decoder_heads=4, **given).bind_backbone(vit)
    MAE(decoder_dim=16, decoder_heads=4, embed_dim=32, patch_size=(8, 8, 8)).bind_backbone(vit)


def test_size_missing_from_the_backbone_must_be_given() -> None:
    class Tokens(torch.nn.Module):  # a backbone without in_chans
        embed_dim = 8
        patch_size = (4, 4)

    with pytest.raises(ValueError, match="give in_chans explicitly"):
        MAE(decoder_dim=8, decoder_heads=2).bind_backbone(Tokens())
    mae = MAE(in_chans=3, decoder_dim=8, decoder_heads=2)
    mae.bind_backbone(Tokens())
    assert mae.decoder_pred.out_features == 3 * 16


def _released_mae_2d_table(grid: tuple[int, int], dim: int) -> torch.Tensor:
    """He et al.'s released 2D sin-cos table (models_mae / util/pos_embed.py), written from
    its description: ``meshgrid(w, h)`` so the first half of the channels encodes the column,
    the second half the row; each half is ``[sin(p ω), cos(p ω)]`` with
    ``ω_k = 1 / 10000^(k / (D/4))``."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)

    def half(p: torch.Tensor) -> torch.Tensor:
        angles = p.reshape(-1).double()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([half(cols), half(rows)], dim=1).float()


def test_decoder_with_class_token_and_released_table_matches_the_released_decoder() -> None:
    """``decoder_prefix_tokens=1`` + ``decoder_pos_reverse_axes``: the decoder of He et al.'s
    released code (class token through the decoder at a zero position, then dropped)."""
    torch.manual_seed(0)
    mae = MAE(
        embed_dim=16,
        in_chans=3,
        patch_size=(4, 4),
        decoder_dim=8,
        decoder_depth=2,
        decoder_heads=2,
        decoder_prefix_tokens=1,
        decoder_pos_reverse_axes=True,
    ).eval()
    grid = TokenGrid(shape=(2, 3), patch_size=(4, 4), axes=("h", "w"))
    keep = torch.tensor([[4, 0, 2], [1, 5, 3]])
    tokens = torch.randn(2, 1 + 3, 16)  # class token first
    # the released decoder, step by step
    x = mae.decoder_embed(tokens)
    cls, vis = x[:, :1], x[:, 1:]
    full = mae.mask_token.expand(2, 6, 8).clone()
    for b in range(2):
        full[b, keep[b]] = vis[b]
    table = torch.cat([torch.zeros(1, 8), _released_mae_2d_table((2, 3), 8)])[None]
    seq = torch.cat([cls, full], dim=1) + table
    for block in mae.decoder_blocks:
        seq = block(seq)
    expected = mae.decoder_pred(mae.decoder_norm(seq))[:, 1:]
    with torch.no_grad():
        torch.testing.assert_close(mae.reconstruct(tokens, grid, keep), expected)
    with pytest.raises(ValueError, match="1 prefix"):
        mae.reconstruct(tokens[:, 1:], grid, keep)
