"""The encoder (down path) of the Models Genesis 3D U-Net behind the multi-scale backbone
contract; SuPreM's U-Net is the same network.

The architecture is the ``UNet3D`` of Zhou et al. 2019/2021, "Models Genesis: generic
autodidactic models for 3D medical image analysis" (MICCAI 2019; MedIA 67:101840,
arXiv:2004.07882), as written in MrGiovanni/ModelsGenesis ``pytorch/unet3d.py`` and copied
unchanged into MrGiovanni/SuPreM ``supervised_pretraining/backbone/unet.py``. Four levels
``down_tr64``, ``down_tr128``, ``down_tr256``, ``down_tr512``; level ``d`` (0..3) is two
"LUConv" units ``ops.0``, ``ops.1``, each a 3×3×3 convolution with bias (``conv1``), a
BatchNorm (``bn1``) and an activation (``activation``), taking the channels
``in → F·2**d → 2F·2**d`` (``F`` = ``base_channels``, 32 in the releases); levels 0–2 end in a
2×2×2 max pool, and the map *before* the pool is the level's skip connection. The module
names are the release's, so the encoder keys load without renaming (``down_tr64.ops.0.conv1.
weight`` ...); the up path (``up_tr256/128/64``) and the sigmoid head (``out_tr``) are not part
of this backbone.

**BatchNorm statistics.** Upstream's ``ContBatchNorm3d`` always normalizes with the current
batch's statistics, in ``eval()`` as in training (and updates the running averages on every
call). ``batch_stats_in_eval=True`` (default, the releases' behaviour) keeps that;
``False`` gives standard BatchNorm (running statistics in ``eval()``). The keys are the same.

Shapes (``F`` = ``base_channels``, input ``(B, C, D, H, W)``, sides divisible by 8)::

    forward_intermediates(x)   4 maps: (B, 2F, /1), (B, 4F, /2), (B, 8F, /4), (B, 16F, /8)
                               (Models Genesis' skip_out64, skip_out128, skip_out256, out512)
    forward_tokens(x)          tokens (B, N, 16F) of the last map, grid of /8
    forward(x)                 (B, 16F) mean of the last map (the global average pool of
                               Models Genesis' classification example)

A convolution has no tokens to drop, so ``keep_idx`` is refused.

Example::

    >>> net = UNet3DEncoder(base_channels=4)
    >>> [tuple(m.shape[1:]) for m in net.forward_intermediates(torch.randn(2, 1, 16, 16, 8))]
    [(8, 16, 16, 8), (16, 8, 8, 4), (32, 4, 4, 2), (64, 2, 2, 1)]
    >>> net(torch.randn(2, 1, 16, 16, 8)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.objectives.base import require_at_least
from domainfm.domains.medical3d.volume_backbone import VolumeBackbone

Activation = Literal["relu", "prelu", "elu"]

LEVEL_NAMES = ("down_tr64", "down_tr128", "down_tr256", "down_tr512")
"""Module names of the four levels in the releases (named for their 32-filter widths)."""


class BatchStatsNorm3d(nn.BatchNorm3d):
    """BatchNorm that normalizes with the batch's statistics in eval mode too (and updates
    the running averages on every call), like Models Genesis' ``ContBatchNorm3d``."""

    def forward(self, input: Tensor) -> Tensor:
        if input.dim() != 5:
            raise ValueError(f"expected a 5D input (B, C, D, H, W), got {input.dim()}D")
        return F.batch_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            True,
            self.momentum if self.momentum is not None else 0.0,
            self.eps,
        )


class ConvNormAct3d(nn.Module):
    """One "LUConv": 3×3×3 conv (with bias) → BatchNorm → activation, with the release's
    attribute names ``conv1``, ``bn1``, ``activation``."""

    def __init__(
        self, in_chans: int, out_chans: int, *, act: Activation, batch_stats_in_eval: bool
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_chans, out_chans, kernel_size=3, padding=1)
        norm = BatchStatsNorm3d if batch_stats_in_eval else nn.BatchNorm3d
        self.bn1 = norm(out_chans)
        self.activation: nn.Module
        if act == "relu":
            self.activation = nn.ReLU(inplace=True)
        elif act == "prelu":
            self.activation = nn.PReLU(out_chans)
        elif act == "elu":
            self.activation = nn.ELU(inplace=True)
        else:
            raise ValueError(f"act must be 'relu', 'prelu' or 'elu', got {act!r}")

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.activation(self.bn1(self.conv1(x)))
        return out


class DownLevel3d(nn.Module):
    """One level of the down path: ``ops`` (two conv units); the max pool to the next level
    is applied by the encoder."""

    def __init__(
        self,
        in_chans: int,
        width: int,
        *,
        act: Activation,
        batch_stats_in_eval: bool,
    ) -> None:
        super().__init__()
        unit = {"act": act, "batch_stats_in_eval": batch_stats_in_eval}
        self.ops = nn.Sequential(
            ConvNormAct3d(in_chans, width, **unit),  # type: ignore[arg-type]
            ConvNormAct3d(width, 2 * width, **unit),  # type: ignore[arg-type]
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.ops(x)
        return out


@BACKBONES.register("unet3d_encoder")
class UNet3DEncoder(VolumeBackbone):
    """The Models Genesis / SuPreM 3D U-Net encoder as a domainfm multi-scale backbone.

    Args:
        in_chans: input channels (1 in the releases).
        base_channels: ``F``, the first conv's width; level ``d`` outputs ``2F·2**d``
            channels (32 in the releases: 64, 128, 256, 512).
        act: ``"relu"`` (the releases), ``"prelu"`` (adds ``activation.weight`` keys) or
            ``"elu"``.
        batch_stats_in_eval: normalize with batch statistics in ``eval()`` too, as the
            releases' ``ContBatchNorm3d`` does (see the module docstring).

    A Models Genesis ``UNet3D`` state dict loads after the decoder keys are set aside::

        >>> state = {k: v for k, v in genesis.state_dict().items() if k.startswith("down_tr")}
        >>> load_state_dict_with_report(net, state).check()
    """

    def __init__(
        self,
        *,
        in_chans: int = 1,
        base_channels: int = 32,
        act: Activation = "relu",
        batch_stats_in_eval: bool = True,
    ) -> None:
        super().__init__()
        require_at_least(1, in_chans=in_chans, base_channels=base_channels)
        kw = {"act": act, "batch_stats_in_eval": batch_stats_in_eval}
        previous = in_chans
        for level, name in enumerate(LEVEL_NAMES):
            width = base_channels * 2**level
            self.add_module(name, DownLevel3d(previous, width, **kw))  # type: ignore[arg-type]
            previous = 2 * width
        self.pool = nn.MaxPool3d(2)
        self.declare_maps(
            in_chans=in_chans,
            channels=(2 * base_channels * 2**level for level in range(len(LEVEL_NAMES))),
            strides=(2**level for level in range(len(LEVEL_NAMES))),  # a max pool per level
        )

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        """Each level's map before its max pool; ``norm`` is ignored (every level ends in
        BatchNorm + activation)."""
        maps: list[Tensor] = []
        for level, name in enumerate(LEVEL_NAMES):
            if level:
                x = self.pool(x)
            x = getattr(self, name)(x)
            maps.append(x)
        return maps
