"""MONAI < 1.5's 3D patch merging, restated for reference tests: a helper, not a test module
(test modules load it by path; they never import each other).

Swin UNETR weights trained before MONAI 1.5 are compared with MONAI's own ``SwinUNETR`` /
``SwinTransformer`` built with ``downsample=MonaiPre15PatchMerging``. Restated from
``PatchMerging.forward`` in ``monai/networks/nets/swin_unetr.py`` of MONAI 1.4.0 (the parent of
MONAI#8285, which changed the order in 1.5): neighbours x0..x7 with x5 == x2 and x6 == x3.
SuPreM's ``backbone/swinunetr.py`` (MONAI 0.9's) and VoCo's MONAI 1.3.0 merge the same way.
A test module loads this file by path (``runpy.run_path`` or ``importlib``) and builds e.g.
``SwinUNETR(in_channels=1, out_channels=3, downsample=MonaiPre15PatchMerging)``; on the meta
device inside :class:`CpuValues`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets.swin_unetr import PatchMerging
from torch import Tensor
from torch.overrides import TorchFunctionMode


class MonaiPre15PatchMerging(PatchMerging):
    """MONAI 1.4's 3D ``PatchMerging`` (MONAI's parameters ``norm`` and ``reduction``)."""

    def forward(self, x: Tensor) -> Tensor:
        _, d, h, w, _ = x.shape
        if (h % 2 == 1) or (w % 2 == 1) or (d % 2 == 1):
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2, 0, d % 2))
        x0 = x[:, 0::2, 0::2, 0::2, :]
        x1 = x[:, 1::2, 0::2, 0::2, :]
        x2 = x[:, 0::2, 1::2, 0::2, :]
        x3 = x[:, 0::2, 0::2, 1::2, :]
        x4 = x[:, 1::2, 0::2, 1::2, :]
        x5 = x[:, 0::2, 1::2, 0::2, :]
        x6 = x[:, 0::2, 0::2, 1::2, :]
        x7 = x[:, 1::2, 1::2, 1::2, :]
        out: Tensor = self.reduction(self.norm(torch.cat([x0, x1, x2, x3, x4, x5, x6, x7], -1)))
        return out


class CpuValues(TorchFunctionMode):
    """``torch.linspace`` on the CPU inside ``torch.device("meta")``: MONAI's Swin reads its
    drop-path rates with ``.item()``."""

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kw = dict(kwargs or {})
        if func is torch.linspace:
            kw["device"] = "cpu"
        return func(*args, **kw)
