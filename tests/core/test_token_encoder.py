from __future__ import annotations

import torch
from torch import Tensor

from domainfm.core.grid import TokenGrid
from domainfm.core.token_encoder import TokenEncoder


class Doubling(TokenEncoder):
    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None) -> tuple[Tensor, TokenGrid]:
        return 2 * x, TokenGrid(shape=(x.shape[1],), patch_size=(1,), axes=("t",))


def test_forward_is_the_mean_of_the_tokens_by_default() -> None:
    x = torch.randn(2, 5, 3)
    assert torch.allclose(Doubling()(x), (2 * x).mean(dim=1))
