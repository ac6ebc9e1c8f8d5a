"""Remote sensing (multispectral satellite/aerial rasters): windowed GeoTIFF reading with
validity masks and clear errors, grid checks/reprojection, and cached per-band statistics."""

from domainfm.domains.geospatial.datamodule import RasterPretrainDataModule
from domainfm.domains.geospatial.io import (
    LANDSAT_RGB,
    SENTINEL2_L1C_BANDS,
    AlignedRasters,
    Grid,
    Raster,
    RasterInfo,
    check_same_grid,
    open_aligned,
    raster_info,
    read_raster,
    resolve_bands,
)
from domainfm.domains.geospatial.labeled_windows import LabeledRasterDataset
from domainfm.domains.geospatial.seg_datamodule import RasterSceneDataModule, RasterSegDataModule
from domainfm.domains.geospatial.spectral_temporal import (
    SATMAE_S2_GROUPS,
    SpectralTemporalViT,
    band_group_cube,
)
from domainfm.domains.geospatial.stats import BandStats, compute_band_stats
from domainfm.domains.geospatial.temporal_index import SpatioTemporalIndex, acquisition_date
from domainfm.domains.geospatial.tiled_inference import predict_raster
from domainfm.domains.geospatial.windows import RasterWindowDataset

__all__ = [
    "LANDSAT_RGB",
    "SATMAE_S2_GROUPS",
    "SENTINEL2_L1C_BANDS",
    "AlignedRasters",
    "BandStats",
    "Grid",
    "LabeledRasterDataset",
    "Raster",
    "RasterInfo",
    "RasterPretrainDataModule",
    "RasterSceneDataModule",
    "RasterSegDataModule",
    "RasterWindowDataset",
    "SpatioTemporalIndex",
    "SpectralTemporalViT",
    "acquisition_date",
    "band_group_cube",
    "check_same_grid",
    "compute_band_stats",
    "open_aligned",
    "predict_raster",
    "raster_info",
    "read_raster",
    "resolve_bands",
]
