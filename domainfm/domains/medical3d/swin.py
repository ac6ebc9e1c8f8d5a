"""MONAI's 3D Swin Transformer (the Swin UNETR encoder) behind the backbone contract.

An adapter, not a fork: the encoder is MONAI's ``SwinTransformer`` held as ``swinViT``, the
attribute name MONAI's ``SwinUNETR`` uses, so a MONAI Swin UNETR state dict's ``swinViT.*``
keys load unchanged (Hatamizadeh et al. 2022, arXiv:2201.01266; Tang et al. 2022,
arXiv:2111.14791 for the self-supervised weights).

Shapes (``feature_size`` F, input ``(B, C, D, H, W)`` with sides divisible by 32)::

    forward_intermediates(x)   5 maps: (B, F, /2), (B, 2F, /4), (B, 4F, /8), (B, 8F, /16),
                               (B, 16F, /32)
    forward_tokens(x)          tokens (B, N, 16F) of the last map, grid of /32
    forward(x)                 (B, 16F) mean of the last map

Windowed attention cannot drop masked tokens, so ``keep_idx`` is refused; pair this encoder
with inpainting-style objectives (masked input, full grid) instead of MAE token dropping.

Example::

    >>> swin = SwinViT3D(in_chans=1, feature_size=12)
    >>> swin(torch.randn(1, 1, 64, 64, 64)).shape
    torch.Size([1, 192])
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.grid import to_ntuple
from domainfm.domains.medical3d.volume_backbone import VolumeBackbone


@BACKBONES.register("swin_vit_3d")
class SwinViT3D(VolumeBackbone):
    """MONAI Swin Transformer encoder as a domainfm backbone.

    Args:
        in_chans: input channels.
        feature_size: channels of the first stage (48 for the released SSL weights).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window_size: attention window per axis.
        normalize: layer-normalize the returned maps (as ``SwinUNETR`` does).
        use_v2: Swin UNETR v2 (extra residual conv blocks per stage).
    """

    no_token_dropping = "windowed attention needs the full grid"
    patch_merging: str | type[nn.Module] = "merging"
    """The patch merging of every stage: MONAI's ``downsample`` argument (its name, or a
    module class built as ``cls(dim=..., norm_layer=..., spatial_dims=...)``)."""

    def __init__(
        self,
        *,
        in_chans: int,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int | Sequence[int] = 7,
        normalize: bool = True,
        use_v2: bool = False,
    ) -> None:
        super().__init__()
        from monai.networks.nets.swin_unetr import SwinTransformer

        if feature_size % 12:
            raise ValueError(
                f"feature_size must be divisible by 12, got feature_size={feature_size}"
            )
        self.swinViT = SwinTransformer(
            in_chans=in_chans,
            embed_dim=feature_size,
            window_size=to_ntuple(window_size, 3, name="window_size"),
            patch_size=(2, 2, 2),
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            use_v2=use_v2,
            downsample=self.patch_merging,
        )
        self.normalize = normalize
        # the patch embedding (F, /2), then one map per stage (2F, /4) ... (16F, /32)
        maps = range(len(depths) + 1)
        self.declare_maps(
            in_chans=in_chans,
            channels=(feature_size * 2**i for i in maps),
            strides=(2 ** (i + 1) for i in maps),
        )

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        """The patch embedding's map, then one per stage (layer-normalized with
        ``normalize`` or ``norm``)."""
        return list(self.swinViT(x, self.normalize or norm))
