"""Hostile DICOM series folders through ``domainfm segment`` (API: ``segment_volume``):
missing, duplicated and unevenly spaced slices, mixed series, orientations and sizes, cut pixel
data, missing or zero ``PixelSpacing``, colour and multi-frame files, stray files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cases_medical import segment_run
from hostile_files import empty, garbage, truncate, write_series
from hostile_spec import Case, Ctx, Run
from pydicom.uid import JPEG2000

G = "dicom"
PENDING_CUT = "a slice with cut pixel data reported as such (not as a missing tag)"


def _series(
    mutate: Callable[[int, Any], Any] | None = None, count: int = 6, name: str = "series"
) -> Callable[[Ctx], Run]:
    """``segment`` of a 6-slice 16 × 16 CT series with ``mutate(i, ds)`` applied per slice."""

    def build(ctx: Ctx) -> Run:
        folder = write_series(ctx.root / name, count, mutate=mutate)
        return segment_run(ctx, folder)

    return build


def _after(edit: Callable[[Path], Any], name: str = "series") -> Callable[[Ctx], Run]:
    """A good series, then ``edit(folder)``."""

    def build(ctx: Ctx) -> Run:
        folder = write_series(ctx.root / name)
        edit(folder)
        return segment_run(ctx, folder)

    return build


def _on(index: int, **tags: Any) -> Callable[[int, Any], Any]:
    """Set ``tags`` on slice ``index`` (``None`` deletes the tag)."""

    def mutate(i: int, ds: Any) -> None:
        if i != index and index >= 0:
            return
        for tag, value in tags.items():
            if value is None:
                delattr(ds, tag)
            else:
                setattr(ds, tag, value)

    return mutate


ALL = -1


def _drop(index: int) -> Callable[[int, Any], bool]:
    return lambda i, ds: i != index


def _position(z_of: Callable[[int], float]) -> Callable[[int, Any], None]:
    def mutate(i: int, ds: Any) -> None:
        ds.ImagePositionPatient = [0.0, 0.0, float(z_of(i))]

    return mutate


def _small(i: int, ds: Any) -> None:
    if i == 2:
        ds.Rows, ds.Columns = 8, 8
        ds.PixelData = bytes(8 * 8 * 2)


def _colour(i: int, ds: Any) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(16 * 16 * 3)


def _multiframe(i: int, ds: Any) -> None:
    ds.NumberOfFrames = 6
    ds.PixelData = bytes(16 * 16 * 2 * 6)


def _huge_rows(i: int, ds: Any) -> None:
    if i == 1:
        ds.Rows, ds.Columns = 65535, 65535


def _compressed(i: int, ds: Any) -> None:
    if i == 2:
        ds.file_meta.TransferSyntaxUID = JPEG2000
        ds.PixelData = b"\xfe\xff\x00\xe0" + bytes(60)


def _mixed(ctx: Ctx) -> Run:
    folder = write_series(ctx.root / "series")
    write_series(folder, 3, series_uid="1.2.826.0.1.3680043.8.498.3", prefix="other")
    return segment_run(ctx, folder)


def _stray_text(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    for i in range(3):
        (folder / f"note_{i}.txt").write_text("not a slice")


def _nested(ctx: Ctx) -> Run:
    outer = ctx.root / "study"
    write_series(outer / "inner")
    return segment_run(ctx, outer)


ODD = os.fsdecode(b"s\xe9rie \xff")


def _cases() -> list[Case]:
    return [
        Case("dicom_good_series_segments", G, _series(), code=0),
        Case("dicom_missing_slice", G, _series(_drop(3)), pattern="slice spacing|missing"),
        Case(
            "dicom_uneven_gaps",
            G,
            _series(_position(lambda i: [0, 2, 4, 7, 9, 11][i])),
            pattern="slice spacing|irregular",
        ),
        Case(
            "dicom_duplicate_positions",
            G,
            _series(_position(lambda i: 2 * min(i, 4))),
            pattern="same position",
        ),
        Case("dicom_mixed_series", G, _mixed, pattern="series"),
        Case(
            "dicom_cut_pixel_data",
            G,
            _after(lambda f: truncate(sorted(f.iterdir())[2], 0.7)),
            pattern="pixel|truncat|cut|PixelData",
            pending=PENDING_CUT,
        ),
        Case(
            "dicom_missing_pixel_spacing",
            G,
            _series(_on(ALL, PixelSpacing=None)),
            pattern="PixelSpacing",
        ),
        Case(
            "dicom_zero_pixel_spacing",
            G,
            _series(_on(ALL, PixelSpacing=[0.0, 0.0])),
            pattern="PixelSpacing",
        ),
        Case(
            "dicom_negative_pixel_spacing",
            G,
            _series(_on(ALL, PixelSpacing=[-1.0, 1.0])),
            pattern="PixelSpacing",
        ),
        Case(
            "dicom_pixel_spacing_one_value",
            G,
            _series(_on(ALL, PixelSpacing=[1.0])),
            pattern="PixelSpacing",
        ),
        Case(
            "dicom_missing_position",
            G,
            _series(_on(2, ImagePositionPatient=None)),
            pattern="ImagePositionPatient",
        ),
        Case(
            "dicom_missing_orientation",
            G,
            _series(_on(ALL, ImageOrientationPatient=None)),
            pattern="ImageOrientationPatient",
        ),
        Case(
            "dicom_degenerate_orientation",
            G,
            _series(_on(ALL, ImageOrientationPatient=[1.0, 0, 0, 1.0, 0, 0])),
        ),
        Case(
            "dicom_mixed_orientation",
            G,
            _series(_on(2, ImageOrientationPatient=[0.0, 1, 0, 1, 0, 0])),
            pattern="ImageOrientationPatient",
        ),
        Case("dicom_mixed_sizes", G, _series(_small), pattern="size"),
        Case("dicom_single_slice", G, _series(count=1), pattern="single"),
        Case(
            "dicom_empty_folder",
            G,
            lambda ctx: segment_run(ctx, ctx.path("series", "x").parent),
            pattern="no DICOM",
        ),
        Case("dicom_only_text_files", G, _after(_stray_text), pattern="no DICOM"),
        Case(
            "dicom_garbage_slice",
            G,
            _after(lambda f: garbage(f / "slice_002.dcm")),
            pattern="pixel data",
        ),
        Case(
            "dicom_empty_slice_file",
            G,
            _after(lambda f: empty(f / "slice_002.dcm")),
            pattern="pixel data|empty",
        ),
        Case("dicom_colour_slices", G, _series(_colour), pattern="colou?r"),
        Case("dicom_multiframe_file", G, _series(_multiframe, count=1), pattern="multi-frame"),
        Case("dicom_rows_declared_huge", G, _series(_huge_rows), pending=PENDING_CUT),
        Case("dicom_unsupported_compression", G, _series(_compressed), pattern="pixel"),
        Case(
            "dicom_zero_rescale_slope",
            G,
            _series(_on(ALL, RescaleSlope=0.0)),
            pattern="RescaleSlope|constant",
        ),
        Case("dicom_series_in_subfolder", G, _nested, pattern="no DICOM"),
        Case("dicom_odd_folder_name", G, _series(_drop(3), name=ODD)),
    ]


CASES: list[Case] = _cases()
