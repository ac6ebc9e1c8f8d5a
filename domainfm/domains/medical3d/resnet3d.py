"""MONAI's 3D ResNet (the MedicalNet / Med3D layout) behind the multi-scale backbone contract.

An adapter, not a fork: the network is MONAI's ``monai.networks.nets.ResNet`` built without
its classifier (``feed_forward=False``) and held as ``encoder``, so this backbone's keys are
MONAI's ResNet keys under the prefix ``encoder.`` (``encoder.conv1.weight``,
``encoder.layer1.0.bn1.running_mean``, ``encoder.layer2.0.downsample.0.weight``, ...). Those
are also the key names of Tencent MedicalNet's ``models/resnet.py`` trunk, which MONAI's
ResNet reproduces (its ``resnet_params`` / ``get_medicalnet_pretrained_resnet_args``):

* depths 10/18/34 use basic blocks, 50/101/152/200 bottlenecks (expansion 4), layers
  ``[1,1,1,1]``, ``[2,2,2,2]``, ``[3,4,6,3]``, ``[3,4,6,3]``, ``[3,4,23,3]``, ``[3,8,36,3]``,
  ``[3,24,36,3]``;
* ``shortcut_type="A"``: a parameter-free shortcut (stride-1 average pool, zero-padded
  channels, no gradient through the shortcut, as in MedicalNet); ``"B"``: a 1×1×1 conv +
  BatchNorm (``downsample.0`` / ``downsample.1``), without bias in MedicalNet
  (``bias_downsample=False``);
* a 7×7×7 stem conv with stride ``conv1_t_stride`` (2 in MedicalNet), BatchNorm, ReLU, then a
  3×3×3 stride-2 max pool.

``dilated=True`` is MedicalNet's own trunk (Chen et al. 2019, "Med3D: Transfer learning for
3D medical image analysis", arXiv:1904.00625; ``models/resnet.py``): ``layer3`` and
``layer4`` keep stride 1 and dilate their 3×3×3 convolutions by 2 and 4 (padding equal to the
dilation), so the output stride stays 8. MONAI's ResNet always strides those layers by 2; the
adapter sets stride, dilation and padding of the same MONAI modules after building them (no
parameter changes, so the keys and shapes are the same either way). ``dilated=False`` is
MONAI's plain ResNet (output stride 32).

Shapes (input ``(B, C, D, H, W)``, ``w`` = ``widen_factor``, ``e`` = block expansion (1 or 4),
strides for the MedicalNet stem ``conv1_t_stride=2`` with max pool)::

    forward_intermediates(x)   5 maps, shallow→deep:
        stem    (B, 64w,       /2)     after conv1/bn1/ReLU, before the max pool
        layer1  (B, 64w·e,     /4)
        layer2  (B, 128w·e,    /8)
        layer3  (B, 256w·e,    /8 dilated, /16 otherwise)
        layer4  (B, 512w·e,    /8 dilated, /32 otherwise)
    forward_tokens(x)          tokens (B, N, 512w·e) of layer4
    forward(x)                 (B, 512w·e) mean of layer4 (MONAI's ``ResNet(feed_forward=False)``)

Every side must divide by the last map's stride (``patch_size``). The maps are those of
MONAI's ``ResNetFeatures.forward`` (its stem map is taken before the max pool too).

A convolution has no tokens to drop, so ``keep_idx`` is refused.

Example::

    >>> net = ResNet3D(depth=10, shortcut_type="B", dilated=True, widen_factor=0.125)
    >>> [tuple(m.shape[1:]) for m in net.forward_intermediates(torch.randn(1, 1, 16, 16, 16))]
    [(8, 8, 8, 8), (8, 4, 4, 4), (16, 2, 2, 2), (32, 2, 2, 2), (64, 2, 2, 2)]
    >>> net(torch.randn(2, 1, 16, 16, 16)).shape
    torch.Size([2, 64])
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from torch import Tensor, nn

from domainfm.core.backbone import BACKBONES
from domainfm.core.objectives.base import require_at_least
from domainfm.domains.medical3d.volume_backbone import VolumeBackbone

DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
"""Block type and blocks per layer of each depth (MONAI's ``resnet_params``, MedicalNet's
``resnet10`` … ``resnet200``)."""

MEDICALNET_DILATION = (2, 4)
"""Dilation of ``layer3`` and ``layer4`` in MedicalNet's trunk (both at stride 1)."""


def dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Turn a MONAI ResNet layer built with stride 2 into MedicalNet's stride-1 layer whose
    3×3×3 convolutions have ``dilation`` (and padding ``dilation``); the shortcut (a 1×1×1
    conv for type B, a pooling partial for type A) loses its stride too. Parameters are not
    touched."""
    blocks: list[Any] = list(layer)  # MONAI ResNetBlock / ResNetBottleneck
    for block in blocks:
        for module in block.modules():
            if isinstance(module, nn.Conv3d):
                module.stride = (1, 1, 1)
                if module.kernel_size == (3, 3, 3):
                    module.dilation = (dilation,) * 3
                    module.padding = (dilation,) * 3
        block.stride = 1
        shortcut = getattr(block, "downsample", None)
        if isinstance(shortcut, partial):  # type A: MONAI's _downsample_basic_block
            block.downsample = partial(
                shortcut.func, *shortcut.args, **{**shortcut.keywords, "stride": 1}
            )


@BACKBONES.register("resnet_3d")
class ResNet3D(VolumeBackbone):
    """MONAI ``ResNet`` (MedicalNet layout) as a domainfm multi-scale backbone.

    Args:
        in_chans: input channels (1 for MedicalNet).
        depth: 10, 18, 34, 50, 101, 152 or 200.
        shortcut_type: ``"A"`` (parameter-free, MedicalNet's 18/34) or ``"B"`` (1×1×1 conv +
            BatchNorm, MedicalNet's 10/50/101/152/200).
        bias_downsample: whether the type-B shortcut conv has a bias (MedicalNet: no).
        conv1_t_size: kernel size of the stem conv.
        conv1_t_stride: stride of the stem conv (MedicalNet: 2).
        no_max_pool: leave out the stem's max pool.
        dilated: MedicalNet's trunk: ``layer3`` / ``layer4`` at stride 1 with dilation 2 / 4.
        widen_factor: width multiplier of every layer (1.0 for the releases; smaller for tests).

    Weights of a MONAI ``ResNet(..., feed_forward=False)`` with the same settings load with
    the key prefix ``encoder.`` added::

        >>> state = {"encoder." + k: v for k, v in monai_resnet.state_dict().items()}
        >>> load_state_dict_with_report(net, state).check()
    """

    def __init__(
        self,
        *,
        in_chans: int = 1,
        depth: int = 18,
        shortcut_type: Literal["A", "B"] = "B",
        bias_downsample: bool = False,
        conv1_t_size: int = 7,
        conv1_t_stride: int = 2,
        no_max_pool: bool = False,
        dilated: bool = False,
        widen_factor: float = 1.0,
    ) -> None:
        super().__init__()
        from monai.networks.nets.resnet import ResNet, get_inplanes

        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got depth={depth}")
        if shortcut_type not in ("A", "B"):
            raise ValueError(f"shortcut_type must be 'A' or 'B', got {shortcut_type!r}")
        require_at_least(
            1, in_chans=in_chans, conv1_t_size=conv1_t_size, conv1_t_stride=conv1_t_stride
        )
        widths = [int(c * widen_factor) for c in get_inplanes()]
        if min(widths) < 1:
            raise ValueError(f"widen_factor={widen_factor} leaves a layer without channels")
        block, layers = DEPTHS[depth]
        expansion = 1 if block == "basic" else 4
        first = conv1_t_stride * (1 if no_max_pool else 2)  # after the stem and its max pool
        deep = 1 if dilated else 2  # layer3 and layer4's stride
        self.declare_maps(
            in_chans=in_chans,
            channels=(widths[0], *(c * expansion for c in widths)),
            strides=(conv1_t_stride, first, first * 2, first * 2 * deep, first * 2 * deep**2),
        )
        self.encoder = ResNet(
            block=block,
            layers=list(layers),
            block_inplanes=widths,  # widened here: MONAI's widen_factor left at 1
            spatial_dims=self.spatial_dims,
            n_input_channels=self.in_chans,
            conv1_t_size=conv1_t_size,
            conv1_t_stride=conv1_t_stride,
            no_max_pool=no_max_pool,
            shortcut_type=shortcut_type,
            feed_forward=False,
            bias_downsample=bias_downsample,
        )
        if dilated:
            dilate_layer(self.encoder.layer3, MEDICALNET_DILATION[0])
            dilate_layer(self.encoder.layer4, MEDICALNET_DILATION[1])

    def stage_maps(self, x: Tensor, norm: bool) -> list[Tensor]:
        """Stem (before the max pool) and ``layer1..4`` maps; ``norm`` is ignored (a ResNet
        has no final norm: every layer ends in BatchNorm + residual + ReLU)."""
        net = self.encoder
        x = net.act(net.bn1(net.conv1(x)))
        maps = [x]
        if not net.no_max_pool:
            x = net.maxpool(x)
        for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = layer(x)
            maps.append(x)
        return maps
