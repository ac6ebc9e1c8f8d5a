"""Shared fixtures: the example-data root (tests that need it skip with a clear message)."""

from __future__ import annotations

from pathlib import Path

import pytest

from domainfm.core.data_root import ENV_VAR, example_data_root


@pytest.fixture(scope="session")
def data_root() -> Path:
    try:
        return example_data_root()
    except FileNotFoundError as err:
        pytest.skip(f"example data absent ({err}); set ${ENV_VAR} to run this test")
