"""The wav2vec 2.0 / HuBERT backbone: torchaudio's key names, the frame grid of the conv
stack, token dropping refused, too-short input refused, mean pooling."""

from __future__ import annotations

import pytest
import torch
import torchaudio

from domainfm.core.backbone import build_backbone
from domainfm.domains.audio.wav2vec2_encoder import WAV2VEC2_BASE_CONFIG, Wav2Vec2Encoder

SMALL = {
    **WAV2VEC2_BASE_CONFIG,
    "extractor_conv_layer_config": [[8, 10, 5]] + [[8, 3, 2]] * 4 + [[8, 2, 2]] * 2,
    "encoder_embed_dim": 16,
    "encoder_num_heads": 2,
    "encoder_num_layers": 2,
    "encoder_ff_interm_features": 32,
    "encoder_pos_conv_kernel": 8,
    "encoder_pos_conv_groups": 2,
}


def test_base_keys_are_torchaudios() -> None:
    with torch.device("meta"):
        ours = Wav2Vec2Encoder(**WAV2VEC2_BASE_CONFIG).state_dict()
        theirs = torchaudio.models.wav2vec2_base().state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_grid_tokens_and_refusals() -> None:
    enc = build_backbone("wav2vec2", SMALL).eval()
    assert enc.receptive_field == 400 and enc.patch_size == (320,)
    assert [enc.num_frames(n) for n in (399, 400, 719, 720, 16000)] == [0, 1, 1, 2, 49]
    x = torch.randn(2, 1, 16000)
    with torch.no_grad():
        tokens, grid = enc.forward_tokens(x)
        assert tokens.shape == (2, 49, 16) and grid.shape == (49,) and grid.axes == ("t",)
        torch.testing.assert_close(enc(x), tokens.mean(dim=1))
        assert [m.shape for m in enc.forward_intermediates(x, indices=2)] == [(2, 16, 49)] * 2
    with pytest.raises(ValueError, match="cannot drop tokens"):
        enc.forward_tokens(x, keep_idx=torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="shorter than one frame"):
        enc.forward_tokens(torch.randn(1, 1, 300))
    with pytest.raises(ValueError, match=r"\(B, 1, N\)"):
        enc.forward_tokens(torch.randn(1, 2, 16000))
