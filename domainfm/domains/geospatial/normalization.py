"""The input normalization of a released checkpoint's contract, and a check that refuses input
in the wrong units before it reaches the weights.

Released multispectral weights were trained on one numeric encoding of the bands: the
SSL4EO-S12 Sentinel-2 weights (Wang et al. 2022, "SSL4EO-S12: a large-scale multi-modal,
multi-temporal dataset for self-supervised learning in Earth observation", arXiv:2211.07044)
on Level-1C **digital numbers** (TOA reflectance × 10000) divided by 10000. Handing them TOA
reflectance 0..1 (as the shipped example scenes are) runs without an error and yields inputs
10000× too small: features of an almost black image. :func:`check_input_scale` applies the
contract's normalization and refuses such input with a ``ValueError`` that names the source,
the expected units and the factor that fixes it.

Contract fields read (``ReleasedCheckpoint.input``)::

    "bands":         ["B01", ..., "B12"]               input band names, in order
    "units":         "Sentinel-2 L1C digital numbers"  what the raw input must be (words)
    "normalization": {"type": "scale", "divide_by": 10000.0}
                   | {"type": "mean_std", "mean": [...], "std": [...], "scale": 1.0}
    "scale_check":   {"bands": ["B02", "B03", "B04", "B08"], "median_range": [1e-3, 3.0]}

Normalization: ``"scale"`` is ``x / divide_by``; ``"mean_std"`` is ``(x * scale - mean) /
std`` per band (``scale`` defaults to 1; ``mean``/``std`` have one value per contract band).

**The rule** (:func:`check_input_scale`): a pixel is *valid* when it is finite in every input
band, lies inside ``mask`` (if given) and is not zero in every band at once (a zero-filled
nodata pixel). The *check bands* are the ``scale_check.bands`` present in the input (every
input band when none is). The median ``m`` of the **normalized** values of the check bands over
all valid pixels (and all batch items) must satisfy ``lo <= m <= hi`` with ``[lo, hi] =
scale_check.median_range``. Otherwise the error says by which factor to multiply (or
divide) the input: the first common unit conversion that brings ``m`` into the range
(:func:`suggest_factor`: 10000 for reflectance ↔ DN, then 1000, 255, 100, 10).

For the SSL4EO-S12 Sentinel-2 contracts the check bands are the bright bands B02, B03, B04,
B08 and the range is ``[1e-3, 3]`` in reflectance units: surface scenes have medians of
about 0.02-0.5 (water to bright soil, cloud tops reach ~1-1.5), while reflectance 0..1 read
as DN lands near 1e-5 and DN read as reflectance near 1e3 — four orders of magnitude outside
in either direction.

Example::

    >>> contract = RELEASED.get("torchgeo-resnet50-sentinel2-all-moco").input
    >>> r = read_raster("S2_L1C_2015-07-11.tif")            # TOA reflectance 0..1
    >>> check_input_scale(r.array, contract, source=r.path)
    ValueError: S2_L1C_2015-07-11.tif: input is in the wrong units for these weights: ...
    The weights expect Sentinel-2 Level-1C digital numbers ... multiply it by 10000 ...
    >>> x = check_input_scale(r.array * 10000, contract, source=r.path)   # normalized input
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from torch import Tensor

from domainfm.domains.geospatial.contract import RasterContract
from domainfm.domains.geospatial.raster_header import BandsLike, raster_info, resolve_bands
from domainfm.domains.geospatial.raster_read import read_raster
from domainfm.domains.geospatial.stats import BandStats, compute_band_stats
from domainfm.pretrained.registry import RELEASED  # the registry imports backbones

ArrayLike = TypeVar("ArrayLike", np.ndarray, Tensor)


def contract_bands(contract: RasterContract | Mapping[str, Any]) -> list[str]:
    """The contract's band names (``"bands"``, else ``"channels"``)."""
    if isinstance(contract, RasterContract):
        return list(contract.bands)
    names = contract.get("bands") or contract.get("channels")
    if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"the input contract has no list of band names: {dict(contract)}")
    return list(names)


def _band_positions(
    contract: RasterContract | Mapping[str, Any], bands: Sequence[str] | None, n: int
) -> list[int]:
    """Positions in the contract's band list of the input's ``n`` bands."""
    known = contract_bands(contract)
    names = list(bands) if bands is not None else known
    if len(names) != n:
        raise ValueError(
            f"the input has {n} bands but {len(names)} band names were given ({names}); "
            "pass bands=[...] naming each input band"
        )
    unknown = [b for b in names if b not in known]
    if unknown:
        raise ValueError(f"bands {unknown} are not bands of the contract ({known})")
    return [known.index(b) for b in names]


def _describe(norm: Mapping[str, Any]) -> str:
    if norm.get("type") == "scale":
        return f"divide by {float(norm['divide_by']):g}"
    return f"x * {float(norm.get('scale', 1.0)):g}, minus the per-band mean, over the std"


