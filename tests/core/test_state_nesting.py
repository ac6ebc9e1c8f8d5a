"""flat_state / nested_state: the state dict a released file holds bare or under a key, and
errors naming what the file holds instead."""

from __future__ import annotations

import pytest
import torch

from domainfm.core.state_nesting import flat_state, nested_state


def test_the_state_dict_under_a_key_or_bare() -> None:
    state = {"w": torch.ones(1)}
    assert nested_state({"model": state, "epoch": 3}, "model") is state
    assert nested_state({"state_dict": state}, "state_dict", optional=True) is state
    assert nested_state(state, "state_dict", optional=True) is state  # saved bare
    assert flat_state(state) is state


def test_what_is_not_a_state_dict_is_named() -> None:
    with pytest.raises(KeyError, match=r"'model'.*\['epoch', 'args'\]"):
        nested_state({"epoch": 3, "args": None}, "model")
    with pytest.raises(TypeError, match="found list"):
        nested_state([1, 2], "model")
    with pytest.raises(TypeError, match="under 'teacher', found int"):
        nested_state({"teacher": 5}, "teacher")
    with pytest.raises(TypeError, match="expected a state dict, found str"):
        flat_state("weights.pt")
