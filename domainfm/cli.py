"""The ``domainfm`` command.

* ``fit``, ``validate``, ``test``, ``predict``: Lightning's CLI over YAML configs in ``configs/``.
* ``export CKPT OUT_DIR``: write ``model.safetensors`` + ``config.json`` for the backbone.
* ``inspect PATH``: print the config and the load report of an export or checkpoint; exits
  0 only when the load is clean.
* ``segment CKPT INPUT OUTPUT``: segmentation with a fine-tuned checkpoint: a whole volume
  (NIfTI or DICOM series in, NIfTI with the input's affine out) or a raster of any size
  (GeoTIFF in, tiled and streamed, GeoTIFF with the input's CRS and transform out).
* ``detect CKPT INPUT OUTPUT``: object detection with a fine-tuned ``DetectionModule``
  checkpoint over a GeoTIFF of any size (tiled; boxes merged across tiles), written as
  GeoJSON polygons in the input's CRS (or WGS84) with class, score and pixel box.
* ``prepare DOMAIN SRC_DIR OUT_DIR``: validate and preprocess raw inputs once into LitData
  shards + ``manifest.json`` (bad inputs listed by name and reason; re-runs are no-ops; new
  files are appended), streamed by the domains' ``Streaming*DataModule``.
* ``sed CKPT OUT.csv FILES...``: sound event detection with a ``SoundEventModule``
  checkpoint; ``file,onset,offset,label`` rows, scored against ``--reference`` if given.

Example::

    domainfm fit --config configs/medical3d/mae_quickstart.yaml
    domainfm export runs/.../last.ckpt exports/ct_mae
    domainfm inspect exports/ct_mae
    domainfm segment runs/.../last.ckpt scan.nii.gz scan_seg.nii.gz
    domainfm detect runs/.../last.ckpt scene.tif objects.geojson
    domainfm prepare medical3d scans/ prepared/ct --spacing 1.5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import lightning as L

from domainfm.tasks.lightning_cli import DomainFMCLI


def _export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="domainfm export", description="Export a training checkpoint's backbone."
    )
    parser.add_argument("ckpt", help="Lightning .ckpt written by a domainfm module")
    parser.add_argument("out_dir", help="folder for model.safetensors + config.json")
    args = parser.parse_args(argv)
    from domainfm.pretrained.export import CONFIG_NAME, WEIGHTS_NAME, export_checkpoint
    from domainfm.pretrained.load import load_backbone

    out = export_checkpoint(args.ckpt, args.out_dir)
    _, report = load_backbone(out)  # prove the export rebuilds cleanly
    print(
        f"domainfm export: wrote {out / WEIGHTS_NAME} and {out / CONFIG_NAME} "
        f"({len(report.loaded)} tensors, load check clean)"
    )
    return 0


def _inspect(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="domainfm inspect",
        description="Print config and load report; exit 0 only for a clean load.",
    )
    parser.add_argument("path", help="export folder, its config.json, or a domainfm .ckpt")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    from domainfm.pretrained.load import load_backbone, read_backbone_source
    from domainfm.pretrained.report import CheckpointMismatchError

    config, _, _ = read_backbone_source(args.path)
    try:
        _, report = load_backbone(args.path)
        code = 0
    except CheckpointMismatchError as err:
        report, code = err.report, 1
    if args.json:
        print(json.dumps({"config": config, "report": report.as_dict()}, indent=2))
    else:
        print(json.dumps(config, indent=2))
        print(report)
    return code


def _segment(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="domainfm segment",
        description=(
            "Segment a whole CT/MRI volume (sliding windows; NIfTI out on the input's grid, "
            "with its affine) or a GeoTIFF (tiled and streamed; GeoTIFF out with the input's "
            "CRS and transform) with a fine-tuned checkpoint."
        ),
    )
    parser.add_argument("ckpt", help="Lightning .ckpt of a FinetuneModule segmentation run")
    parser.add_argument("input", help="NIfTI file, DICOM series folder, or GeoTIFF (raster model)")
    parser.add_argument("output", help="output label map (.nii.gz / .nii, or .tif)")
    parser.add_argument("--overlap", type=float, default=0.5, help="window overlap [0, 1)")
    parser.add_argument("--sw-batch-size", type=int, default=2, help="windows per forward")
    parser.add_argument("--roi-size", type=int, nargs="+", help="window size (default: crop)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    import torch

    from domainfm.domains.medical3d import segment_volume
    from domainfm.tasks.finetune_module import load_finetuned

    module, meta = load_finetuned(args.ckpt)
    if module.task != "segmentation":
        raise ValueError(f"{args.ckpt} is a {module.task} model, not a segmentation model")
    contract = meta.get("input") or {}
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if contract.get("bands"):  # a raster model: tiled, streamed GeoTIFF prediction
        return _segment_raster(args, module.to(device), contract, device)
    needed = [k for k in ("spacing_mm", "modality", "crop_size") if k not in contract]
    if needed and not (args.roi_size and "spacing_mm" in contract and "modality" in contract):
        raise ValueError(
            f"{args.ckpt} does not record its input contract ({', '.join(needed)} missing); "
            "it was not trained through a domainfm data module"
        )
    out = segment_volume(
        module.to(device),
        args.input,
        args.output,
        roi_size=args.roi_size or contract["crop_size"],
        spacing=contract["spacing_mm"],
        modality=contract["modality"],
        hu_window=tuple(contract.get("hu_window", (-1000.0, 1000.0))),
        overlap=args.overlap,
        sw_batch_size=args.sw_batch_size,
        device=device,
        progress=not args.no_progress,
    )
    print(f"domainfm segment: wrote {out} ({module.num_classes} classes, input's grid and affine)")
    return 0


def _segment_raster(
    args: argparse.Namespace, module: Any, contract: dict[str, Any], device: str
) -> int:
    """``domainfm segment`` for a GeoTIFF: tiles of the training window size (or
    ``--roi-size``), the bands picked by name, normalized as in training."""
    from domainfm.domains.geospatial import predict_raster

    norm = contract.get("normalization") or {}
    tile = args.roi_size[0] if args.roi_size else int(contract.get("window") or 256)
    out = predict_raster(
        module,
        args.input,
        args.output,
        tile=tile,
        overlap=args.overlap,
        bands=list(contract["bands"]),
        mean=norm.get("mean"),
        std=norm.get("std"),
        batch_size=args.sw_batch_size,
        device=device,
        progress=not args.no_progress,
        class_names=contract.get("class_names"),
    )
    print(
        f"domainfm segment: wrote {out} ({module.num_classes} classes, tiles of {tile} px, "
        "the input's CRS and transform)"
    )
    return 0


def _detect(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="domainfm detect",
        description=(
            "Detect objects over a GeoTIFF of any size with a fine-tuned DetectionModule "
            "checkpoint (tiles of the training window, boxes merged across tiles); GeoJSON "
            "out in the input's CRS."
        ),
    )
    parser.add_argument("ckpt", help="Lightning .ckpt of a DetectionModule run")
    parser.add_argument("input", help="GeoTIFF with the bands the model was trained on")
    parser.add_argument("output", help="output .geojson")
    parser.add_argument("--overlap", type=float, default=0.25, help="tile overlap [0, 1)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward")
    parser.add_argument("--score-threshold", type=float, default=0.05, help="lowest score kept")
    parser.add_argument("--nms-iou", type=float, default=0.5, help="merge IoU across tiles")
    parser.add_argument("--wgs84", action="store_true", help="longitude/latitude output")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 … (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress")
    args = parser.parse_args(argv)
    import torch

    from domainfm.domains.geospatial import detect_raster
    from domainfm.tasks.detection_module import load_detector

    module, meta = load_detector(args.ckpt)
    module.model.roi_heads.score_thresh = args.score_threshold  # the detector's own cut too
    contract = meta.get("input") or {}
    if not contract.get("bands"):
        raise ValueError(f"{args.ckpt} records no input bands; it was not trained on rasters")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    norm = contract.get("normalization") or {}
    tile = int(contract.get("window") or meta["recipe"]["detect"]["image_size"])
    report: dict[str, Any] = {}
    out = detect_raster(
        module.to(device),
        args.input,
        args.output,
        tile=tile,
        overlap=args.overlap,
        bands=list(contract["bands"]),
        mean=norm.get("mean"),
        std=norm.get("std"),
        batch_size=args.batch_size,
        score_threshold=args.score_threshold,
        nms_iou=args.nms_iou,
        class_names=contract.get("class_names"),
        wgs84=args.wgs84,
        device=device,
        progress=not args.no_progress,
        report=report,
    )
    print(
        f"domainfm detect: wrote {out} ({report['boxes']} boxes from {report['tiles']} tiles "
        f"of {tile} px, {'WGS84' if args.wgs84 else 'the input CRS'})"
    )
    return 0


def _sed(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="domainfm sed",
        description=(
            "Sound event detection with a SoundEventModule checkpoint: audio files of any "
            "length in, a CSV of file,onset,offset,label (seconds) out."
        ),
    )
    parser.add_argument("ckpt", help="Lightning .ckpt of a SoundEventModule run")
    parser.add_argument("output", help="output CSV")
    parser.add_argument("files", nargs="+", help="audio files")
    parser.add_argument("--threshold", type=float, default=0.5, help="activity threshold")
    parser.add_argument("--min-gap", type=float, default=0.1, help="gaps closed (s)")
    parser.add_argument("--min-duration", type=float, default=0.05, help="shortest event (s)")
    parser.add_argument("--reference", help="events CSV to score against (event F1)")
    parser.add_argument("--collar", type=float, default=0.2, help="onset collar (s)")
    args = parser.parse_args(argv)
    from domainfm.domains.audio.sed import (
        detect_events,
        event_f1,
        load_sound_event_model,
        read_events_csv,
        write_events_csv,
    )

    module, meta = load_sound_event_model(args.ckpt)
    events = detect_events(
        module,
        meta,
        args.files,
        threshold=args.threshold,
        min_gap=args.min_gap,
        min_duration=args.min_duration,
    )
    out = write_events_csv(args.output, events)
    score = ""
    if args.reference:
        reference = read_events_csv(args.reference)
        wanted = {str(f) for f in args.files}
        reference = [e for e in reference if e.file in wanted]
        score = f", event F1 {event_f1(events, reference, collar=args.collar):.3f}"
    print(f"domainfm sed: wrote {out} ({len(events)} events in {len(args.files)} files{score})")
    return 0


def _preparer(args: argparse.Namespace) -> Any:
    """The domain's preparer from the parsed ``prepare`` options."""
    if args.domain == "medical3d":
        from domainfm.domains.medical3d.shards import VolumePreparer

        return VolumePreparer(
            spacing=args.spacing,
            modality=args.modality,
            hu_window=tuple(args.hu_window),
            dtype=args.dtype or "float16",
        )
    if args.domain == "geospatial":
        from domainfm.domains.geospatial.shards import ChipPreparer

        return ChipPreparer(
            chip_size=args.chip_size,
            stride=args.stride,
            band_names=args.band_names,
            min_valid=args.min_valid,
            dtype=args.dtype or "float32",
            date_pattern=args.date_pattern,
        )
    from domainfm.domains.audio.frontends import build_frontend
    from domainfm.domains.audio.shards import AudioPreparer

    frontend = build_frontend(
        {"architecture": args.frontend, "kwargs": {"sample_rate": args.sample_rate}}
    )
    return AudioPreparer(
        frontend=frontend,
        segment_s=args.segment_s,
        min_segment_s=args.min_segment_s,
        features=args.features,
    )


