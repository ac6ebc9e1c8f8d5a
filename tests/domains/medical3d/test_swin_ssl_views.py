"""Swin UNETR SSL views: rotation labels, cutout, determinism, and a short recipe run."""

from __future__ import annotations

import math
import re
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from domainfm.core.objectives import InfoNCE, Inpainting, RotationPrediction
from domainfm.core.vit import VisionTransformerND
from domainfm.domains.medical3d import SwinSSLViews, VolumeCropDataset
from domainfm.tasks.pretrain_module import PretrainModule

CT = "medical/totalsegmentator_examples/ct_full/example_ct.nii.gz"
KEYS = {"input", "view1", "view2", "target1", "target2", "rot1", "rot2"}


@pytest.fixture(scope="module")
def ct_views(data_root: Path) -> VolumeCropDataset:
    views = SwinSSLViews(crop_size=32, foreground_prob=1.0)
    return VolumeCropDataset(files=[data_root / CT], views=views, samples_per_volume=4)


def test_rotation_labels_describe_the_rotation(ct_views: VolumeCropDataset) -> None:
    views = ct_views.views
    assert isinstance(views, SwinSSLViews)
    assert views.rotation_dims == (2, 3)  # the official rot90(k, (2, 3)) of a (C, H, W, Z) crop
    seen = set()
    for seed in range(12):
        sample = ct_views[(0, seed)]
        assert set(sample) >= KEYS
        x = sample["input"]
        for target, label in (("target1", "rot1"), ("target2", "rot2")):
            k = sample[label]
            assert k.dtype == torch.int64 and k.ndim == 0
            seen.add(int(k))
            for other in range(4):  # only the labelled rotation matches (CT is not symmetric)
                same = torch.equal(torch.rot90(x, other, views.rotation_dims), sample[target])
                assert same == (other == int(k)), (seed, target, other, int(k))
    assert seen == {0, 1, 2, 3}


def test_views_are_corrupted_targets_are_clean(ct_views: VolumeCropDataset) -> None:
    sample = ct_views[(0, 3)]
    for i in (1, 2):
        view, target = sample[f"view{i}"], sample[f"target{i}"]
        assert view.shape == target.shape == (1, 32, 32, 32)
        changed = (view != target).float().mean()
        assert 0.0 < float(changed) < 0.6


def test_cutout_changes_only_its_boxes() -> None:
    views = SwinSSLViews(crop_size=64)
    x = torch.full((2, 64, 64, 64), 5.0)  # outside the noise range [0, 1]
    for seed in range(4):
        out, mask = views.cutout(x, generator=torch.Generator().manual_seed(seed))
        changed = (out != x).any(dim=0)
        assert torch.equal(changed, mask)
        assert float(out[:, mask].min()) >= 0.0 and float(out[:, mask].max()) <= 1.0
        # the summed boxes stop at U(0, 0.3) of the voxels, overshooting by at most one box
        assert float(mask.float().mean()) <= 0.3 + (15 / 64) ** 3
    fill = torch.randn(2, 64, 64, 64)
    out, mask = views.cutout(x, generator=torch.Generator().manual_seed(9), fill=fill)
    assert mask.any()
    assert torch.equal(out[:, mask], fill[:, mask]) and torch.equal(out[:, ~mask], x[:, ~mask])


def test_cutout_boxes_follow_patch_rand_drop_sizes() -> None:
    """A tiny budget draws exactly one box: sides in [int(0.05 s), int(0.25 s) - 1]."""
    views = SwinSSLViews(crop_size=64, max_drop=1e-7)
    x = torch.zeros(1, 64, 64, 64)
    sides = set()
    for seed in range(20):
        _, mask = views.cutout(x, generator=torch.Generator().manual_seed(seed))
        if not mask.any():  # the budget U(0, max_drop) * voxels can be 0
            continue
        idx = mask.nonzero()
        extent = (idx.max(dim=0).values - idx.min(dim=0).values + 1).tolist()
        assert int(mask.sum()) == math.prod(extent)  # one box
        assert all(3 <= e <= 15 for e in extent), extent
        sides.update(extent)
    assert len(sides) > 3


