"""Lightning data module for self-supervised pretraining on multiband rasters.

Windows are read on the fly (windowed GeoTIFF reads in the loader workers), normalized with
per-band statistics computed once over the files (cached as JSON with ``stats_cache``), and
masked for MAE in the workers; ``views=2`` adds same-place pairs from two dates for
contrastive objectives (temporal positives); ``time_steps``/``band_groups`` give time series
and SatMAE's spectral-temporal cube (for
:class:`~domainfm.domains.geospatial.spectral_temporal.SpectralTemporalViT`, see
``configs/geospatial/satmae_s2.yaml``), masked per token or, with masking ``kind: tube``, at
the same spatial patches in every date and band group; ``landcover`` adds each view's
land-cover class fractions from a land-cover raster (SoftCon's multi-label targets, see
``configs/geospatial/softcon_s2.yaml``).

Example (YAML for ``domainfm fit``)::

    data:
      class_path: domainfm.domains.geospatial.RasterPretrainDataModule
      init_args:
        files: [geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/*.tif]
        band_names: [B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12]
        size: 32
        masking: {patch_size: 8}

Relative paths (and glob patterns) resolve against the example-data root
(``$DOMAINFM_DATA`` or ``../shared/data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from domainfm.core.masking import MaskingCollate, MaskingSpec
from domainfm.data.data_root import expand_files
from domainfm.domains.geospatial.contract import RasterContract, ground_sample_distance
from domainfm.domains.geospatial.landcover_targets import LandCoverFractions, LandCoverSpec
from domainfm.domains.geospatial.raster_datamodule import RasterDataModule
from domainfm.domains.geospatial.spectral_temporal import CUBE_AXES
from domainfm.domains.geospatial.temporal_index import check_date_pattern
from domainfm.domains.geospatial.windows import RasterWindowDataset

RASTER_MASKING = MaskingSpec(patch_size=8)
"""The raster data modules' default masking: 75 % random tokens of a patch-8 grid."""


def raster_masking_collate(
    *, masking: MaskingSpec, time_steps: int, band_groups: Sequence[Sequence[str]] | None
) -> MaskingCollate:
    """The MAE mask collate of raster windows: per-token masks on single dates; on time
    series ``(C, T, h, w)`` and band-group cubes a ``(1, p, p)`` token grid, with ``"tube"``
    masking the same spatial patches at every date / band group."""
    cube = time_steps > 1 or band_groups is not None
    axes = (CUBE_AXES if band_groups is not None else ("t", "h", "w")) if cube else None
    if masking.kind not in (("random", "tube") if cube else ("random", "block")):
        raise ValueError(
            f"masking={masking.kind!r}: 'random', 'block' for single-date windows, 'tube' for "
            "time series or band-group cubes"
        )
    p = masking.patch_size
    return masking.collate(
        patch_size=((1, p, p) if isinstance(p, int) else (1, *p)) if cube else None, axes=axes
    )


class RasterPretrainDataModule(RasterDataModule):
    """Random windows of rasters, normalized per band, with MAE masks drawn in the workers.

    Args:
        files: rasters (paths or glob patterns; all with the same bands).
        masking: the MAE masks: the backbone's spatial patch size (time series and cubes
            are cut ``1 × p × p``), the ratio, and the kind: ``"random"``, ``"block"`` (2D
            windows) or ``"tube"`` (series and cubes: the same spatial patches in every
            date / band group, SatMAE's consistent masking).
        views: 2 adds same-place pairs from two dates (``"view1"``/``"view2"``).
        samples_per_epoch: windows per epoch (``sampling="random"``).
        sampling: ``"random"`` windows, or every ``"grid"`` window with at least
            ``min_valid`` valid pixels (the epoch is the grid).
        stride: step of the grid (default: ``size``).
        time_steps: dates per sample (``(C, T, h, w)`` series of one place).
        band_groups: band names per group: samples become the cube ``(C_g, T·G, h, w)``.
        places: dates of one place share a ``"grid"``, or overlap in ``"footprint"``
            (ordered by acquisition date; see :class:`RasterWindowDataset`).
        reproject: read a place's dates on other grids reprojected onto its earliest one.
        date_pattern: regex with named groups for dates in file names.
        geo_clusters: ``K``: samples carry ``"geo_label"``, their place's k-means region
            (geography-aware SSL's pretext labels).
        min_valid: least fraction of valid pixels in a window.
        landcover: a land-cover raster: samples carry each view's class fractions
            (``"landcover"``, or ``"landcover1"``/``"landcover2"`` with ``views=2``).
        **kwargs: ``size`` (window size in pixels), ``bands``, ``band_names``,
            ``stats_cache``, ``released_input``, ``input_scale`` (the statistics: see
            :class:`~domainfm.domains.geospatial.raster_datamodule.RasterDataModule`),
            ``batch_size`` (windows per batch), ``num_workers`` (each opens its own file
            handles), ``seed`` (of window order, positions and masks): see
            :class:`~domainfm.data.datamodule.SeededDataModule`.
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        masking: MaskingSpec = RASTER_MASKING,
        views: int = 1,
        samples_per_epoch: int = 256,
        sampling: Literal["random", "grid"] = "random",
        stride: int | None = None,
        time_steps: int = 1,
        band_groups: Sequence[Sequence[str]] | None = None,
        places: Literal["grid", "footprint"] = "grid",
        reproject: bool = False,
        date_pattern: str | None = None,
        geo_clusters: int | None = None,
        min_valid: float = 0.5,
        landcover: LandCoverSpec | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.patterns = list(files)
        self.band_groups = [list(g) for g in band_groups] if band_groups is not None else None
        self.window_options: dict[str, Any] = {  # how RasterWindowDataset draws samples
            "samples_per_epoch": samples_per_epoch,
            "views": views,
            "min_valid": min_valid,
            "sampling": sampling,
            "stride": stride,
            "time_steps": time_steps,
            "band_groups": self.band_groups,
            "places": places,
            "reproject": reproject,
            "date_pattern": check_date_pattern(date_pattern),
            "geo_clusters": geo_clusters,
        }
        self.collate = raster_masking_collate(
            masking=masking, time_steps=time_steps, band_groups=band_groups
        )
        self.landcover = landcover
        self.train_set: RasterWindowDataset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        files = expand_files(self.patterns)
        self.train_set = RasterWindowDataset(
            files=files,
            size=self.size,
            bands=self.bands,
            band_names=self.band_names,
            stats=self.compute_stats(files),
            landcover=self._landcover(),
            **self.window_options,
        )

    def _landcover(self) -> LandCoverFractions | None:
        spec = self.landcover
        if spec is None:
            return None
        paths = expand_files([spec.file])
        if len(paths) != 1:
            raise ValueError(f"landcover file {spec.file!r} names {len(paths)} files, not one")
        return LandCoverFractions(
            file=paths[0], classes=spec.classes, ignore_values=spec.ignore_values
        )

    def input_contract(self) -> RasterContract:
        """Bands, their normalization and the grid a model trained on this data expects."""
        info = self.train_set.infos[0] if self.train_set is not None else None
        return self.raster_contract(
            gsd_m=ground_sample_distance(info.crs, info.res) if info is not None else None,
            extra={
                "crs": str(info.crs) if info is not None else None,
                "resolution": list(info.res) if info is not None else None,
                "time_steps": self.window_options["time_steps"],
                "band_groups": self.band_groups,
            },
        )
