"""The per-allocation size guard: limit from the environment, message names file and bytes."""

from __future__ import annotations

import pytest

from domainfm.core.size_guard import (
    LIMIT_ENV,
    AllocationTooLarge,
    allocation_limit,
    check_allocation,
    format_bytes,
)


def test_default_and_raised_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    check_allocation(1024**3, what="one GiB")
    with pytest.raises(
        AllocationTooLarge, match=r"scan\.nii\.gz: the volume would need about 9\.0 GiB"
    ):
        check_allocation(9 * 1024**3, what="the volume", source="scan.nii.gz")
    monkeypatch.setenv(LIMIT_ENV, "10")
    check_allocation(9 * 1024**3, what="the volume")
    assert allocation_limit() == 10 * 1024**3


def test_nan_estimate_and_bad_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LIMIT_ENV, raising=False)
    with pytest.raises(AllocationTooLarge):
        check_allocation(float("nan"), what="x")
    for bad in ("0", "-1", "lots", "inf"):
        monkeypatch.setenv(LIMIT_ENV, bad)
        with pytest.raises(ValueError, match=LIMIT_ENV):
            allocation_limit()


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(5 * 1024**4) == "5.0 TiB"
