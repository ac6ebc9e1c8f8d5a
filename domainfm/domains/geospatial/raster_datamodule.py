"""The base of the raster data modules that read windows of files and normalize them with
per-band statistics: the window size, the bands, and where the statistics come from.

The statistics (:func:`~domainfm.domains.geospatial.normalization.band_stats_for`) are
computed once over the files (cached as JSON with ``stats_cache``), or taken from a release's
input contract (``released_input``, after checking that the files are in its units, raw
values × ``input_scale``). A model trained on the data records them as its
:class:`~domainfm.domains.geospatial.contract.RasterContract` (``"standardize"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domainfm.data.datamodule import SeededDataModule
from domainfm.domains.geospatial.contract import RasterContract, standardization
from domainfm.domains.geospatial.normalization import band_stats_for
from domainfm.domains.geospatial.stats import BandStats


class RasterDataModule(SeededDataModule):
    """Windows of rasters normalized per band (see the module docstring); a subclass builds
    its datasets in ``setup`` after :meth:`compute_stats`.

    Args:
        size: window size in pixels.
        bands: bands to use (1-based indices or names); default all.
        band_names: names of the files' bands (e.g. Sentinel-2 ``B01`` … ``B12``).
        stats_cache: JSON file caching the per-band statistics between runs.
        released_input: name of a registered release (e.g.
            ``"torchgeo-resnet50-sentinel2-all-moco"``) whose input normalization to use
            instead of statistics computed over the files; the files are checked to be in
            its units first (mis-scaled input is refused with the factor that fixes it).
        input_scale: factor applied to the raw values before that normalization (e.g.
            ``10000`` for reflectance 0..1 into weights trained on L1C digital numbers).
        **kwargs: ``batch_size``, ``num_workers``, ``seed``: see
            :class:`~domainfm.data.datamodule.SeededDataModule`.

    Attributes:
        stats: the statistics (``None`` until :meth:`compute_stats`).
    """

    def __init__(
        self,
        *,
        size: int = 32,
        bands: Sequence[int] | Sequence[str] | None = None,
        band_names: Sequence[str] | None = None,
        stats_cache: str | None = None,
        released_input: str | None = None,
        input_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.size = size
        self.bands = bands
        self.band_names = list(band_names) if band_names is not None else None
        self.stats_cache = stats_cache
        self.released_input = released_input
        self.input_scale = input_scale
        self.stats: BandStats | None = None

    def compute_stats(self, files: Sequence[str | Path]) -> BandStats:
        """The statistics of ``files`` (or of the release), kept as :attr:`stats`."""
        self.stats = band_stats_for(
            files,
            released_input=self.released_input,
            input_scale=self.input_scale,
            cache=self.stats_cache,
            bands=self.bands,
            band_names=self.band_names,
        )
        return self.stats

    def raster_contract(self, **fields: Any) -> RasterContract:
        """The bands and their standardization by :attr:`stats`, the release and input
        scale, the window size, and ``fields`` (other :class:`RasterContract` fields).

        Raises:
            RuntimeError: before :meth:`compute_stats`.
        """
        stats = self.stats
        if stats is None:
            raise RuntimeError("the input contract is known after setup() computed band stats")
        return RasterContract(
            bands=list(stats.band_names),
            normalization=standardization(stats.mean, stats.std),
            released_input=self.released_input,
            input_scale=self.input_scale,
            window=self.size,
            **fields,
        )
