"""Remote sensing (multispectral/SAR rasters and time series): windowed GeoTIFF reading with
validity masks and clear errors, grid checks/reprojection, cached per-band statistics,
random/grid window sampling, temporal positives and series, SatMAE-style spectral-temporal
tokens, timm CNN backbones with any band count, released SSL4EO-S12 / TorchGeo Sentinel-2
weights, segmentation/scene/detection fine-tuning data, tiled GeoTIFF segmentation and
tiled detection to GeoJSON."""

from domainfm.domains.geospatial import released  # registers the released checkpoints
from domainfm.domains.geospatial.boxes import (
    boxes_to_map,
    boxes_to_pixels,
    connected_components,
    mask_boxes,
    write_boxes_geojson,
)
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.datamodule import RasterPretrainDataModule
from domainfm.domains.geospatial.geo_clusters import geo_cluster_labels
from domainfm.domains.geospatial.labeled_windows import LabeledRasterDataset
from domainfm.domains.geospatial.normalization import check_input_scale, normalize_input
from domainfm.domains.geospatial.plugin import GeospatialPlugin
from domainfm.domains.geospatial.raster_align import AlignedRasters, check_same_grid, open_aligned
from domainfm.domains.geospatial.raster_header import (
    LANDSAT_RGB,
    SENTINEL2_L1C_BANDS,
    Grid,
    RasterInfo,
    raster_info,
    resolve_bands,
)
from domainfm.domains.geospatial.raster_read import Raster, read_raster
from domainfm.domains.geospatial.raster_reader import RasterReader
from domainfm.domains.geospatial.released import S2_L1C_DN_INPUT
from domainfm.domains.geospatial.seg_datamodule import (
    RasterDetectionDataModule,
    RasterSceneDataModule,
    RasterSegDataModule,
)
from domainfm.domains.geospatial.shards import ChipPreparer, StreamingRasterDataModule
from domainfm.domains.geospatial.spectral_temporal import (
    SATMAE_S2_GROUPS,
    SpectralTemporalViT,
    band_group_cube,
)
from domainfm.domains.geospatial.stats import BandStats, compute_band_stats
from domainfm.domains.geospatial.temporal_index import SpatioTemporalIndex, acquisition_date
from domainfm.domains.geospatial.tiled_detection import detect_raster
from domainfm.domains.geospatial.tiled_inference import predict_raster
from domainfm.domains.geospatial.timm_cnn import TimmCNN
from domainfm.domains.geospatial.windows import RasterWindowDataset

__all__ = [
    "LANDSAT_RGB",
    "S2_L1C_DN_INPUT",
    "SATMAE_S2_GROUPS",
    "SENTINEL2_L1C_BANDS",
    "AlignedRasters",
    "BandStats",
    "ChipPreparer",
    "GeospatialPlugin",
    "Grid",
    "LabeledRasterDataset",
    "Raster",
    "RasterContract",
    "RasterDetectionDataModule",
    "RasterInfo",
    "RasterPretrainDataModule",
    "RasterReader",
    "RasterSceneDataModule",
    "RasterSegDataModule",
    "RasterWindowDataset",
    "SpatioTemporalIndex",
    "SpectralTemporalViT",
    "StreamingRasterDataModule",
    "TimmCNN",
    "acquisition_date",
    "band_group_cube",
    "boxes_to_map",
    "boxes_to_pixels",
    "check_input_scale",
    "check_same_grid",
    "compute_band_stats",
    "connected_components",
    "detect_raster",
    "geo_cluster_labels",
    "mask_boxes",
    "normalize_input",
    "open_aligned",
    "predict_raster",
    "raster_info",
    "read_raster",
    "released",
    "resolve_bands",
    "write_boxes_geojson",
]
