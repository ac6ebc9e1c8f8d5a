"""Frozen patch-token features of whole CT/MRI volumes, with each token's label, for the
benchmark's linear and kNN probes.

Each case is read and preprocessed as fine-tuning reads it
(:func:`~domainfm.domains.medical3d.benchmark_inputs.load_case`), zero-padded at the far end
of each axis to a multiple of the feature stride (and to at least one window), and encoded
with MONAI's ``sliding_window_inference`` over windows of the training ROI (50 % overlap,
Gaussian blending of the overlapping windows' tokens): the predictor is the backbone's last
feature map (``forward_intermediates(x, indices=1, norm=True)``: a ViT's normalized patch
tokens, a multi-scale backbone's deepest map), so the output is one ``D``-vector per token
on the whole volume's token grid. The model is in eval mode, no randomness: the same item
gives the same features.

Each token's label is the majority class of the voxels it covers (ties: the smaller class;
padding loses ties); a token covering mostly padding, or whose majority is the task's
``ignore_index``, is left out. At most :data:`MAX_TOKENS` tokens per
case are kept, drawn uniformly without replacement (so the class frequencies of the volume
are kept) by a generator seeded from the item's key: memory stays bounded on large volumes
and the draw is the same every run.

Shapes::

    ItemFeatures.features   (T, D)   T <= MAX_TOKENS
    ItemFeatures.labels     (T,)     class indices

Example::

    >>> feats = embed_volumes(EmbedRequest(model=model, backbone=backbone, task=task,
    ...                                    items=task.items[:2], device="cpu", batch_size=4))
    >>> feats[0].features.shape, feats[0].labels.shape
    (torch.Size([2250, 32]), torch.Size([2250]))
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.domains.medical3d.benchmark_inputs import VolumeSettings, load_case, volume_settings
from domainfm.tasks.benchmark.hooks import EmbedRequest
from domainfm.tasks.benchmark.task import ItemFeatures

MAX_TOKENS = 4096
"""Most token positions kept per case."""
OVERLAP = 0.5
"""Overlap of neighbouring sliding windows."""
PADDING = torch.iinfo(torch.int32).max
"""Label of padded voxels: never a class, and larger than any, so that a tie between a class
and padding goes to the class."""


def embed_volumes(request: EmbedRequest) -> list[ItemFeatures]:
    """Token features and token labels of the request's items (module docstring), one
    :class:`ItemFeatures` per item, in order; ``batch_size`` windows per forward pass.

    Raises:
        ValueError: naming the file for an unreadable case; naming the backbone when it
            does not take the task's channels or its feature map does not tile the window.
    """
    device = request.device
    settings = volume_settings(request.backbone, request.task, request.model)
    model = request.model.to(device).eval()
    out = []
    with torch.no_grad():
        stride = feature_stride(model, settings, device)
        for item in request.items:
            image, label = load_case(item, settings)
            features = token_features(
                model, image, settings.roi, stride, device, request.batch_size
            )
            labels = token_labels(label[0], stride, features.shape[1:])
            keep = kept_tokens(labels, item.key, request.task.ignore_index)
            tokens = features.flatten(1).T  # (T, D)
            out.append(ItemFeatures(features=tokens[keep].contiguous(), labels=labels[keep]))
    return out


def feature_stride(model: nn.Module, settings: VolumeSettings, device: str) -> tuple[int, ...]:
    """Voxels per token along each axis: the window over the backbone's last feature map,
    from one empty window.

    Raises:
        ValueError: when the map does not tile the window evenly.
    """
    window = torch.zeros((1, settings.channels, *settings.roi), device=device)
    grid = tuple(_last_map(model, window).shape[2:])
    stride = tuple(r // g for r, g in zip(settings.roi, grid, strict=True))
    if any(g * s != r for g, s, r in zip(grid, stride, settings.roi, strict=True)):
        raise ValueError(
            f"a {settings.roi} window gives a {grid} feature map, which does not tile it: "
            "give a window (roi) that the backbone's patch size divides"
        )
    return stride


def token_features(
    model: nn.Module,
    image: Tensor,
    roi: Sequence[int],
    stride: Sequence[int],
    device: str,
    batch_size: int,
) -> Tensor:
    """``(D, *grid)`` features of the whole ``(C, *spatial)`` image: sliding windows over
    the image zero-padded to :func:`padded_shape`, on the CPU."""
    from monai.inferers import sliding_window_inference

    shape = padded_shape(image.shape[1:], roi, stride)
    padded = F.pad(image, _end_padding(image.shape[1:], shape))[None].to(device)
    maps = sliding_window_inference(
        padded,
        roi_size=tuple(roi),
        sw_batch_size=batch_size,
        predictor=lambda window: _last_map(model, window),
        overlap=OVERLAP,
        mode="gaussian",
    )
    return cast(Tensor, maps)[0].float().cpu()


def padded_shape(
    shape: Sequence[int], roi: Sequence[int], stride: Sequence[int]
) -> tuple[int, ...]:
    """Each axis padded to a multiple of the stride, and to at least the window."""
    return tuple(
        max(int(r), math.ceil(int(n) / int(s)) * int(s))
        for n, r, s in zip(shape, roi, stride, strict=True)
    )


def token_labels(label: Tensor, stride: Sequence[int], grid: Sequence[int]) -> Tensor:
    """``(T,)`` the majority class of each token's voxels in the ``(D, H, W)`` label map
    (ties: the smallest class; :data:`PADDING` where padding is the majority); tokens in C
    order of ``grid``."""
    shape = [g * s for g, s in zip(grid, stride, strict=True)]
    padded = F.pad(label.to(torch.int32), _end_padding(label.shape, shape), value=PADDING)
    (gd, gh, gw), (sd, sh, sw) = grid, stride
    blocks = padded.reshape(gd, sd, gh, sh, gw, sw).permute(0, 2, 4, 1, 3, 5)
    return blocks.reshape(gd * gh * gw, sd * sh * sw).mode(dim=1).values.long()


def kept_tokens(labels: Tensor, key: str, ignore_index: int | None) -> Tensor:
    """Indices (sorted) of at most :data:`MAX_TOKENS` labeled tokens, drawn by a generator
    seeded from ``key``."""
    labeled = labels != PADDING
    if ignore_index is not None:
        labeled &= labels != ignore_index
    index = labeled.nonzero()[:, 0]
    if len(index) <= MAX_TOKENS:
        return index
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    chosen = torch.randperm(len(index), generator=generator)[:MAX_TOKENS]
    return index[chosen.sort().values]


def _end_padding(shape: Sequence[int], target: Sequence[int]) -> list[int]:
    """``F.pad`` amounts that pad ``shape`` (the last axes) to ``target`` at the far ends."""
    return [p for n, m in zip(reversed(shape), reversed(target), strict=True) for p in (0, m - n)]


def _last_map(model: nn.Module, x: Tensor) -> Tensor:
    """The backbone's last feature map ``(B, D, *grid)``."""
    maps = model.forward_intermediates(x, indices=1, norm=True)  # type: ignore[operator]
    return cast(Tensor, maps[-1])
