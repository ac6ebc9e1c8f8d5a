"""The input contract of a raster model: bands, wavelengths, ground sample distance, per-band
normalization, nodata and value scale.

Written by the geospatial data modules into checkpoints and exports (``"input"``), carried by
released checkpoints, and read by tiled prediction and detection so that a raster is
normalized exactly as in training.

Normalization types (``normalization["type"]``):

* ``"standardize"``: ``(x - mean) / std`` per band (statistics of the training rasters);
* ``"scale"``: ``x / divide_by`` (e.g. Sentinel-2 L1C digital numbers / 10000);
* ``"mean_std"``: ``(x * scale - mean) / std`` per band (a release's published statistics).

All three are one per-band affine map, :meth:`RasterContract.moments`, applied by
:meth:`RasterContract.normalize` with the library's std floor.

Example::

    >>> c = RasterContract(bands=["B04", "B08"],
    ...                    normalization={"type": "scale", "divide_by": 10000.0})
    >>> c.wavelengths_um
    [0.665, 0.842]
    >>> c.normalize(torch.full((2, 1, 1), 5000.0)).flatten()
    tensor([0.5000, 0.5000])
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from domainfm.core.contract import CONTRACTS, InputContract
from domainfm.core.normalize import floor_std, standardize

SENTINEL2_WAVELENGTHS_UM: dict[str, float] = {
    "B01": 0.443,
    "B02": 0.490,
    "B03": 0.560,
    "B04": 0.665,
    "B05": 0.705,
    "B06": 0.740,
    "B07": 0.783,
    "B08": 0.842,
    "B8A": 0.865,
    "B09": 0.945,
    "B10": 1.375,
    "B11": 1.610,
    "B12": 2.190,
}
"""Centre wavelengths (µm) of the Sentinel-2 MSI bands (ESA, Sentinel-2 User Handbook; S2A)."""


def standardization(mean: Sequence[float], std: Sequence[float]) -> dict[str, Any]:
    """The ``"standardize"`` normalization of per-band training statistics."""
    return {"type": "standardize", "mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def ground_sample_distance(crs: Any, res: Sequence[float]) -> float | None:
    """Pixel size in metres of a grid with resolution ``res`` in ``crs`` units (the mean of
    the two axes); ``None`` when the CRS is missing or not metric (e.g. degrees)."""
    units = str(getattr(crs, "linear_units", "") or "").lower()
    if units not in ("metre", "meter", "m"):
        return None
    return float(sum(abs(float(r)) for r in res) / len(res))


@CONTRACTS.register("raster")
@dataclass(frozen=True, kw_only=True)
class RasterContract(InputContract):
    """What a raster model expects.

    Attributes:
        bands: input band names, in the model's channel order.
        normalization: the per-band intensity mapping (see the module docstring); ``None``:
            the model takes raw values.
        wavelengths_um: centre wavelength of each band (filled in for known band names).
        gsd_m: ground sample distance in metres (``None``: unknown or not metric).
        nodata: the raw value marking missing pixels, if any.
        input_scale: factor applied to raw file values before a release's ``"scale"`` or
            ``"mean_std"`` normalization (e.g. 10000 to feed reflectance 0..1 to weights
            trained on digital numbers); ``"standardize"`` statistics of the training files
            already include it.
        released_input: the release whose input contract the data followed, if any.
        window: training window / tile size in pixels.
    """

    kind: ClassVar[str] = "raster"
    legacy_keys: ClassVar[tuple[str, ...]] = ("bands",)

    bands: list[str]
    normalization: dict[str, Any] | None = None
    wavelengths_um: list[float] | None = None
    gsd_m: float | None = None
    nodata: float | None = None
    input_scale: float = 1.0
    released_input: str | None = None
    window: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", [str(b) for b in self.bands])
        if self.wavelengths_um is None and all(b in SENTINEL2_WAVELENGTHS_UM for b in self.bands):
            waves = [SENTINEL2_WAVELENGTHS_UM[b] for b in self.bands]
            object.__setattr__(self, "wavelengths_um", waves)
        if self.wavelengths_um is not None and len(self.wavelengths_um) != len(self.bands):
            raise ValueError(
                f"{len(self.wavelengths_um)} wavelengths for {len(self.bands)} bands {self.bands}"
            )

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-band ``(mean, std)`` float32 ``(C,)`` such that the model's input is
        ``(x - mean) / std`` of raw values ``x`` (``0`` and ``1`` without a normalization;
        ``std`` floored at :data:`~domainfm.core.normalize.STD_FLOOR`)."""
        count = len(self.bands)
        norm = self.normalization or {}
        kind = norm.get("type")
        if kind is None:
            mean, std = np.zeros(count), np.ones(count)
        elif kind == "standardize":  # statistics of the raw training files: input_scale folded in
            mean, std = np.asarray(norm["mean"], float), np.asarray(norm["std"], float)
        elif kind == "scale":
            mean, std = np.zeros(count), np.full(count, float(norm["divide_by"]) / self.input_scale)
        elif kind == "mean_std":
            factor = float(norm.get("scale", 1.0)) * self.input_scale
            mean = np.asarray(norm["mean"], float) / factor
            std = np.asarray(norm["std"], float) / factor
        else:
            raise ValueError(
                f"normalization type {kind!r} is not supported (known: 'standardize', 'scale', "
                "'mean_std')"
            )
        if mean.shape != (count,) or std.shape != (count,):
            raise ValueError(
                f"normalization has {mean.size} means and {std.size} stds for {count} bands "
                f"{self.bands}"
            )
        return mean.astype(np.float32), floor_std(std).astype(np.float32)

    def select(self, bands: Sequence[str]) -> RasterContract:
        """This contract for input holding ``bands`` (a subset or reordering of its bands):
        per-band normalization statistics and wavelengths follow the bands.

        Raises:
            ValueError: naming the bands the contract does not have.
        """
        unknown = [b for b in bands if b not in self.bands]
        if unknown:
            raise ValueError(f"bands {unknown} are not bands of the contract ({self.bands})")
        positions = [self.bands.index(b) for b in bands]
        norm = dict(self.normalization or {})
        for key in ("mean", "std"):
            if isinstance(norm.get(key), Sequence):
                norm[key] = [norm[key][i] for i in positions]
        waves = self.wavelengths_um
        return dataclasses.replace(
            self,
            bands=list(bands),
            normalization=norm or None,
            wavelengths_um=[waves[i] for i in positions] if waves is not None else None,
        )

    def normalize(self, x: Tensor) -> Tensor:
        """``(..., C, H, W)`` raw band values → the model's input."""
        mean, std = (torch.as_tensor(v, device=x.device)[:, None, None] for v in self.moments())
        return standardize(x, mean, std)
