"""The sound event module: column logits' shapes and column targets from frame labels."""

from __future__ import annotations

import torch

from domainfm.core.vit import VisionTransformerND
from domainfm.domains.audio import SoundEventModule


def test_module_columns_and_targets() -> None:
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=16, embed_dim=32, depth=2, num_heads=2
    )
    module = SoundEventModule(backbone=vit, num_classes=10)
    logits = module(torch.randn(2, 1, 64, 400))
    assert logits.shape == (2, 10, 25)
    frames = torch.zeros(1, 10, 400)
    frames[0, 3, 16:39] = 1  # column 1 (16..31) fully, column 2 (32..47) 7 of 16 frames
    target = SoundEventModule.column_targets(frames, 25)
    assert target[0, 3, :4].tolist() == [0.0, 1.0, 0.0, 0.0]
    frames[0, 3, 32:41] = 1
    assert SoundEventModule.column_targets(frames, 25)[0, 3, 2] == 1.0
