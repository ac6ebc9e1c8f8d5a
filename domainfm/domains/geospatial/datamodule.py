"""Lightning data module for self-supervised pretraining on multiband rasters.

Windows are read on the fly (windowed GeoTIFF reads in the loader workers), normalized with
per-band statistics computed once over the files (cached as JSON with ``stats_cache``), and
masked for MAE in the workers; ``views=2`` adds same-place pairs from two dates for
contrastive objectives (temporal positives); ``time_steps``/``band_groups`` give time series
and SatMAE's spectral-temporal cube (for
:class:`~domainfm.domains.geospatial.spectral_temporal.SpectralTemporalViT`, see
``configs/geospatial/satmae_s2.yaml``), masked per token or, with ``masking="tube"``, at the
same spatial patches in every date and band group.

Example (YAML for ``domainfm fit``)::

    data:
      class_path: domainfm.domains.geospatial.RasterPretrainDataModule
      init_args:
        files: [geospatial/eolearn_s2_slovenia_patch/s2_l1c_13band/*.tif]
        band_names: [B01, B02, B03, B04, B05, B06, B07, B08, B8A, B09, B10, B11, B12]
        size: 32
        patch_size: 8

Relative paths (and glob patterns) resolve against the example-data root
(``$DOMAINFM_DATA`` or ``../shared/data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import lightning as L
from torchdata.stateful_dataloader import StatefulDataLoader

from domainfm.core.masking import (
    BlockMasking,
    MaskGenerator,
    MaskingCollate,
    RandomMasking,
    TubeMasking,
)
from domainfm.data.data_root import expand_files
from domainfm.data.sampling import seeded_loader
from domainfm.domains.geospatial.contract import (
    RasterContract,
    ground_sample_distance,
    standardization,
)
from domainfm.domains.geospatial.normalization import band_stats_for
from domainfm.domains.geospatial.spectral_temporal import CUBE_AXES
from domainfm.domains.geospatial.stats import BandStats
from domainfm.domains.geospatial.windows import RasterWindowDataset


def raster_masking_collate(
    *,
    masking: Literal["random", "block", "tube"],
    mask_ratio: float,
    patch_size: int,
    time_steps: int,
    band_groups: Sequence[Sequence[str]] | None,
) -> MaskingCollate:
    """The MAE mask collate of raster windows: per-token masks on single dates; on time
    series ``(C, T, h, w)`` and band-group cubes a ``(1, p, p)`` token grid, with ``"tube"``
    masking the same spatial patches at every date / band group."""
    cube = time_steps > 1 or band_groups is not None
    axes = (CUBE_AXES if band_groups is not None else ("t", "h", "w")) if cube else None
    generator: MaskGenerator
    if masking == "random":
        generator = RandomMasking(ratio=mask_ratio)
    elif masking == "block" and not cube:
        generator = BlockMasking(ratio=mask_ratio)
    elif masking == "tube" and axes is not None:
        generator = TubeMasking(axis=axes[0], ratio=mask_ratio)
    else:
        raise ValueError(
            f"masking={masking!r}: 'random', 'block' for single-date windows, 'tube' for "
            "time series or band-group cubes"
        )
    return MaskingCollate(
        masking=generator,
        patch_size=(1, patch_size, patch_size) if cube else patch_size,
        axes=axes,
    )


class RasterPretrainDataModule(L.LightningDataModule):
    """Random windows of rasters, normalized per band, with MAE masks drawn in the workers.

    Args:
        files: rasters (paths or glob patterns; all with the same bands).
        size: window size in pixels.
        bands: bands to use (1-based indices or names); default all.
        band_names: names of the files' bands (e.g. Sentinel-2 ``B01`` … ``B12``).
        released_input: name of a registered release (e.g.
            ``"torchgeo-resnet50-sentinel2-all-moco"``) whose input normalization to use
            instead of statistics computed over the files; the files are checked to be in
            its units first (mis-scaled input is refused with the factor that fixes it).
        input_scale: factor applied to the raw values before that normalization (e.g.
            ``10000`` for reflectance 0..1 into weights trained on L1C digital numbers).
        stats_cache: JSON file caching the per-band statistics between runs.
        patch_size: the backbone's spatial patch size (for the mask grid; time series and
            cubes are cut ``1 × p × p``).
        mask_ratio: fraction of tokens hidden from the encoder.
        masking: ``"random"``, ``"block"`` (2D windows) or ``"tube"`` (series and cubes: the
            same spatial patches in every date / band group, SatMAE's consistent masking).
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
        batch_size: windows per batch.
        num_workers: loader worker processes (each opens its own file handles).
        seed: seed of window order, positions and masks (exactly resumable).
    """

    def __init__(
        self,
        *,
        files: Sequence[str],
        size: int = 32,
        bands: Sequence[int] | Sequence[str] | None = None,
        band_names: Sequence[str] | None = None,
        stats_cache: str | None = None,
        released_input: str | None = None,
        input_scale: float = 1.0,
        patch_size: int = 8,
        mask_ratio: float = 0.75,
        masking: Literal["random", "block", "tube"] = "random",
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
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.patterns = list(files)
        self.size = size
        self.bands = bands
        self.band_names = list(band_names) if band_names is not None else None
        self.stats_cache = stats_cache
        self.released_input = released_input
        self.input_scale = input_scale
        self.views = views
        self.samples_per_epoch = samples_per_epoch
        self.sampling: Literal["random", "grid"] = sampling
        self.stride = stride
        self.min_valid = min_valid
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.time_steps = time_steps
        self.places: Literal["grid", "footprint"] = places
        self.reproject = reproject
        self.date_pattern = date_pattern
        self.geo_clusters = geo_clusters
        self.band_groups = [list(g) for g in band_groups] if band_groups is not None else None
        self.collate = raster_masking_collate(
            masking=masking,
            mask_ratio=mask_ratio,
            patch_size=patch_size,
            time_steps=time_steps,
            band_groups=band_groups,
        )
        self.stats: BandStats | None = None
        self.train_set: RasterWindowDataset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        files = expand_files(self.patterns)
        self.stats = band_stats_for(
            files,
            released_input=self.released_input,
            input_scale=self.input_scale,
            cache=self.stats_cache,
            bands=self.bands,
            band_names=self.band_names,
        )
        self.train_set = RasterWindowDataset(
            files=files,
            size=self.size,
            bands=self.bands,
            band_names=self.band_names,
            stats=self.stats,
            samples_per_epoch=self.samples_per_epoch,
            views=self.views,
            min_valid=self.min_valid,
            sampling=self.sampling,
            stride=self.stride,
            time_steps=self.time_steps,
            band_groups=self.band_groups,
            places=self.places,
            reproject=self.reproject,
            date_pattern=self.date_pattern,
            geo_clusters=self.geo_clusters,
        )

    def train_dataloader(self) -> StatefulDataLoader:
        """A resumable loader (split across DDP ranks): its position is saved in checkpoints
        and restored on resume."""
        assert self.train_set is not None, "call setup('fit') first"
        return seeded_loader(
            self.train_set,
            batch_size=self.batch_size,
            seed=self.seed,
            num_workers=self.num_workers,
            collate_fn=self.collate,
        )

    def input_contract(self) -> RasterContract:
        """Bands, their normalization and the grid a model trained on this data expects."""
        stats = self.stats
        if stats is None:
            raise RuntimeError("the input contract is known after setup() computed band stats")
        info = self.train_set.infos[0] if self.train_set is not None else None
        return RasterContract(
            bands=list(stats.band_names),
            normalization=standardization(stats.mean, stats.std),
            gsd_m=ground_sample_distance(info.crs, info.res) if info is not None else None,
            released_input=self.released_input,
            input_scale=self.input_scale,
            window=self.size,
            extra={
                "crs": str(info.crs) if info is not None else None,
                "resolution": list(info.res) if info is not None else None,
                "time_steps": self.time_steps,
                "band_groups": self.band_groups,
            },
        )
