"""Hostile NIfTI inputs through ``domainfm segment`` (API: ``segment_volume``) and
``domainfm prepare medical3d``: corrupt and truncated files, invented or broken geometry,
unsupported dtypes, size bombs, links, odd names, and bad segment/prepare options."""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from hostile_files import (
    ct_volume,
    damage,
    empty,
    garbage,
    nifti_bytes,
    nifti_image,
    patch_nifti,
    truncate,
    write_nifti,
)
from hostile_spec import Case, Ctx, Run, prepare_case, source_folder

from domainfm.domains.medical3d import segment_volume

G = "medical"
PENDING_GEOMETRY = "geometry validated, never invented"
PENDING_GUARD = "size guards before allocation (resample / sliding window)"
QFORM_ONLY = {"sform_code": 0}


def segment_run(ctx: Ctx, src: Path, *extra: str, api: bool = True, **run: Any) -> Run:
    """``domainfm segment`` of ``src`` with the medical model; the API call segments it with
    ``segment_volume`` into another file."""
    out = ctx.root / "seg.nii.gz"
    api_out = ctx.root / "api_seg.nii.gz"

    def call() -> object:
        return segment_volume(
            ctx.models.medical_module,
            src,
            api_out,
            roi_size=16,
            spacing=2.0,
            modality="ct",
            device="cpu",
        )

    run.setdefault("names", (src.name,))
    return Run(
        ["segment", str(ctx.models.medical_seg), str(src), str(out), "--no-progress", *extra],
        api=call if api else None,
        outputs=(out,),
        unchanged=(src,) if src.is_file() else (),
        **run,
    )


def _seg(make: Callable[[Ctx], Path], *extra: str, **run: Any) -> Callable[[Ctx], Run]:
    return lambda ctx: segment_run(ctx, make(ctx), *extra, **run)


def _nii(name: str = "scan.nii.gz", /, **fields: Any) -> Callable[[Ctx], Path]:
    """A NIfTI file with header ``fields`` patched."""
    return lambda ctx: write_nifti(ctx.path(name), nifti_bytes(), **fields)


def _then(make: Callable[[Ctx], Path], damage_it: Callable[[Path], Any]) -> Callable[[Ctx], Path]:
    def both(ctx: Ctx) -> Path:
        path = make(ctx)
        damage_it(path)
        return path

    return both


def _array(name: str, array: Callable[[], np.ndarray], zooms: tuple[float, ...] = (2.0, 2.0, 2.0)):
    return lambda ctx: nifti_image(ctx.path(name), array(), zooms)


def _float_ct(value: float) -> Callable[[], np.ndarray]:
    def make() -> np.ndarray:
        vol = ct_volume().astype(np.float32)
        vol[3, 4, 5] = value
        return vol

    return make


def _huge_sparse(ctx: Ctx) -> Path:
    """A .nii declaring 2000³ int16 voxels, stored as a 16 GB sparse file."""
    path = ctx.path("huge.nii")
    raw = nifti_bytes(np.zeros((2, 2, 2), np.int16))
    path.write_bytes(patch_nifti(raw, dim=[3, 2000, 2000, 2000, 1, 1, 1, 1]))
    os.truncate(path, 352 + 2000**3 * 2)
    return path


def _gzip_bomb(ctx: Ctx) -> Path:
    """A ~1 MB .nii.gz that decodes to 1 GiB (1024 × 1024 × 512 int16): gzip members of one
    compressed zero block, after a header member with a bright spot."""
    shape = (1024, 1024, 512)
    head = bytearray(nifti_bytes(np.zeros((2, 2, 2), np.int16))[:352])
    head = bytearray(patch_nifti(bytes(head), dim=[3, *shape, 1, 1, 1, 1]))
    first = np.full(1024 * 1024, -1000, np.int16)
    first[:1000] = 500
    plane = 1024 * 1024 * 2  # bytes of one plane of int16 voxels
    block = gzip.compress(bytes(plane), compresslevel=9)
    path = ctx.path("bomb.nii.gz")
    with open(path, "wb") as out:
        out.write(gzip.compress(bytes(head) + first.tobytes()))
        for _ in range(shape[2] - 1):
            out.write(block)
    return path


