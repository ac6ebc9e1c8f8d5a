"""MONAI's SegResNet encoder (a 3D residual CNN) behind the backbone contract.

An adapter, not a fork: the encoder is MONAI's ``SegResEncoder`` held as ``encoder``, the
attribute name MONAI's ``SegResNetDS`` uses, so the ``encoder.*`` keys of a MONAI
``SegResNetDS`` state dict load unchanged (its decoder keys, ``up_layers.*``, are not part
of this backbone). The architecture is the encoder of Myronenko 2018, "3D MRI brain tumor
segmentation using autoencoder regularization" (arXiv:1810.11654): a 3×3×3 stem, then per
level ``blocks_down[i]`` pre-activation residual blocks and a stride-2 conv that doubles
the channels.

Shapes (``init_filters`` F, ``L = len(blocks_down)`` levels, input ``(B, C, D, H, W)`` with
sides divisible by ``2**(L-1)``)::

    forward_intermediates(x)   L maps: (B, F, /1), (B, 2F, /2), ..., (B, 2**(L-1) F, /2**(L-1))
    forward_tokens(x)          tokens (B, N, 2**(L-1) F) of the last map, grid of /2**(L-1)
    forward(x)                 (B, 2**(L-1) F) mean of the last map

A convolution has no tokens to drop, so ``keep_idx`` is refused; pair this encoder with
masked-input objectives (inpainting, contrastive views) instead of MAE token dropping.

Example::

    >>> cnn = SegResNetEncoder3D(in_chans=1, init_filters=8)
    >>> [m.shape[1:] for m in cnn.forward_intermediates(torch.randn(1, 1, 16, 16, 16))]
    [torch.Size([8, 16, 16, 16]), torch.Size([16, 8, 8, 8]), torch.Size([32, 4, 4, 4]),
     torch.Size([64, 2, 2, 2])]
    >>> cnn(torch.randn(2, 1, 16, 16, 16)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.objectives.base import require_at_least
from domainfm.domains.medical3d.volume_backbone import VolumeBackbone

NormOrAct = str | tuple[str, dict[str, Any]]


@BACKBONES.register("segresnet_encoder_3d")
class SegResNetEncoder3D(VolumeBackbone):
    """MONAI ``SegResEncoder`` as a domainfm multi-scale backbone.

    Args:
        in_chans: input channels.
        init_filters: channels of the first level (doubled at every level).
        blocks_down: residual blocks per level; the number of levels is its length.
        norm: MONAI norm name or ``(name, kwargs)`` (MONAI's default ``"batch"``; e.g.
            ``"instance"`` or ``("group", {"num_groups": 8})`` for small batches).
        act: MONAI activation name or ``(name, kwargs)``.

    Weights of a MONAI ``SegResNetDS`` built with the same ``in_channels``, ``init_filters``,
    ``blocks_down``, ``norm`` and ``act`` load with the key prefix ``encoder.`` kept as is::

        >>> state = {k: v for k, v in segresnet_ds.state_dict().items()
        ...          if k.startswith("encoder.")}
        >>> load_state_dict_with_report(cnn, state).check()
    """

    def __init__(
        self,
        *,
        in_chans: int,
        init_filters: int = 32,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        norm: NormOrAct = "batch",
        act: NormOrAct = "relu",
    ) -> None:
        super().__init__()
        from monai.networks.nets.segresnet_ds import SegResEncoder

        require_at_least(1, in_chans=in_chans, init_filters=init_filters)
        blocks = tuple(int(b) for b in blocks_down)
        if not blocks or any(b < 1 for b in blocks):
            raise ValueError(
                f"blocks_down must be a non-empty sequence of positive ints, got {blocks_down}"
            )
        levels = range(len(blocks))
        self.declare_maps(
            in_chans=in_chans,
            channels=(init_filters * 2**i for i in levels),
            strides=(2**i for i in levels),
        )
        self.encoder = SegResEncoder(
            spatial_dims=self.spatial_dims,
            init_filters=init_filters,
            in_channels=self.in_chans,
            act=act,
            norm=norm,
            blocks_down=blocks,
        )

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        """One map per level; ``norm`` is ignored (MONAI's encoder has no final norm: each
        level ends in a residual block)."""
        maps: list[Tensor] = self.encoder(x)
        return maps

    def stage_modules(self) -> list[nn.Module]:
        """Each level's residual blocks (MONAI returns their output, then downsamples)."""
        return [level.get_submodule("blocks") for level in self.encoder.layers]
