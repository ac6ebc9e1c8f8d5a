"""Adapting a checkpoint's state dict to the model it is loaded into.

Two adaptations every loader (:func:`~domainfm.pretrained.load.load_backbone`,
:func:`~domainfm.pretrained.registry.load_released`, the pretext loader) shares, each reported
in the :class:`~domainfm.pretrained.report.LoadReport`:

* :func:`pos_embed_resampler`: a learned ``pos_embed`` recorded for one token grid is
  resampled to the model's grid (reported as resampled);
* :func:`map_input_channels`: the input layer is remapped by channel (band) name from the
  checkpoint's recorded channels to the model's (reported as adapted).

Example::

    >>> report = load_state_dict_with_report(
    ...     model, state, resample=pos_embed_resampler({"grid_size": 14}, model))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from domainfm.core.grid import to_ntuple
from domainfm.core.pos_embed import resample_pos_embed
from domainfm.pretrained.channels import NewChannelInit, adapt_input_channels
from domainfm.pretrained.report import Resampler


def pos_embed_resampler(old_kwargs: Mapping[str, Any], model: nn.Module) -> Resampler:
    """Resample a learned ``pos_embed`` from the checkpoint's grid (``old_kwargs["grid_size"]``)
    to the model's grid."""

    def resample(key: str, value: Tensor, target: Tensor) -> Tensor | None:
        if key != "pos_embed" or old_kwargs.get("grid_size") is None:
            return None
        new_grid = tuple(getattr(model, "grid_size", ()))
        dims = int(old_kwargs.get("spatial_dims", len(new_grid)))
        old_grid = to_ntuple(old_kwargs["grid_size"], dims, name="grid_size")
        prefix = int(getattr(model, "num_prefix_tokens", 0))
        if len(new_grid) != dims:
            return None
        return resample_pos_embed(value, new_grid, old_grid, num_prefix_tokens=prefix)

    return resample


def map_input_channels(
    state: Mapping[str, Tensor],
    model: nn.Module,
    *,
    recorded: Mapping[str, Any],
    channels: Sequence[str],
    new_channel_init: NewChannelInit,
    source: str,
) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """``state`` with its input layer remapped from the recorded channel names
    (``recorded["bands"]`` or ``["channels"]``) to ``channels`` for ``model``, and the
    adaptations (:func:`~domainfm.pretrained.channels.adapt_input_channels`)."""
    names = recorded.get("bands") or recorded.get("channels")
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ValueError(
            f"{source} does not record its input channel names (input.bands / "
            "input.channels), so channels cannot be mapped by name"
        )
    return adapt_input_channels(
        state,
        model.state_dict(),
        source=list(names),
        target=list(channels),
        new_channel_init=new_channel_init,
    )
