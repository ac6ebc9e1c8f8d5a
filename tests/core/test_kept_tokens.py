from __future__ import annotations

import pytest
import torch

from domainfm.core.kept_tokens import check_keep_idx, gather_kept


def test_gather_kept_selects_per_sample() -> None:
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    keep = torch.tensor([[3, 0], [1, 2]])
    out = gather_kept(tokens, keep)
    assert out.shape == (2, 2, 3)
    assert torch.equal(out[0], tokens[0, [3, 0]]) and torch.equal(out[1], tokens[1, [1, 2]])


def test_keep_idx_must_be_batch_by_k() -> None:
    with pytest.raises(ValueError, match=r"keep_idx must be \(B=2, K\), got shape \(1, 2\)"):
        gather_kept(torch.zeros(2, 4, 3), torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got shape \(2,\)"):
        check_keep_idx(torch.zeros(2, dtype=torch.long), 2)
