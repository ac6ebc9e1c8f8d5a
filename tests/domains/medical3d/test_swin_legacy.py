"""SwinViT3DLegacy: MONAI's Swin encoder with MONAI < 1.5's patch merging, the same keys,
shapes and initialization as SwinViT3D, and MONAI 1.4's features.

The reference merging is restated in ``tests/domains/medical3d/monai_merging.py`` (loaded by
path); everything is shrunk (``feature_size=12``, 32³ inputs).
"""

from __future__ import annotations

from pathlib import Path
from runpy import run_path

import pytest
import torch
from monai.networks.nets.swin_unetr import PatchMerging, SwinTransformer

from domainfm.core.backbone import build_backbone
from domainfm.domains.medical3d.swin import SwinViT3D
from domainfm.domains.medical3d.swin_legacy import (
    LEGACY_OFFSETS,
    LegacyPatchMerging,
    SwinViT3DLegacy,
)

_MERGING = run_path(str(Path(__file__).with_name("monai_merging.py")))
MonaiPre15PatchMerging = _MERGING["MonaiPre15PatchMerging"]


def test_legacy_offsets_repeat_two_neighbours() -> None:
    assert len(LEGACY_OFFSETS) == 8 and len(set(LEGACY_OFFSETS)) == 6
    everything = {(i, j, k) for i in (0, 1) for j in (0, 1) for k in (0, 1)}
    assert everything - set(LEGACY_OFFSETS) == {(1, 1, 0), (0, 1, 1)}


@pytest.mark.parametrize("shape", [(2, 4, 6, 8, 5), (1, 3, 5, 7, 5)])  # even, odd (padded)
def test_legacy_merging_is_monai_1_4s(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    ref = MonaiPre15PatchMerging(dim=5)
    ours = LegacyPatchMerging(5)
    ours.load_state_dict(ref.state_dict())  # strict: MONAI's parameter names and shapes
    current = PatchMerging(dim=5)
    current.load_state_dict(ref.state_dict())
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x))
        assert not torch.allclose(current(x), ref(x), atol=1e-3)  # MONAI >= 1.5's order
    with pytest.raises(ValueError, match=r"expected \(B, D, H, W, C\)"):
        ours(torch.randn(2, 4, 4, 5))


def test_same_keys_shapes_and_initialization_as_swin_vit_3d() -> None:
    torch.manual_seed(0)
    new = SwinViT3D(in_chans=1, feature_size=12, use_v2=True)
    torch.manual_seed(0)
    old = build_backbone("swin_vit_3d_legacy", {"in_chans": 1, "feature_size": 12, "use_v2": True})
    assert isinstance(old, SwinViT3DLegacy)
    a, b = new.state_dict(), old.state_dict()
    assert list(a) == list(b)
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key)
    stages = [getattr(old.swinViT, f"layers{i}")[0].downsample for i in range(1, 5)]
    assert all(type(m) is LegacyPatchMerging for m in stages)
    assert old.embed_dim == new.embed_dim == 192 and old.patch_size == new.patch_size


def test_features_of_monai_swin_transformer_with_pre_1_5_merging() -> None:
    torch.manual_seed(0)
    ref = SwinTransformer(
        in_chans=1,
        embed_dim=12,
        window_size=(7, 7, 7),
        patch_size=(2, 2, 2),
        depths=(2, 2, 2, 2),
        num_heads=(3, 6, 12, 24),
        downsample=MonaiPre15PatchMerging,
    ).eval()
    ours = SwinViT3DLegacy(in_chans=1, feature_size=12).eval()
    ours.swinViT.load_state_dict(ref.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        got = ours.forward_intermediates(x, indices=5)
        want = ref(x, normalize=True)
    assert len(got) == len(want) == 5
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
