"""The projection head's keywords (``ProjectionArgs``) of every ``ProjectedObjective``: each
objective's default widths, flat keywords over them, refused foreign keys, flat recording."""

from __future__ import annotations

from typing import Any, Unpack

import pytest
import torch

from domainfm.core.objectives.global_local import GlobalPartitionContrast
from domainfm.core.objectives.projected import ProjectedObjective, ProjectionArgs
from domainfm.core.objectives.softcon import SoftCon
from domainfm.core.objectives.voco import VoCo
from domainfm.core.registry import init_config
from domainfm.core.vit import VisionTransformerND

# class -> (default hidden_dim, default out_dim, biases in the head)
DEFAULTS: dict[type[ProjectedObjective], tuple[int, int, bool]] = {
    GlobalPartitionContrast: (1024, 128, False),
    SoftCon: (2048, 256, True),
    VoCo: (2048, 2048, True),
}
OBJECTIVES = list(DEFAULTS)


@pytest.mark.parametrize("cls", OBJECTIVES, ids=lambda c: c.__name__)
def test_each_objective_keeps_its_default_widths(cls: type[Any]) -> None:
    hidden, out, bias = DEFAULTS[cls]
    objective = cls()
    assert (objective.embed_dim, objective.hidden_dim, objective.out_dim) == (None, hidden, out)
    assert objective.bias is bias


@pytest.mark.parametrize("cls", OBJECTIVES, ids=lambda c: c.__name__)
def test_flat_keywords_size_the_head_and_are_recorded_as_given(cls: type[Any]) -> None:
    objective = cls(embed_dim=6, out_dim=4)
    linears = [m for m in objective.head if isinstance(m, torch.nn.Linear)]
    assert (linears[0].in_features, linears[0].out_features) == (6, DEFAULTS[cls][0])
    assert linears[-1].out_features == 4
    kwargs = init_config(objective)["kwargs"]
    assert kwargs["embed_dim"] == 6 and kwargs["out_dim"] == 4
    assert "hidden_dim" not in kwargs  # recorded flat, as given
    rebuilt = cls(**kwargs)
    assert (rebuilt.hidden_dim, rebuilt.out_dim) == (objective.hidden_dim, objective.out_dim)


@pytest.mark.parametrize("cls", OBJECTIVES, ids=lambda c: c.__name__)
def test_binding_records_the_backbone_width(cls: type[Any]) -> None:
    vit = VisionTransformerND(
        in_chans=1, spatial_dims=2, patch_size=8, embed_dim=16, depth=1, num_heads=2
    )
    objective = cls(hidden_dim=8, out_dim=8)
    objective.bind_backbone(vit)
    assert objective.embed_dim == 16 and init_config(objective)["kwargs"]["embed_dim"] == 16


@pytest.mark.parametrize("cls", OBJECTIVES, ids=lambda c: c.__name__)
def test_foreign_keys_and_bad_widths_are_refused(cls: type[Any]) -> None:
    name = cls.__name__
    with pytest.raises(
        TypeError, match=rf"^{name}\(\) got unexpected keyword arguments \['hidden'\]"
    ):
        cls(hidden=8)
    with pytest.raises(ValueError, match="hidden_dim must be >= 1"):
        cls(hidden_dim=0)
    with pytest.raises(ValueError, match="out_dim must be >= 1"):
        cls(out_dim=0)


def test_a_subclass_without_a_default_width_is_refused() -> None:
    class NoOut(ProjectedObjective):
        def __init__(self, **head: Unpack[ProjectionArgs]) -> None:
            super().__init__(head, defaults={"hidden_dim": 8})

    assert NoOut(out_dim=2).out_dim == 2
    with pytest.raises(TypeError, match=r"NoOut\(\) has no default for \['out_dim'\]"):
        NoOut()
