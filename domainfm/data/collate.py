"""Collate functions for batches whose samples do not stack.

Detection (:class:`~domainfm.tasks.detection_module.DetectionModule`) batches are::

    {"input": (B, C, H, W), "boxes": [ (n_i, 4) xyxy pixel boxes ], "labels": [ (n_i,) ]}

Example::

    >>> batch = collate_detection([{"input": torch.zeros(3, 8, 8), "boxes": torch.zeros(0, 4),
    ...                             "labels": torch.zeros(0)}])
    >>> batch["input"].shape, len(batch["boxes"])
    (torch.Size([1, 3, 8, 8]), 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor


def collate_detection(samples: Sequence[Mapping[str, Tensor]]) -> dict[str, Any]:
    """Stack ``input`` and keep per-image ``boxes``/``labels`` as lists (their counts
    differ)."""
    return {
        "input": torch.stack([s["input"] for s in samples]),
        "boxes": [s["boxes"].reshape(-1, 4).float() for s in samples],
        "labels": [s["labels"].reshape(-1).long() for s in samples],
    }
