"""VolumeContract intensity mappings."""

from __future__ import annotations

import pytest
import torch

from domainfm.domains.medical3d.contract import VolumeContract


def test_zscore_nonzero_normalization_is_applied_and_unknown_types_refused() -> None:
    """MedicalNet's contract normalizes by a z-score over non-zero voxels, not the HU window
    its modality would suggest; a type without a transform is refused, never guessed."""
    contract = VolumeContract(
        modality="ct", spacing_mm=1.0, normalization={"type": "zscore_nonzero"}
    )
    x = torch.zeros(1, 4, 4, 4)
    x[0, :2] = torch.arange(32, dtype=torch.float32).reshape(2, 4, 4) * 10.0 + 5.0
    out = torch.as_tensor(contract.normalize(x))
    inside = out[0, :2]
    torch.testing.assert_close(inside.mean(), torch.tensor(0.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(inside.std(unbiased=False), torch.tensor(1.0))
    assert (out[0, 2:] == 0).all()
    odd = VolumeContract(modality="ct", spacing_mm=1.0, normalization={"type": "robust"})
    with pytest.raises(ValueError, match="'robust' has no transform"):
        odd.normalize(x)
