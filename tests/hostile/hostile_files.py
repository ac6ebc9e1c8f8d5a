"""Writers of small inputs, good and bad, for the hostile cases: NIfTI (with byte-level header
patches), DICOM series, GeoTIFFs, audio files, malicious pickles, and generic damage
(truncation, flipped bytes)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import soundfile as sf

# --- generic damage -------------------------------------------------------------------------


def truncate(path: Path, keep: float | int) -> Path:
    """Cut ``path`` to ``keep`` bytes (an int) or that fraction of its size (a float)."""
    size = path.stat().st_size
    os.truncate(path, int(size * keep) if isinstance(keep, float) else keep)
    return path


def damage(path: Path, at: float, count: int, *, seed: int = 0) -> Path:
    """Overwrite ``count`` bytes at fraction ``at`` of the file with random bytes."""
    data = bytearray(path.read_bytes())
    start = int(len(data) * at)
    noise = np.random.default_rng(seed).integers(0, 256, count, dtype=np.uint8).tobytes()
    data[start : start + count] = noise[: max(0, len(data) - start)]
    path.write_bytes(bytes(data))
    return path


def garbage(path: Path, size: int = 4096, *, seed: int = 0) -> Path:
    """Random bytes under a real-looking name."""
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8).tobytes())
    return path


def empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


# --- code-execution payloads ----------------------------------------------------------------


class _OpenPayload:
    """Unpickling calls ``open(marker, "w")``: a file appears if the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (open, (self.marker, "w"))


