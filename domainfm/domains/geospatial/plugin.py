"""The geospatial domain plugin: ``domainfm prepare geospatial`` options, ``domainfm
segment`` (tiled GeoTIFF in and out) and ``domainfm detect`` (tiled GeoTIFF in, GeoJSON out)."""

from __future__ import annotations

import argparse
from typing import Any

from domainfm.core.contract import InputContract
from domainfm.data.shards import Preparer
from domainfm.domains.geospatial.benchmark_hooks import GeospatialBenchmark
from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.raster_header import RASTER_SUFFIXES
from domainfm.domains.geospatial.shards import ChipPreparer
from domainfm.domains.geospatial.temporal_index import check_date_pattern
from domainfm.domains.geospatial.tiled_detection import GEOJSON_SUFFIXES, detect_raster
from domainfm.domains.geospatial.tiled_inference import predict_raster
from domainfm.domains.plugin import DetectRequest, DomainPlugin, SegmentRequest, register_domain
from domainfm.tasks.detection_module import DetectionModule
from domainfm.tasks.finetune_module import FinetuneModule


@register_domain
class GeospatialPlugin(DomainPlugin):
    """Multispectral rasters and image time series (GeoTIFF)."""

    name = "geospatial"
    summary = "multispectral rasters and time series (GeoTIFF)"
    contract = RasterContract
    segment_suffixes = RASTER_SUFFIXES  # GeoTIFF in, GeoTIFF out
    detect_suffixes = GEOJSON_SUFFIXES
    benchmark = GeospatialBenchmark()  # domainfm benchmark: its task formats and hooks

    def add_prepare_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--chip-size", type=int, default=64)
        parser.add_argument("--stride", type=int, help="chip step (default: chip size)")
        parser.add_argument("--band-names", nargs="+", help="names of the rasters' bands")
        parser.add_argument("--min-valid", type=float, default=0.5, help="valid fraction per date")
        parser.add_argument("--date-pattern", help="regex with named groups year, month, day")

    def preparer(self, args: argparse.Namespace) -> Preparer:
        check_date_pattern(args.date_pattern, what="--date-pattern")
        return ChipPreparer(
            chip_size=args.chip_size,
            stride=args.stride,
            band_names=args.band_names,
            min_valid=args.min_valid,
            dtype=args.dtype or "float32",
            date_pattern=args.date_pattern,
        )

    def segment(
        self, module: FinetuneModule, contract: InputContract, request: SegmentRequest
    ) -> str:
        raster = _raster(contract)
        tile = request.roi_size[0] if request.roi_size else int(raster.window or 256)
        out = predict_raster(
            module, **_tiling(raster, request, tile), batch_size=request.batch_size
        )
        return (
            f"{out} ({module.num_classes} classes, tiles of {tile} px, the input's CRS and "
            "transform)"
        )

    def detect(
        self, module: DetectionModule, contract: InputContract, request: DetectRequest
    ) -> str:
        raster = _raster(contract)
        tile = int(raster.window or module.image_size)
        report: dict[str, int] = {}
        out = detect_raster(
            module,
            **_tiling(raster, request, tile),
            batch_size=request.batch_size,
            score_threshold=request.score_threshold,
            nms_iou=request.nms_iou,
            wgs84=request.wgs84,
            report=report,
        )
        crs = "WGS84" if request.wgs84 else "the input CRS"
        return f"{out} ({report['boxes']} boxes from {report['tiles']} tiles of {tile} px, {crs})"


def _raster(contract: InputContract) -> RasterContract:
    if not isinstance(contract, RasterContract):
        raise ValueError(f"a raster model records a RasterContract, not {type(contract).__name__}")
    return contract


def _tiling(
    contract: RasterContract, request: SegmentRequest | DetectRequest, tile: int
) -> dict[str, Any]:
    """The arguments tiled prediction and detection share: input, output, tiles, the bands
    picked by name and normalized by the contract, device and progress."""
    mean, std = contract.moments()
    return {
        "src": request.input,
        "dst": request.output,
        "tile": tile,
        "overlap": request.overlap,
        "bands": list(contract.bands),
        "mean": mean,
        "std": std,
        "class_names": contract.class_names,
        "device": request.device,
        "progress": request.progress,
    }
