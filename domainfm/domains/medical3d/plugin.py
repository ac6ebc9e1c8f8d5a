"""The medical3d domain plugin: ``domainfm prepare medical3d`` options, ``domainfm
segment`` on NIfTI files and DICOM series (sliding windows, NIfTI out with the input's
affine) and ``domainfm detect`` (sliding windows, world boxes out as MONAI JSON + CSV, and
with ``--box-mask`` a NIfTI box mask on the input's grid).

``prepare`` and ``segment`` take ``--assume-geometry {sform,qform}``: by default a NIfTI file
whose qform and sform disagree is refused (readers differ on which one wins); the option
states which one places the voxels (``geometry=`` of
:func:`~domainfm.domains.medical3d.io.load_volume`).
"""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from domainfm.core.contract import InputContract
from domainfm.data.shards import Preparer
from domainfm.domains.medical3d.benchmark_hooks import VolumeBenchmark
from domainfm.domains.medical3d.contract import VolumeContract, check_hu_window, check_spacing
from domainfm.domains.medical3d.detect_volume import detect_volume
from domainfm.domains.medical3d.inference import segment_volume
from domainfm.domains.medical3d.shards import VolumePreparer
from domainfm.domains.plugin import (
    DetectRequest,
    DomainPlugin,
    SegmentRequest,
    check_output,
    register_domain,
)
from domainfm.tasks.detection3d_module import Detection3DModule
from domainfm.tasks.finetune_module import FinetuneModule

GEOMETRY_HELP = (
    "for a NIfTI file whose qform and sform disagree (refused by default): assume the sform "
    "(nibabel's and MONAI's choice) or the qform (ITK's when the sform is not rigid) gives "
    "the true voxel positions"
)


def _add_geometry_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assume-geometry", choices=["sform", "qform"], help=GEOMETRY_HELP)


@register_domain
class Medical3DPlugin(DomainPlugin):
    """CT/MRI volumes (NIfTI, DICOM series)."""

    name = "medical3d"
    summary = "CT/MRI volumes: NIfTI files and DICOM series"
    contract = VolumeContract
    benchmark = VolumeBenchmark()  # domainfm benchmark: its task formats and hooks
    segment_suffixes = (".nii.gz", ".nii")
    detect_suffixes = (".json",)  # MONAI's detection JSON, with a .csv beside it

    def add_prepare_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--spacing", type=float, nargs="+", default=[1.5], help="mm")
        parser.add_argument("--modality", choices=["ct", "mri"], default="ct")
        parser.add_argument("--hu-window", type=float, nargs=2, default=[-1000.0, 1000.0])
        _add_geometry_argument(parser)

    def preparer(self, args: argparse.Namespace) -> Preparer:
        if len(args.spacing) not in (1, 3):
            raise ValueError(f"--spacing takes one value or three, got {args.spacing}")
        check_spacing(args.spacing, what="--spacing")  # before any worker starts
        check_hu_window(args.hu_window, what="--hu-window")
        return VolumePreparer(
            spacing=args.spacing[0] if len(args.spacing) == 1 else args.spacing,
            modality=args.modality,
            hu_window=tuple(args.hu_window),
            dtype=args.dtype or "float16",
            geometry=args.assume_geometry or "strict",
        )

    def add_segment_arguments(self, parser: argparse.ArgumentParser) -> None:
        _add_geometry_argument(parser)

    def segment(
        self, module: FinetuneModule, contract: InputContract, request: SegmentRequest
    ) -> str:
        if not isinstance(contract, VolumeContract):
            raise ValueError(
                f"a volume model records a VolumeContract, not {type(contract).__name__}"
            )
        roi = request.roi_size or contract.crop_size
        if roi is None:
            raise ValueError("the model records no training crop size: give --roi-size")
        out = segment_volume(
            module,
            request.input,
            request.output,
            roi_size=roi,
            spacing=contract.spacing,
            modality=contract.modality,
            hu_window=contract.window,
            overlap=request.overlap,
            sw_batch_size=request.batch_size,
            device=request.device,
            progress=request.progress,
            geometry=request.options.get("assume_geometry") or "strict",
            num_classes=module.num_classes,
        )
        return f"{out} ({module.num_classes} classes, input's grid and affine)"

    def detect(self, module: nn.Module, contract: InputContract, request: DetectRequest) -> str:
        """Boxes of a :class:`~domainfm.tasks.detection3d_module.Detection3DModule` over the
        whole volume, written as ``request.output`` (JSON), the same name with ``.csv``, and
        ``options["box_mask"]`` (a NIfTI on the input's grid) when given."""
        if not isinstance(module, Detection3DModule):
            raise ValueError(
                f"a volume detector is a Detection3DModule, not {type(module).__name__}"
            )
        if not isinstance(contract, VolumeContract):
            raise ValueError(
                f"a volume model records a VolumeContract, not {type(contract).__name__}"
            )
        channels = (
            contract.channels if isinstance(contract.channels, int) else len(contract.channels)
        )
        if channels != 1:
            raise ValueError(f"the model takes {channels} channels; detect reads one volume")
        overwrite = bool(request.options.get("overwrite"))
        inputs = [request.input, request.output]
        table = check_output(request.output.with_suffix(".csv"), inputs=inputs, overwrite=overwrite)
        mask = request.options.get("box_mask")
        if mask is not None:
            mask = check_output(
                mask, inputs=inputs, suffixes=self.segment_suffixes, overwrite=overwrite
            )
        module.configure_inference(
            score_threshold=request.score_threshold,
            nms_iou=request.nms_iou,
            sw_overlap=request.overlap,
            sw_batch_size=request.batch_size,
        )
        report: dict[str, Any] = {}
        written = detect_volume(
            module,
            request.input,
            request.output,
            contract=contract,
            csv_path=table,
            box_mask=mask,
            roi_size=module.roi_size,
            device=request.device,
            report=report,
        )
        return (
            f"{', '.join(str(p) for p in written)} ({report['boxes']} boxes in world RAS mm, "
            f"windows of {' x '.join(map(str, module.roi_size))} voxels at {contract.spacing} mm)"
        )