def _link(target: Callable[[Ctx], Path | str], name: str = "link.nii.gz") -> Callable[[Ctx], Path]:
    def make(ctx: Ctx) -> Path:
        link = ctx.root / name
        link.symlink_to(target(ctx))
        return link

    return make


def _fifo(ctx: Ctx) -> Path:
    path = ctx.root / "pipe.nii.gz"
    os.mkfifo(path)
    return path


ODD = os.fsdecode(b"scan \xff\xfe t\xc3\xaate.nii.gz")


def _file_cases() -> list[Case]:
    good = _nii()
    return [
        Case("nii_good_segments", G, _seg(good), code=0),
        Case("nii_gz_truncated", G, _seg(_then(good, lambda p: truncate(p, 0.5)))),
        Case(
            "nii_uncompressed_truncated",
            G,
            _seg(_then(_nii("scan.nii"), lambda p: truncate(p, 0.6))),
        ),
        Case("nii_header_only", G, _seg(_then(_nii("scan.nii"), lambda p: truncate(p, 352)))),
        Case("nii_garbage_gz", G, _seg(lambda ctx: garbage(ctx.path("noise.nii.gz")))),
        Case("nii_garbage_uncompressed", G, _seg(lambda ctx: garbage(ctx.path("noise.nii")))),
        Case("nii_empty_file", G, _seg(lambda ctx: empty(ctx.path("empty.nii.gz")))),
        Case(
            "nii_gzip_of_nothing",
            G,
            _seg(lambda ctx: _write(ctx.path("nothing.nii.gz"), gzip.compress(b""))),
        ),
        Case("nii_gzip_damaged", G, _seg(_then(good, lambda p: damage(p, 0.5, 64)))),
        Case(
            "nii_png_disguised",
            G,
            _seg(lambda ctx: _write(ctx.path("photo.nii"), b"\x89PNG\r\n\x1a\n" + bytes(400))),
        ),
        Case("nii_dim_negative", G, _seg(_nii(dim=[3, -20, 20, 20, 1, 1, 1, 1]))),
        Case("nii_dim0_nine", G, _seg(_nii(dim=[9, 20, 20, 20, 1, 1, 1, 1]))),
        Case("nii_vox_offset_past_end", G, _seg(_nii("scan.nii", vox_offset=1e9))),
        Case("nii_unknown_datatype", G, _seg(_nii(datatype=999))),
        Case(
            "nii_header_declares_2000_cubed",
            G,
            _seg(_nii("scan.nii", dim=[3, 2000, 2000, 2000, 1, 1, 1, 1])),
        ),
        Case("nii_sparse_2000_cubed", G, _seg(_huge_sparse), pending=PENDING_GUARD),
        Case(
            "nii_gzip_bomb_1gib", G, _seg(_gzip_bomb), slow=True, timeout=300, pending=PENDING_GUARD
        ),
        Case("nii_is_a_folder", G, _seg(lambda ctx: ctx.path("folder.nii.gz", "x").parent)),
        Case("nii_missing", G, _seg(lambda ctx: ctx.root / "absent.nii.gz")),
        Case("nii_dangling_symlink", G, _seg(_link(lambda ctx: ctx.root / "gone.nii.gz"))),
        Case("nii_symlink_loop", G, _seg(_link(lambda ctx: ctx.root / "link.nii.gz"))),
        Case("nii_fifo", G, _seg(_fifo, api=False), slow=True, timeout=30),
        Case("nii_odd_name_corrupt", G, _seg(lambda ctx: garbage(ctx.root / ODD))),
        Case(
            "nii_odd_name_good",
            G,
            _seg(lambda ctx: write_nifti(ctx.root / "tête ü 脑 [1].nii.gz", nifti_bytes())),
            code=0,
        ),
    ]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _geometry_cases() -> list[Case]:
    zeros = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    disagree = {"srow_x": [3.0, 0, 0, 0], "srow_y": [0, 3.0, 0, 0], "srow_z": [0, 0, 3.0, 0]}
    return [
        Case(
            "nii_zero_voxel_size",
            G,
            _seg(_nii(pixdim=zeros, **QFORM_ONLY)),
            pending=PENDING_GEOMETRY,
        ),
        Case(
            "nii_negative_voxel_size",
            G,
            _seg(_nii(pixdim=[1.0, -2.0, 2.0, 2.0, 1, 1, 1, 1], **QFORM_ONLY)),
            pending=PENDING_GEOMETRY,
        ),
        Case(
            "nii_nan_voxel_size",
            G,
            _seg(_nii(pixdim=[1.0, float("nan"), 2.0, 2.0, 1, 1, 1, 1], **QFORM_ONLY)),
            pending=PENDING_GEOMETRY,
        ),
        Case(
            "nii_inf_voxel_size",
            G,
            _seg(_nii(pixdim=[1.0, float("inf"), 2.0, 2.0, 1, 1, 1, 1], **QFORM_ONLY)),
            pending=PENDING_GEOMETRY,
        ),
        Case(
            "nii_singular_sform",
            G,
            _seg(_nii(qform_code=0, srow_x=[0.0] * 4, srow_y=[0.0] * 4, srow_z=[0.0] * 4)),
            pending=PENDING_GEOMETRY,
        ),
        Case(
            "nii_nan_sform",
            G,
            _seg(_nii(qform_code=0, srow_x=[float("nan"), 0, 0, 0])),
            pending=PENDING_GEOMETRY,
        ),
        Case(
            "nii_qform_sform_disagree",
            G,
            _seg(_nii(**disagree)),
            pattern="qform|sform",
            pending=PENDING_GEOMETRY,
        ),
        Case(
            "nii_qform_sform_disagree_assume_sform",
            G,
            _seg(_nii(**disagree), "--assume-geometry", "sform", api=False),
            code=0,
            pending="--assume-geometry option for medical segment",
        ),
        Case(
            "nii_complex_voxels",
            G,
            _seg(_array("complex.nii.gz", lambda: ct_volume().astype(np.complex64))),
            pending=PENDING_GEOMETRY,
        ),
        Case("nii_rgb_voxels", G, _seg(_array("rgb.nii.gz", _rgb))),
        Case(
            "nii_2d_image", G, _seg(_array("flat.nii.gz", lambda: ct_volume((20, 20, 1))[:, :, 0]))
        ),
        Case(
            "nii_4d_image",
            G,
            _seg(_array("series.nii.gz", lambda: np.stack([ct_volume()] * 3, -1))),
        ),
        Case(
            "nii_constant_zero",
            G,
            _seg(_array("zeros.nii.gz", lambda: np.zeros((20, 20, 20), np.int16))),
        ),
        Case("nii_nan_voxels", G, _seg(_array("nan.nii.gz", _float_ct(float("nan"))))),
        Case("nii_inf_voxels", G, _seg(_array("inf.nii.gz", _float_ct(float("inf"))))),
        # nibabel (and the NIfTI convention for 0) reads a non-finite slope as "no scaling"
        Case("nii_inf_scl_slope", G, _seg(_nii(scl_slope=float("inf"))), code=(0, 2)),
        Case(
            "nii_absurd_voxel_size",
            G,
            _seg(_array("giant.nii.gz", ct_volume, zooms=(1000.0, 1000.0, 1000.0))),
            pending=PENDING_GUARD,
        ),
        Case(
            "nii_microscopic_voxel_size",
            G,
            _seg(_array("tiny.nii.gz", ct_volume, zooms=(1e-4, 1e-4, 1e-4))),
            pending=PENDING_GUARD,
        ),
    ]


