"""SparK against loop references written from the paper (Tian et al. 2023, arXiv:2301.03580):
the masked normalized-pixel loss, and the sparse (re-masked) encoding; plus behaviour.

SparK is ``ParallelMode.LOCAL`` (a mean of per-sample terms, nothing gathered), so it has no
2-process test."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor, nn

from domainfm.core.batch_features import BatchFeatures
from domainfm.core.grid import TokenGrid
from domainfm.core.masking import RandomMasking, num_masked
from domainfm.core.multiscale import MultiScaleBackbone
from domainfm.core.objectives.base import BatchObjective, ParallelMode
from domainfm.core.objectives.registry import OBJECTIVES
from domainfm.core.objectives.spark import SparK
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.geospatial.timm_cnn import TimmCNN
from domainfm.domains.medical3d.cnn import SegResNetEncoder3D
from domainfm.domains.medical3d.swin import SwinViT3D


class ThreeStageCNN(MultiScaleBackbone):
    """Three conv stages with biases at strides 1, 2, 4 (a stage = conv [+ conv])."""

    def __init__(self, *, in_chans: int = 2, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.spatial_dims = spatial_dims
        self.in_chans = in_chans
        self.stages = nn.ModuleList(
            [
                conv(in_chans, 4, 3, padding=1),
                nn.Sequential(
                    conv(4, 6, 3, stride=2, padding=1), nn.GELU(), conv(6, 6, 3, padding=1)
                ),
                nn.Sequential(conv(6, 8, 3, stride=2, padding=1), nn.GELU()),
            ]
        )
        self.feature_channels, self.feature_strides = (4, 6, 8), (1, 2, 4)
        self.embed_dim, self.patch_size = 8, (4,) * spatial_dims

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def stage_modules(self) -> list[nn.Module]:
        return list(self.stages)


def _cells(grid: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Grid positions in C order (the order of the mask's ``N`` axis)."""
    return list(itertools.product(*(range(g) for g in grid)))


def _region(cell: tuple[int, ...], patch: int) -> tuple[slice, ...]:
    return tuple(slice(i * patch, (i + 1) * patch) for i in cell)