UNIT_FACTORS: tuple[float, ...] = (10000.0, 1000.0, 255.0, 100.0, 10.0)
"""Unit conversions tried, in this order, when suggesting a fix: reflectance ↔ DN (10000),
milli-units, 8-bit (255), percent, tenths."""


def suggest_factor(median: float, lo: float, hi: float) -> float:
    """The factor that brings a normalized median into ``[lo, hi]``: the first of
    :data:`UNIT_FACTORS` (or their inverses when ``median > hi``) that does, else the power of
    ten closest to the geometric centre ``sqrt(lo * hi)``."""
    for factor in UNIT_FACTORS:
        candidate = factor if median < lo else 1 / factor
        if lo <= median * candidate <= hi:
            return candidate
    return float(10.0 ** round(math.log10(math.sqrt(lo * hi) / median)))


def as_raster_contract(contract: RasterContract | Mapping[str, Any]) -> RasterContract:
    """``contract`` typed (a mapping's band names are its ``"bands"``, else ``"channels"``)."""
    if isinstance(contract, RasterContract):
        return contract
    return RasterContract.from_dict({**contract, "bands": contract_bands(contract)})


def normalize_input(
    x: ArrayLike,
    contract: RasterContract | Mapping[str, Any],
    *,
    bands: Sequence[str] | None = None,
) -> ArrayLike:
    """``x`` ``(C, H, W)`` or ``(B, C, H, W)`` normalized as the contract says
    (:meth:`RasterContract.normalize` of the contract restricted to ``x``'s bands).

    Args:
        x: raw input in the contract's ``units`` (numpy array or tensor).
        contract: a released checkpoint's input contract.
        bands: names of ``x``'s bands when they are not the contract's full list.

    Returns:
        float32 numpy array or float tensor of ``x``'s shape.
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"x must be (C, H, W) or (B, C, H, W), got shape {tuple(x.shape)}")
    typed = as_raster_contract(contract)
    kind = (typed.normalization or {}).get("type")
    if kind not in ("scale", "mean_std"):
        raise ValueError(
            f"normalization type {kind!r} is not supported here (known: 'scale', 'mean_std')"
        )
    positions = _band_positions(typed, bands, int(x.shape[x.ndim - 3]))
    selected = typed.select([typed.bands[i] for i in positions])
    if isinstance(x, Tensor):
        return selected.normalize(x if x.is_floating_point() else x.float())
    mean, std = selected.moments()
    return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def check_input_scale(
    x: ArrayLike,
    contract: RasterContract | Mapping[str, Any],
    *,
    source: str,
    bands: Sequence[str] | None = None,
    mask: np.ndarray | Tensor | None = None,
) -> ArrayLike:
    """Normalize ``x`` as the contract says and refuse it if its magnitude is not the
    contract's (rule in the module docstring).

    Args:
        x: raw input ``(C, H, W)`` or ``(B, C, H, W)``.
        contract: a released checkpoint's input contract with ``scale_check``.
        source: where ``x`` came from (a file name), named in the error.
        bands: names of ``x``'s bands when they are not the contract's full list.
        mask: ``(H, W)`` or ``(B, H, W)`` validity (e.g. :attr:`Raster.mask`); ``None``:
            every pixel.

    Returns:
        The normalized input (as :func:`normalize_input`).

    Raises:
        ValueError: naming ``source``, the expected units and the fixing factor, when the
            median is outside the range; also when no pixel is valid or the contract lacks
            ``scale_check``.
    """
    if isinstance(contract, RasterContract):
        contract = contract.to_dict()
    check = contract.get("scale_check")
    if not isinstance(check, Mapping):
        raise ValueError(f"{source}: the input contract defines no scale_check to test against")
    lo, hi = (float(v) for v in check["median_range"])
    normalized = normalize_input(x, contract, bands=bands)
    values = np.asarray(
        normalized.detach().cpu().numpy() if isinstance(normalized, Tensor) else normalized
    )
    raw = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x)
    if values.ndim == 3:  # (C, H, W) -> (1, C, H, W)
        values, raw = values[None], raw[None]
    valid = np.isfinite(raw).all(axis=1) & (raw != 0).any(axis=1)  # (B, H, W)
    if mask is not None:
        valid &= np.broadcast_to(
            np.asarray(mask.cpu().numpy() if isinstance(mask, Tensor) else mask, dtype=bool),
            valid.shape,
        )
    names = list(bands) if bands is not None else contract_bands(contract)
    wanted = [i for i, b in enumerate(names) if b in set(check.get("bands", ()))]
    picked = wanted or list(range(len(names)))
    samples = values[:, picked].transpose(1, 0, 2, 3)[:, valid]  # (C_check, n_valid)
    if samples.size == 0:
        raise ValueError(f"{source}: no valid pixel to check the input scale against")
    median = float(np.median(samples))
    if lo <= median <= hi:
        return normalized
    units = contract.get("units", "the units of the release's input contract")
    checked = ", ".join(names[i] for i in picked)
    head = (
        f"{source}: input is in the wrong units for these weights: after the release's "
        f"normalization ({_describe(contract.get('normalization') or {})}) the median of the "
        f"valid pixels of bands {checked} is {median:.3g}, outside [{lo:g}, {hi:g}]. "
        f"The weights expect {units}."
    )
    if median <= 0 or not math.isfinite(median):
        raise ValueError(f"{head} Check the input's units and nodata handling.")
    factor = suggest_factor(median, lo, hi)
    fixed = median * factor
    if factor > 1:
        fix = (
            f" The input is about {factor:g}x too small (e.g. reflectance 0..1 where digital "
            f"numbers are expected): multiply it by {factor:g} before normalizing (a scale of "
            f"{factor:g}); its median would then be {fixed:.3g}."
        )
    else:
        fix = (
            f" The input is about {1 / factor:g}x too large (e.g. digital numbers where "
            f"reflectance is expected): divide it by {1 / factor:g} before normalizing (a scale "
            f"of {factor:g}); its median would then be {fixed:.3g}."
        )
    raise ValueError(head + fix)


def contract_band_stats(
    contract: RasterContract | Mapping[str, Any], *, bands: Sequence[str], input_scale: float = 1.0
) -> BandStats:
    """The contract's normalization of raw input multiplied by ``input_scale``, as per-band
    ``(x - mean) / std`` statistics for the data pipeline (no pixel read: ``count`` 0,
    percentiles NaN; ``params`` record the contract): :meth:`RasterContract.moments` of the
    contract restricted to ``bands``, with ``input_scale``.

    ``"scale"``: ``x · input_scale / divide_by`` → ``mean 0``, ``std divide_by /
    input_scale``; ``"mean_std"``: ``(x · input_scale · scale - m) / s`` → ``mean m /
    (input_scale · scale)``, ``std s / (input_scale · scale)``.
    """
    if not input_scale > 0:
        raise ValueError(f"input_scale={input_scale!r}: must be > 0")
    typed = as_raster_contract(contract)
    norm = typed.normalization or {}
    if norm.get("type") not in ("scale", "mean_std"):
        raise ValueError(f"normalization {norm!r} is not supported (known: 'scale', 'mean_std')")
    positions = _band_positions(typed, bands, len(bands))
    selected = typed.select([typed.bands[i] for i in positions])
    m, s = dataclasses.replace(selected, input_scale=input_scale).moments()
    mean, std = [float(v) for v in m], [float(v) for v in s]
    nan = (float("nan"),) * len(bands)
    return BandStats(
        band_names=tuple(bands),
        mean=tuple(mean),
        std=tuple(std),
        p2=nan,
        p98=nan,
        count=(0,) * len(bands),
        params={"contract_normalization": dict(norm), "input_scale": input_scale},
    )


def released_input_stats(
    name: str,
    files: Sequence[str | Path],
    *,
    bands: BandsLike = None,
    band_names: Sequence[str] | None = None,
    input_scale: float = 1.0,
    check_files: int = 3,
    window: int = 256,
) -> BandStats:
    """Band statistics that normalize ``files`` as the release ``name`` expects, after
    checking that they are in its units (:func:`check_input_scale` on a ``window``-pixel
    corner of each of the first ``check_files`` files, raw values × ``input_scale``).

    Raises:
        ValueError: naming the file, the expected units and the fixing ``input_scale`` when
            the input is mis-scaled; an unknown release or bands it does not have.
    """

    if name not in RELEASED:
        raise ValueError(f"released_input={name!r} is not a registered release")
    contract = RELEASED.get(name).input
    names: list[str] = []
    for path in list(files)[: max(1, check_files)]:
        info = raster_info(path, band_names=band_names)
        names = [info.band_names[i - 1] for i in resolve_bands(info, bands)]
        raster = read_raster(
            path,
            (0, 0, min(window, info.height), min(window, info.width)),
            bands,
            band_names=band_names,
            require_valid=False,
        )
        check_input_scale(
            raster.array * np.float32(input_scale),
            contract,
            source=f"{path} (read with input_scale={input_scale:g} for {name})",
            bands=names,
            mask=raster.mask,
        )
    return contract_band_stats(contract, bands=names, input_scale=input_scale)


def band_stats_for(
    files: Sequence[str | Path],
    *,
    released_input: str | None,
    input_scale: float = 1.0,
    cache: str | Path | None = None,
    bands: BandsLike = None,
    band_names: Sequence[str] | None = None,
) -> BandStats:
    """The statistics a data module normalizes with: a release's input contract
    (:func:`released_input_stats`, raw values × ``input_scale``) when ``released_input``
    names one, else statistics computed over ``files``
    (:func:`~domainfm.domains.geospatial.stats.compute_band_stats`, cached in ``cache``;
    standardizing by them does not depend on the input's units, so ``input_scale`` is not
    used)."""
    if released_input is not None:
        return released_input_stats(
            released_input, files, bands=bands, band_names=band_names, input_scale=input_scale
        )
    return compute_band_stats(files, cache=cache, bands=bands, band_names=band_names)