def test_no_drop_gives_clean_views() -> None:
    views = SwinSSLViews(crop_size=16, max_drop=0.0)
    volume = torch.rand(1, 20, 24, 24)
    sample = views(volume, generator=torch.Generator().manual_seed(0), foreground=None)
    assert torch.equal(sample["view1"], sample["target1"])
    assert torch.equal(sample["view2"], sample["target2"])


def test_same_seed_same_sample() -> None:
    views = SwinSSLViews(crop_size=16)
    volume = torch.rand(1, 30, 24, 24)

    def draw(seed: int) -> dict[str, torch.Tensor]:
        return views(volume, generator=torch.Generator().manual_seed(seed), foreground=None)

    a, b, c = draw(1), draw(1), draw(2)
    assert set(a) == KEYS
    assert all(torch.equal(a[k], b[k]) for k in KEYS)
    assert not all(torch.equal(a[k], c[k]) for k in KEYS)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rotation_axes"):
        SwinSSLViews(crop_size=(32, 32, 48))  # axes 1 and 2 differ
    SwinSSLViews(crop_size=(32, 32, 48), rotation_axes=(0, 1))
    with pytest.raises(ValueError, match="rotation_axes"):
        SwinSSLViews(crop_size=32, rotation_axes=(1, 1))
    with pytest.raises(ValueError, match=re.escape("max_drop=1.5")):
        SwinSSLViews(crop_size=32, max_drop=1.5)
    with pytest.raises(ValueError, match=re.escape("min_block_size=0.5")):
        SwinSSLViews(crop_size=32, min_block_size=0.5)
    with pytest.raises(ValueError, match=re.escape("donor_prob=-0.1")):
        SwinSSLViews(crop_size=32, donor_prob=-0.1)


def test_recipe_trains_a_tiny_vit(ct_views: VolumeCropDataset) -> None:
    """Inpainting + rotation + InfoNCE on real CT views: the encoder gets gradients from each
    objective and the summed loss on a fixed batch drops after a few steps."""
    torch.manual_seed(0)
    views = SwinSSLViews(crop_size=16, foreground_prob=1.0)
    volume, foreground = ct_views.volumes[0], ct_views.foreground[0]
    samples = [
        views(volume, generator=torch.Generator().manual_seed(seed), foreground=foreground)
        for seed in range(4)
    ]
    batch = next(iter(DataLoader(samples, batch_size=4)))  # type: ignore[arg-type]
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=3, patch_size=8, embed_dim=32, depth=2, num_heads=4
    )
    objectives = {
        "inpaint": Inpainting(embed_dim=32, in_chans=1, patch_size=(8, 8, 8)),
        "rotation": RotationPrediction(embed_dim=32),
        "contrast": InfoNCE(temperature=0.5),
    }
    module = PretrainModule(
        backbone=vit,
        objectives=objectives,
        projector_hidden_dim=32,
        projector_dim=16,
        lr=3e-3,
        warmup_steps=1,
    )
    _, logs = module.compute_losses(batch)
    assert {"inpaint", "rotation", "contrast", "rotation/acc"} <= set(logs)
    for name in objectives:  # every objective alone reaches the encoder
        module.zero_grad()
        single = PretrainModule(
            backbone=vit, objectives={name: objectives[name]}, projector_hidden_dim=32
        )
        single.compute_losses(batch)[0].backward()
        grad = vit.patch_embed.proj.weight.grad
        assert grad is not None and float(grad.abs().sum()) > 0, name
    module.zero_grad()

    with torch.no_grad():
        before = float(module.compute_losses(batch)[0])
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, DataLoader([batch], batch_size=None))  # type: ignore[arg-type]
    with torch.no_grad():
        after = float(module.compute_losses(batch)[0])
    assert math.isfinite(after) and after < before, (before, after)
