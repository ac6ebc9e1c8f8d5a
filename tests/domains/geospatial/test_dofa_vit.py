"""DOFAViT: wavelengths given at construction or per call; band count checked."""

from __future__ import annotations

import pytest
import torch

from domainfm.core.backbone import Backbone
from domainfm.domains.geospatial.dofa_vit import DOFAViT, wavelength_code

KW = {"img_size": 32, "patch_size": 16, "embed_dim": 32, "depth": 1, "num_heads": 4}


def test_construction_and_per_call_wavelengths() -> None:
    torch.manual_seed(0)
    dofa = DOFAViT(wavelengths_um=[0.49, 0.56, 0.665], **KW).eval()
    assert isinstance(dofa, Backbone) and dofa.in_chans == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        same = dofa(x, wavelengths_um=[0.49, 0.56, 0.665])
        torch.testing.assert_close(dofa(x), same)
        other = dofa(x, wavelengths_um=[0.842, 1.61, 2.19])
        assert not torch.allclose(other, same)
        assert dofa.forward_intermediates(x[:, :2], wavelengths_um=[0.7, 0.8])[0].shape == (
            2, 32, 2, 2,
        )  # fmt: skip
    with pytest.raises(ValueError, match="wavelengths"):
        dofa(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match="in_chans=4"):
        DOFAViT(wavelengths_um=[0.5], in_chans=4, **KW)
    assert wavelength_code(torch.tensor([0.5, 0.6]), 8).shape == (2, 8)