class _SystemPayload:
    """Unpickling calls ``os.system("touch marker")``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return (os.system, (f"touch '{self.marker}'",))


def payload(marker: Path, how: str = "open") -> object:
    """An object whose unpickling creates ``marker`` (``how``: ``"open"`` or ``"system"``)."""
    return _SystemPayload(marker) if how == "system" else _OpenPayload(marker)


def evil_checkpoint(path: Path, marker: Path, *, how: str = "open", legacy: bool = False) -> Path:
    """A Lightning-looking ``.ckpt``/``.pt`` (torch zip, or the legacy format) that runs code
    when unpickled without ``weights_only``."""
    import torch

    ckpt = {
        "state_dict": {"backbone.w": torch.zeros(2)},
        "epoch": 0,
        "global_step": 1,
        "hyper_parameters": {"evil": payload(marker, how)},
    }
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy)
    return path


def evil_raw_pickle(path: Path, marker: Path, *, protocol: int = 2) -> Path:
    """A bare pickle (no torch container) with the payload at its top."""
    path.write_bytes(pickle.dumps({"state_dict": payload(marker)}, protocol=protocol))
    return path


def evil_zip_member(path: Path, marker: Path) -> Path:
    """A torch zip archive whose ``data.pkl`` was replaced by a payload pickle."""
    import torch

    buffer = io.BytesIO()
    torch.save({"state_dict": {}}, buffer)
    buffer.seek(0)
    with zipfile.ZipFile(buffer) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps(payload(marker, "system"), protocol=2)
            dst.writestr(item, data)
    return path


# --- NIfTI ------------------------------------------------------------------------------------

NIFTI_FIELDS: dict[str, tuple[int, str]] = {
    "dim": (40, "8h"),
    "datatype": (70, "h"),
    "bitpix": (72, "h"),
    "pixdim": (76, "8f"),
    "vox_offset": (108, "f"),
    "scl_slope": (112, "f"),
    "scl_inter": (116, "f"),
    "qform_code": (252, "h"),
    "sform_code": (254, "h"),
    "quatern": (256, "3f"),
    "qoffset": (268, "3f"),
    "srow_x": (280, "4f"),
    "srow_y": (296, "4f"),
    "srow_z": (312, "4f"),
}
"""Byte offsets and struct formats of NIfTI-1 header fields (little-endian as written)."""


def ct_volume(shape: tuple[int, ...] = (20, 20, 20), seed: int = 0) -> np.ndarray:
    """An int16 CT-like volume: air around a body of soft tissue with a bright core."""
    rng = np.random.default_rng(seed)
    vol = np.full(shape, -1000, np.int16)
    grid = np.indices(shape[:3]).astype(np.float32)
    centre = np.array(shape[:3], np.float32)[:, None, None, None] / 2
    r = np.sqrt(((grid - centre) ** 2).sum(0))
    body = r < min(shape[:3]) * 0.4
    vol[body] = 40 + rng.integers(-20, 20, int(body.sum()))
    vol[r < min(shape[:3]) * 0.15] = 700
    return vol


def nifti_bytes(
    data: np.ndarray | None = None, *, zooms: tuple[float, float, float] = (2.0, 2.0, 2.0)
) -> bytes:
    """An uncompressed NIfTI-1 file (qform and sform both set to ``diag(zooms)``)."""
    array = ct_volume() if data is None else data
    affine = np.diag([*zooms, 1.0])
    image = nib.Nifti1Image(array, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    buffer = io.BytesIO()
    file_map = image.make_file_map({"image": buffer, "header": buffer})
    image.to_file_map(file_map)
    return buffer.getvalue()


def patch_nifti(raw: bytes, **fields: Any) -> bytes:
    """``raw`` with header fields replaced (see :data:`NIFTI_FIELDS`; lists for arrays)."""
    data = bytearray(raw)
    for name, value in fields.items():
        offset, fmt = NIFTI_FIELDS[name]
        values = value if isinstance(value, list | tuple) else [value]
        struct.pack_into("<" + fmt, data, offset, *values)
    return bytes(data)


def write_nifti(path: Path, raw: bytes | None = None, **fields: Any) -> Path:
    """Write a (patched) NIfTI file, gzip-compressed when ``path`` ends with ``.gz``."""
    content = patch_nifti(raw if raw is not None else nifti_bytes(), **fields)
    if path.name.endswith(".gz"):
        content = gzip.compress(content, compresslevel=1)
    path.write_bytes(content)
    return path


def nifti_image(path: Path, array: np.ndarray, zooms: tuple[float, ...] = (2.0, 2.0, 2.0)) -> Path:
    """Save ``array`` (any dtype nibabel writes) with a diagonal affine."""
    image = nib.Nifti1Image(array, np.diag([*zooms[:3], 1.0]))
    image.header.set_sform(image.affine, code=1)
    nib.save(image, str(path))
    return path


# --- DICOM ------------------------------------------------------------------------------------


def dicom_slice(
    index: int,
    *,
    series_uid: str,
    rows: int = 16,
    cols: int = 16,
    spacing: tuple[float, float] = (1.0, 1.0),
    gap: float = 2.0,
) -> Any:
    """One CT slice (int16, ``RescaleIntercept`` −1024) at ``z = index * gap``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.Modality = "CT"
    ds.PatientID = "hostile"
    ds.InstanceNumber = index + 1
    ds.ImagePositionPatient = [0.0, 0.0, float(index * gap)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.SliceThickness = float(gap)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    pixels = ct_volume((rows, cols, rows), seed=index)[:, :, rows // 2].astype(np.int16) + 1024
    ds.PixelData = pixels.astype("<i2").tobytes()
    return ds


def write_series(
    folder: Path,
    count: int = 6,
    *,
    mutate: Callable[[int, Any], Any] | None = None,
    series_uid: str = "1.2.826.0.1.3680043.8.498.2",
    prefix: str = "slice",
    **kwargs: Any,
) -> Path:
    """A DICOM series folder of ``count`` slices; ``mutate(i, ds)`` edits slice ``i`` (and may
    return ``False`` to leave it out)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        ds = dicom_slice(i, series_uid=series_uid, **kwargs)
        if mutate is not None and mutate(i, ds) is False:
            continue
        ds.save_as(str(folder / f"{prefix}_{i:03d}.dcm"), enforce_file_format=True)
    return folder


# --- GeoTIFF ----------------------------------------------------------------------------------


def write_geotiff(
    path: Path,
    *,
    bands: int = 4,
    size: tuple[int, int] = (48, 48),
    crs: str | None = "EPSG:32633",
    data: np.ndarray | None = None,
    dtype: str = "float32",
    nodata: float | None = None,
    transform: Any = None,
    **profile: Any,
) -> Path:
    """A small GeoTIFF: ``bands`` × ``size`` random reflectances (or ``data``)."""
    import rasterio
    from rasterio.transform import from_origin

    height, width = size
    if data is None:
        rng = np.random.default_rng(0)
        data = rng.uniform(0.0, 0.5, (bands, height, width)).astype(dtype)
    with rasterio.open(
        path,
        "w",
        driver=profile.pop("driver", "GTiff"),
        width=width,
        height=height,
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform if transform is not None else from_origin(465180.0, 5080250.0, 10, 10),
        nodata=nodata,
        **profile,
    ) as dst:
        dst.write(data)
    return path


def huge_sparse_geotiff(path: Path, side: int, *, bands: int = 4) -> Path:
    """A tiled GeoTIFF of ``side`` × ``side`` pixels with no tile written (a few MB on disk)."""
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=side,
        height=side,
        count=bands,
        dtype="uint8",
        crs="EPSG:32633",
        transform=from_origin(465180.0, 5080250.0, 10, 10),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        sparse_ok=True,
        compress="deflate",
        BIGTIFF="YES",
    ):
        pass
    return path


# --- audio ------------------------------------------------------------------------------------


def tone(seconds: float, rate: int, *, seed: int = 0) -> np.ndarray:
    """A chirp with a little noise, float32 mono in [-0.5, 0.5]."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    wave = 0.4 * np.sin(2 * np.pi * (220 + 400 * t) * t) + 0.05 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


AUDIO_FORMATS: dict[str, tuple[str, str | None]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


def write_audio(
    path: Path, seconds: float = 3.0, rate: int = 16000, *, data: np.ndarray | None = None
) -> Path:
    """A mono file in the format of ``path``'s suffix."""
    fmt, subtype = AUDIO_FORMATS[path.suffix.lower()]
    samples = tone(seconds, rate) if data is None else data
    sf.write(str(path), samples, rate, format=fmt, subtype=subtype)
    return path


def wav_bytes(
    samples: np.ndarray, rate: int, *, bits: int = 16, declared: int | None = None
) -> bytes:
    """A PCM (16-bit) or IEEE-float (32-bit) WAV; ``declared`` overrides the data chunk size."""
    fmt_tag = 3 if bits == 32 else 1
    body = samples.astype("<f4" if bits == 32 else "<i2").tobytes()
    size = len(body) if declared is None else declared
    header = b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVE"
    header += b"fmt " + struct.pack(
        "<IHHIIHH", 16, fmt_tag, 1, rate, rate * bits // 8, bits // 8, bits
    )
    return header + b"data" + struct.pack("<I", size) + body
