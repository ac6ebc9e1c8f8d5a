from __future__ import annotations

import torch
import torch.nn.functional as F

from domainfm.domains.geospatial.clay_encoder import ResidualGeluMLP
from domainfm.domains.geospatial.dofa_vit import FCResLayer
from domainfm.domains.geospatial.residual_mlp import ResidualMLP


def test_release_key_names_and_forward() -> None:
    assert sorted(FCResLayer(4).state_dict()) == ["w1.bias", "w1.weight", "w2.bias", "w2.weight"]
    assert sorted(ResidualGeluMLP(4).state_dict()) == [
        "l1.bias",
        "l1.weight",
        "l2.bias",
        "l2.weight",
    ]
    mlp = ResidualMLP(4, activation=F.relu, layer_names=("a", "b"))
    x = torch.randn(3, 4)
    expected = x + F.relu(mlp.b(F.relu(mlp.a(x))))
    assert torch.equal(mlp(x), expected)
