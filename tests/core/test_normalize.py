from __future__ import annotations

import numpy as np
import torch

from domainfm.core.normalize import STD_FLOOR, floor_std, standardize


def test_floor_std_keeps_the_type_and_floors_elementwise() -> None:
    assert floor_std(0.0) == STD_FLOOR and floor_std(2.5) == 2.5
    t = floor_std(torch.tensor([0.0, 1e-9, 3.0]))
    assert t.dtype == torch.float32
    torch.testing.assert_close(t, torch.tensor([STD_FLOOR, STD_FLOOR, 3.0]))
    a = floor_std(np.array([0.0, 3.0], dtype=np.float32))
    assert a.dtype == np.float32 and a.tolist() == [np.float32(STD_FLOOR), 3.0]


def test_standardize_divides_by_the_floored_std() -> None:
    x = torch.tensor([[2.0, 5.0], [4.0, 5.0]])
    mean, std = torch.tensor([1.0, 5.0]), torch.tensor([2.0, 0.0])
    torch.testing.assert_close(standardize(x, mean, std), torch.tensor([[0.5, 0.0], [1.5, 0.0]]))
    xa = np.array([3.0, 7.0], dtype=np.float32)
    out = standardize(xa, np.float32([1.0, 7.0]), np.float32([2.0, 0.0]), floor=1e-3)
    assert out.tolist() == [1.0, 0.0]
