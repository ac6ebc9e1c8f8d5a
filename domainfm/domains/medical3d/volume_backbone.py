"""The base of the 3D multi-scale backbones (MONAI's Swin, SegResNet and ResNet encoders, the
Models Genesis U-Net): a :class:`~domainfm.core.multiscale.MultiScaleBackbone` over volumes
``(B, C, D, H, W)`` whose pyramid is declared once, by :meth:`VolumeBackbone.declare_maps`.

Example::

    >>> class Tiny(VolumeBackbone):
    ...     def __init__(self) -> None:
    ...         super().__init__()
    ...         self.declare_maps(in_chans=1, channels=[8, 16], strides=[1, 2])
    >>> Tiny().embed_dim, Tiny().patch_size
    (16, (2, 2, 2))
"""

from __future__ import annotations

from collections.abc import Iterable

from domainfm.core.multiscale import MultiScaleBackbone


class VolumeBackbone(MultiScaleBackbone):
    """A multi-scale backbone over 3D volumes.

    Attributes:
        in_chans: input channels.
    """

    spatial_dims = 3
    in_chans: int

    def declare_maps(
        self, *, in_chans: int, channels: Iterable[int], strides: Iterable[int]
    ) -> None:
        """Declare the maps of :meth:`stage_maps`, shallow→deep: their channels and total
        strides; the last one gives ``embed_dim`` and ``patch_size`` (its stride per axis)."""
        self.in_chans = in_chans
        self.feature_channels = tuple(channels)
        self.feature_strides = tuple(strides)
        self.embed_dim = self.feature_channels[-1]
        self.patch_size = (self.feature_strides[-1],) * self.spatial_dims