def _prepare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="domainfm prepare",
        description=(
            "Validate and preprocess a folder of raw inputs once into streamable LitData "
            "shards with a manifest (counts, shapes, statistics, source checksums). Bad "
            "inputs are skipped and listed; re-running is a no-op; new files are appended."
        ),
    )
    parser.add_argument("domain", choices=["medical3d", "geospatial", "audio"])
    parser.add_argument("src_dir", help="folder of raw inputs (searched recursively)")
    parser.add_argument("out_dir", help="prepared folder (created, or appended to)")
    parser.add_argument("--num-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunk-bytes", default="64MB", help="target shard size")
    parser.add_argument("--dtype", choices=["float16", "float32"], help="stored dtype")
    med = parser.add_argument_group("medical3d")
    med.add_argument("--spacing", type=float, nargs="+", default=[1.5], help="mm")
    med.add_argument("--modality", choices=["ct", "mri"], default="ct")
    med.add_argument("--hu-window", type=float, nargs=2, default=[-1000.0, 1000.0])
    geo = parser.add_argument_group("geospatial")
    geo.add_argument("--chip-size", type=int, default=64)
    geo.add_argument("--stride", type=int, help="chip step (default: chip size)")
    geo.add_argument("--band-names", nargs="+", help="names of the rasters' bands")
    geo.add_argument("--min-valid", type=float, default=0.5, help="valid fraction per date")
    geo.add_argument("--date-pattern", help="regex with named groups year, month, day")
    aud = parser.add_argument_group("audio")
    aud.add_argument("--sample-rate", type=int, default=16000)
    aud.add_argument("--frontend", choices=["log_mel", "kaldi_fbank"], default="log_mel")
    aud.add_argument("--segment-s", type=float, default=10.0, help="item length (s)")
    aud.add_argument("--min-segment-s", type=float, default=0.5, help="shortest last piece")
    aud.add_argument("--features", choices=["wave", "frontend"], default="wave")
    args = parser.parse_args(argv)
    if args.domain == "medical3d" and len(args.spacing) not in (1, 3):
        parser.error("--spacing takes one value or three")
    if args.domain == "medical3d" and len(args.spacing) == 1:
        args.spacing = args.spacing[0]
    from domainfm.data.data_root import resolve_data_path
    from domainfm.data.shards import prepare_shards

    summary = prepare_shards(
        _preparer(args),
        resolve_data_path(args.src_dir),
        args.out_dir,
        num_workers=args.num_workers,
        chunk_bytes=args.chunk_bytes,
        progress=True,
    )
    print(f"domainfm prepare: {summary.describe()}")
    return 0


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of the ``domainfm`` console script."""
    argv = list(sys.argv[1:] if args is None else args)
    commands = {
        "export": _export,
        "inspect": _inspect,
        "segment": _segment,
        "detect": _detect,
        "sed": _sed,
        "prepare": _prepare,
    }
    if argv and argv[0] in commands:
        try:
            sys.exit(commands[argv[0]](argv[1:]))
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            print(f"domainfm {argv[0]}: error: {err}", file=sys.stderr)
            sys.exit(2)
    DomainFMCLI(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