def _rgb() -> np.ndarray:
    rgb = np.zeros((20, 20, 20), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = 200
    return rgb


def _option(*extra: str, pattern: str) -> Case:
    name = "segment_option_" + "_".join(e.strip("-").replace("-", "") for e in extra)[:40]
    return Case(
        name,
        G,
        lambda ctx: segment_run(ctx, ctx.models.volume, *extra, names=(), api=False),
        pattern=pattern,
    )


def _option_cases() -> list[Case]:
    return [
        _option("--roi-size", "0", "0", "0", pattern="roi"),
        _option("--roi-size", "-16", "16", "16", pattern="roi"),
        _option("--roi-size", "16", "16", pattern="roi"),
        Case(
            "segment_option_roi_huge",
            G,
            lambda ctx: segment_run(
                ctx, ctx.models.volume, "--roi-size", "4096", "4096", "4096", api=False
            ),
            pending=PENDING_GUARD,
        ),
        _option("--overlap", "1.0", pattern="overlap"),
        _option("--overlap", "-0.5", pattern="overlap"),
        _option("--overlap", "nan", pattern="overlap"),
        _option("--sw-batch-size", "0", pattern="batch"),
        _option("--device", "tpu9", pattern="tpu9"),
    ]


_prepare = prepare_case("medical3d", ("--spacing", "2"))
_src = source_folder


def _good(src: Path) -> Any:
    return write_nifti(src / "good.nii.gz", nifti_bytes())


def _prepare_cases() -> list[Case]:
    corrupt = (
        _good,
        lambda s: truncate(write_nifti(s / "cut.nii.gz", nifti_bytes()), 0.5),
        lambda s: empty(s / "empty.nii"),
        lambda s: garbage(s / "noise.nii.gz"),
    )
    geometry = (
        _good,
        lambda s: write_nifti(
            s / "flat.nii.gz", nifti_bytes(), pixdim=[1.0, 0, 0, 0, 1, 1, 1, 1], sform_code=0
        ),
        lambda s: write_nifti(
            s / "nan.nii.gz", nifti_bytes(), qform_code=0, srow_x=[float("nan"), 0, 0, 0]
        ),
    )
    return [
        Case(
            "prepare_medical_skips_corrupt",
            G,
            _prepare(_src(*corrupt), bad=("cut.nii.gz", "empty.nii", "noise.nii.gz")),
            code=0,
            slow=True,
        ),
        Case(
            "prepare_medical_skips_bad_geometry",
            G,
            _prepare(_src(*geometry), bad=("flat.nii.gz", "nan.nii.gz")),
            code=0,
            slow=True,
        ),
        Case(
            "prepare_medical_only_bad",
            G,
            _prepare(_src(lambda s: garbage(s / "noise.nii.gz")), bad=("noise.nii.gz",)),
            slow=True,
        ),
        Case(
            "prepare_medical_src_missing",
            G,
            _prepare(lambda ctx: ctx.root / "absent", bad=("absent",)),
        ),
        Case(
            "prepare_medical_src_is_a_file",
            G,
            _prepare(lambda ctx: garbage(ctx.path("raw.nii.gz")), bad=("raw.nii.gz",)),
        ),
        Case("prepare_medical_src_empty", G, _prepare(_src(), bad=("raw",))),
        Case(
            "prepare_medical_out_is_a_file",
            G,
            lambda ctx: _prepare_into(ctx, garbage(ctx.path("prepared")), "prepared"),
        ),
        Case(
            "prepare_medical_spacing_zero",
            G,
            _prepare(_src(_good), "--spacing", "0"),
            pattern="spacing",
            slow=True,
        ),
        Case(
            "prepare_medical_spacing_negative",
            G,
            _prepare(_src(_good), "--spacing", "-1"),
            pattern="spacing",
            slow=True,
        ),
        Case(
            "prepare_medical_spacing_two_values",
            G,
            _prepare(_src(_good), "--spacing", "1", "2"),
            pattern="spacing",
        ),
        Case(
            "prepare_medical_hu_window_reversed",
            G,
            _prepare(_src(_good), "--hu-window", "1000", "-1000"),
            pattern="window",
            slow=True,
        ),
        Case(
            "prepare_medical_chunk_bytes_bogus",
            G,
            _prepare(_src(_good), "--chunk-bytes", "lots"),
            pattern="chunk",
            slow=True,
        ),
    ]


def _prepare_into(ctx: Ctx, out: Path, name: str) -> Run:
    src = _src(_good)(ctx)
    argv = ["prepare", "medical3d", str(src), str(out), "--num-workers", "1", "--spacing", "2"]
    return Run(argv, names=(name,), unchanged=(out,))


CASES: list[Case] = [*_file_cases(), *_geometry_cases(), *_option_cases(), *_prepare_cases()]