def reference_loss(pred: Tensor, x: Tensor, mask: Tensor, patch: int) -> Tensor:
    """The paper's loss, one sample and one patch at a time: the patch's values of every
    channel normalized by their mean and unbiased variance (+1e-6), the mean squared error
    of the prediction, averaged over the hidden patches only."""
    grid = tuple(s // patch for s in x.shape[2:])
    total, count = pred.new_zeros(()), 0
    for b in range(x.shape[0]):
        for n, cell in enumerate(_cells(grid)):
            if not bool(mask[b, n]):
                continue
            region = (b, slice(None), *_region(cell, patch))
            t = x[region].reshape(-1)
            t = (t - t.mean()) / torch.sqrt(t.var() + 1e-6)
            total = total + ((pred[region].reshape(-1) - t) ** 2).mean()
            count += 1
    return total / count


def reference_encode(backbone: ThreeStageCNN, x: Tensor, mask: Tensor) -> list[Tensor]:
    """Sparse encoding by hand: the input and every stage's output multiplied, voxel by voxel,
    by 1 where the voxel's grid cell is visible and 0 where it is hidden."""

    def keep(t: Tensor) -> Tensor:
        stride = x.shape[2] // t.shape[2]
        out = t.clone()
        grid = tuple(s // 4 for s in x.shape[2:])
        for b in range(t.shape[0]):
            for n, cell in enumerate(_cells(grid)):
                if bool(mask[b, n]):
                    out[(b, slice(None), *_region(cell, 4 // stride))] = 0.0
        return out

    maps, h = [], keep(x)
    for stage in backbone.stages:
        h = keep(stage(h))
        maps.append(h)
    return maps


def _mask(x: Tensor, patch: int, *, ratio: float = 0.6, seed: int = 0) -> Tensor:
    """A random hidden mask ``(B, N)`` on the patch grid of ``x``."""
    grid = TokenGrid.from_input(x.shape[2:], patch)
    return RandomMasking(ratio=ratio)(grid, x.shape[0], torch.Generator().manual_seed(seed))


def _sized(backbone: nn.Module, **kwargs: object) -> SparK:
    spark = SparK(decoder_width=32, **kwargs)  # type: ignore[arg-type]
    spark.bind_backbone(backbone)
    return spark


# -- the loss ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "patch"), [((3, 2, 8, 12), 4), ((2, 1, 8, 8, 4), 4)], ids=["2d", "3d"]
)
def test_masked_loss_matches_the_loop_reference(shape: tuple[int, ...], patch: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape, dtype=torch.float64)
    pred = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    mask = _mask(x, patch)
    spark = SparK(
        in_chans=shape[1],
        patch_size=(patch,) * (len(shape) - 2),
        feature_channels=(8,),
        feature_strides=(patch,),
        decoder_width=16,
    )
    got = spark.masked_loss(pred, x, mask)
    want = reference_loss(pred, x, mask, patch)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)
    (g_got,) = torch.autograd.grad(got, pred)
    (g_want,) = torch.autograd.grad(want, pred)
    torch.testing.assert_close(g_got, g_want)
    grid = TokenGrid.from_input(x.shape[2:], patch)
    visible = (~mask).view(x.shape[0], *grid.shape)
    visible = visible.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    if x.ndim == 5:
        visible = visible.repeat_interleave(patch, 3)
    assert bool((g_got.abs().sum(dim=1)[visible] == 0).all()), "visible patches carry no loss"


@pytest.mark.parametrize("kind", ["timm", "segresnet"])
def test_loss_and_gradients_match_the_reference_through_the_network(kind: str) -> None:
    """The objective's loss equals the loop reference on its own reconstruction, with the
    same gradients for the encoder, the densify layers and the decoder (float64)."""
    torch.manual_seed(0)
    if kind == "timm":
        backbone: nn.Module = TimmCNN(model_name="resnet18", in_chans=3).double()
        x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    else:
        backbone = SegResNetEncoder3D(
            in_chans=1, init_filters=4, blocks_down=(1, 1, 1), norm="instance"
        )
        backbone = backbone.double()
        x = torch.randn(2, 1, 16, 16, 8, dtype=torch.float64)
    spark = _sized(backbone).double()
    patch = spark.patch_size[0]  # type: ignore[index]
    mask = _mask(x, patch)
    out = spark(backbone, x, mask)
    want = reference_loss(spark.reconstruct(backbone, x, mask), x, mask, patch)
    torch.testing.assert_close(out.loss, want)
    params = [p for p in [*backbone.parameters(), *spark.parameters()] if p.requires_grad]
    grads = torch.autograd.grad(out.loss, params, allow_unused=True)
    wants = torch.autograd.grad(want, params, allow_unused=True)
    for got, expected in zip(grads, wants, strict=True):
        if expected is None:
            assert got is None
        else:
            torch.testing.assert_close(got, expected)
    assert grads[0] is not None and float(grads[0].abs().sum()) > 0  # the encoder learns


# -- the sparse encoding -----------------------------------------------------------------
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_encode_matches_the_stagewise_reference(spatial_dims: int) -> None:
    torch.manual_seed(0)
    cnn = ThreeStageCNN(spatial_dims=spatial_dims).double()
    spark = _sized(cnn).double()
    x = torch.randn(2, 2, *(16, 8, 8)[:spatial_dims], dtype=torch.float64)
    mask = _mask(x, 4)
    for got, want in zip(spark.encode(cnn, x, mask), reference_encode(cnn, x, mask), strict=True):
        torch.testing.assert_close(got, want)


def _backbone(kind: str) -> tuple[nn.Module, Tensor]:
    if kind == "toy":
        return ThreeStageCNN(), torch.randn(2, 2, 16, 16)
    if kind == "resnet18":
        return TimmCNN(model_name="resnet18", in_chans=3), torch.randn(2, 3, 64, 64)
    if kind == "convnext":
        convnext = TimmCNN(model_name="convnext_atto", in_chans=3)
        for name, param in convnext.named_parameters():
            if name.endswith(".gamma"):  # layer scale 1e-6 at init would hide any leak
                nn.init.ones_(param)
        return convnext, torch.randn(2, 3, 64, 64)
    return (
        SegResNetEncoder3D(in_chans=1, init_filters=4, blocks_down=(1, 1, 1), norm="instance"),
        torch.randn(2, 1, 16, 16, 16),
    )


@pytest.mark.parametrize("kind", ["toy", "resnet18", "convnext", "segresnet"])
def test_hidden_values_cannot_reach_any_stage(kind: str) -> None:
    """Whatever the input holds at hidden cells, and whatever a stage computes at hidden
    positions (here: noise added there before the re-masking), every map is unchanged: zero
    at hidden positions, and the same at visible ones. Without re-masking after each stage,
    the noise reaches the visible positions of the next stages through their convolutions."""
    torch.manual_seed(0)
    backbone, x = _backbone(kind)
    backbone.eval()  # batch norms: the same statistics in both passes
    spark = _sized(backbone)
    patch = spark.patch_size[0]  # type: ignore[index]
    mask = _mask(x, patch)
    grid = TokenGrid.from_input(x.shape[2:], patch)
    active = (~mask).view(x.shape[0], *grid.shape)
    with torch.no_grad():
        clean = spark.encode(backbone, x, mask)
        hidden_noise = 100 * torch.randn_like(x) * ~_up(active, x.shape[2:])

        def inject(module: nn.Module, args: object, output: Tensor) -> Tensor:
            return output + 100 * torch.randn_like(output) * ~_up(active, output.shape[2:])

        handles = [m.register_forward_hook(inject) for m in backbone.stage_modules()]  # type: ignore[operator]
        try:
            noisy = spark.encode(backbone, x + hidden_noise, mask)
        finally:
            for handle in handles:
                handle.remove()
    visible = [_up(active, a.shape[2:]) for a in clean]
    for i, (a, b, v) in enumerate(zip(clean, noisy, visible, strict=True)):
        torch.testing.assert_close(a * v, b * v, msg=f"hidden values reached map {i}")
    for i, (a, b, v) in enumerate(zip(clean, noisy, visible, strict=True)):
        assert float((a * ~v).abs().max()) == 0.0, f"map {i} is not empty where hidden"
        torch.testing.assert_close(a, b)


def _up(active: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    out = active[:, None]
    for axis, size in enumerate(shape):
        out = out.repeat_interleave(size // active.shape[axis + 1], dim=axis + 2)
    return out


@pytest.mark.parametrize("kind", ["resnet18", "convnext", "segresnet"])
def test_stage_modules_return_the_backbone_maps(kind: str) -> None:
    backbone, x = _backbone(kind)
    seen: list[Tensor] = []
    handles = [
        m.register_forward_hook(lambda _m, _a, out: seen.append(out))
        for m in backbone.stage_modules()  # type: ignore[operator]
    ]
    maps = backbone.forward_intermediates(x)  # type: ignore[operator]
    for handle in handles:
        handle.remove()
    assert len(seen) == len(maps)
    for a, b in zip(seen, maps, strict=True):
        assert a is b


# -- decoder, sizes, behaviour -------------------------------------------------------------
def test_decoder_levels_follow_the_strides() -> None:
    segresnet, _ = _backbone("segresnet")  # strides 1, 2, 4: the stride-1 map at the last level
    spark = _sized(segresnet)
    assert spark.patch_size == (4, 4, 4) and spark.levels == (2, 1, 0)
    assert spark.decoder.widths == (32, 16, 8)
    resnet, _ = _backbone("resnet18")  # strides 2..32: no stride-1 map
    spark = _sized(resnet)
    assert spark.levels == (4, 3, 2, 1, 0) and len(spark.decoder.dec) == 5
    dilated = TimmCNN(model_name="resnet18", in_chans=3, timm_kwargs={"output_stride": 16})
    spark = _sized(dilated)  # strides 2, 4, 8, 16, 16: two maps feed level 0
    assert spark.levels == (3, 2, 1, 0, 0)
    x = torch.randn(2, 3, 32, 32)
    assert spark.reconstruct(dilated, x, _mask(x, 16)).shape == x.shape


def test_sizes_come_from_the_backbone_and_are_checked() -> None:
    cnn = ThreeStageCNN()
    spark = SparK(decoder_width=16)
    with pytest.raises(RuntimeError, match="bind it to a backbone"):
        spark.grid(torch.zeros(1, 2, 16, 16))
    spark.bind_backbone(cnn)
    assert (spark.in_chans, spark.patch_size) == (2, (4, 4))
    assert (spark.feature_channels, spark.feature_strides) == ((4, 6, 8), (1, 2, 4))
    with pytest.raises(ValueError, match="feature_channels"):
        SparK(feature_channels=(4, 6, 9)).bind_backbone(cnn)
    with pytest.raises(ValueError, match="in_chans"):
        SparK(in_chans=3).bind_backbone(cnn)
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=4, embed_dim=16, depth=1, num_heads=2
    )
    with pytest.raises(ValueError, match="stage modules"):
        SparK().bind_backbone(vit)
    swin = SwinViT3D(in_chans=1, feature_size=12, depths=(1, 1, 1, 1), window_size=4)
    with pytest.raises(ValueError, match="SwinViT3D names none"):  # a pyramid, but not a CNN's
        SparK().bind_backbone(swin)
    with pytest.raises(ValueError, match="mask ratio"):
        SparK(mask_ratio=1.0)
    with pytest.raises(ValueError, match="cannot be halved"):
        SparK(decoder_width=2).bind_backbone(cnn)


def test_forward_batch_draws_the_paper_mask_and_trains() -> None:
    torch.manual_seed(0)
    cnn = ThreeStageCNN()
    spark = _sized(cnn)
    assert OBJECTIVES.get("spark") is SparK and spark.parallel_mode is ParallelMode.LOCAL
    assert isinstance(spark, BatchObjective)
    x = torch.randn(4, 2, 16, 16)
    mask = spark.draw_mask(x)
    assert mask.shape == (4, 16) and mask.dtype == torch.bool
    assert mask.sum(dim=1).tolist() == [num_masked(16, 0.6)] * 4 == [10] * 4
    out = spark.forward_batch(BatchFeatures(cnn, {"input": x}))
    assert (
        out.loss.ndim == 0
        and math.isfinite(float(out.loss.detach()))
        and set(out.terms) == {"spark"}
    )
    out.loss.backward()
    assert all(p.grad is not None for p in spark.densify.parameters())
    with pytest.raises(ValueError, match="mask must be"):
        spark(cnn, x, mask[:, :8])


def test_preview_shows_the_input_at_visible_patches() -> None:
    torch.manual_seed(0)
    cnn = ThreeStageCNN()
    spark = _sized(cnn)
    x = torch.randn(2, 2, 16, 16)
    preview = spark.preview(BatchFeatures(cnn, {"input": x}))
    assert set(preview) == {"input", "masked", "reconstruction"}
    hidden = preview["masked"] == 0
    assert all(v.shape == x.shape for v in preview.values())
    torch.testing.assert_close(preview["reconstruction"][~hidden], x[~hidden])
    assert 0.5 < float(hidden.float().mean()) < 0.7  # 60 % of the cells
