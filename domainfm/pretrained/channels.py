"""Load weights trained on one list of input channels into a model with another, by name.

A multispectral checkpoint knows its bands by name (``config.json`` → ``input.bands``, e.g.
Sentinel-2 ``B01`` … ``B12``); a user's data may have 4 of them, 10, or a band the checkpoint
never saw. :func:`adapt_input_channels` rewrites the input-layer weights (the tensors whose
channel axis, axis 1, has one slice per input band — the patch projection of a ViT, the first
conv of a CNN): each target band takes the source slice of the same name; a band the source
lacks is initialized explicitly (``"zeros"``: it contributes nothing until fine-tuned, so the
mapped bands give exactly the pretrained features; or ``"mean"``: the mean source kernel);
source bands the target drops are left out. Every choice is written into the load report
(:attr:`~domainfm.pretrained.report.LoadReport.adapted`), so nothing is silent.

Example::

    >>> model, report = load_backbone("exports/s2_mae", channels=["B02", "B03", "B04", "B08"])
    >>> print(report)     # adapted  patch_embed.proj.weight  B02<-B02, B03<-B03, ...; dropped ...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

NewChannelInit = Literal["zeros", "mean"]


def adapt_input_channels(
    state: Mapping[str, Tensor],
    model_state: Mapping[str, Tensor],
    *,
    source: Sequence[str],
    target: Sequence[str],
    new_channel_init: NewChannelInit = "zeros",
) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """``state`` with its input-channel tensors remapped from ``source`` to ``target`` names.

    A tensor is an input-channel tensor when its axis 1 has ``len(source)`` slices, the model's
    tensor of the same key has ``len(target)`` there, and every other axis agrees.

    Returns:
        The new state dict and ``(key, description)`` per adapted tensor.

    Raises:
        ValueError: duplicate names, an unknown ``new_channel_init``, or no tensor to adapt
            while the channel lists differ.
    """
    for name, names in (("source", source), ("target", target)):
        if len(set(names)) != len(names):
            raise ValueError(f"{name} channel names repeat: {list(names)}")
    if new_channel_init not in ("zeros", "mean"):
        raise ValueError(f"new_channel_init must be 'zeros' or 'mean', got {new_channel_init!r}")
    position = {n: i for i, n in enumerate(source)}
    new = [n for n in target if n not in position]
    dropped = [n for n in source if n not in set(target)]
    out = dict(state)
    adapted: list[tuple[str, str]] = []
    for key, value in state.items():
        own = model_state.get(key)
        if own is None or value.ndim < 2 or own.ndim != value.ndim:
            continue
        if value.shape[1] != len(source) or own.shape[1] != len(target):
            continue
        if value.shape[:1] + value.shape[2:] != own.shape[:1] + own.shape[2:]:
            continue
        if value.shape == own.shape and list(source) == list(target):
            continue
        fill = (
            torch.zeros_like(value[:, :1])
            if new_channel_init == "zeros"
            else value.mean(dim=1, keepdim=True)
        )  # (out, 1, *kernel)
        slices = [
            value[:, position[n] : position[n] + 1] if n in position else fill for n in target
        ]
        out[key] = torch.cat(slices, dim=1)  # (out, len(target), *kernel)
        mapped = ", ".join(f"{n}<-{n}" for n in target if n in position)
        detail = f"channels {mapped or 'none'}"
        if new:
            detail += f"; new {', '.join(new)} ({new_channel_init})"
        if dropped:
            detail += f"; dropped {', '.join(dropped)}"
        adapted.append((key, detail))
    if not adapted and list(source) != list(target):
        raise ValueError(
            f"no input-channel tensor maps {len(source)} source channels to {len(target)} "
            "target channels; is the model built with in_chans=len(channels)?"
        )
    return out, adapted
