"""Installed domains are found through entry points; a broken one is left out, named."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint

import pytest

from domainfm.core import plugins
from domainfm.domains.plugin import get_domain


@pytest.fixture
def broken_plugin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = plugins.entry_points

    def with_broken(*, group: str) -> list[EntryPoint]:
        broken = EntryPoint(name="martian", value="no_such_package_xyz.domain", group=group)
        return [*real(group=group), broken]

    monkeypatch.setattr(plugins, "entry_points", with_broken)
    yield
    plugins._failed.pop("martian", None)


def test_builtin_domains_are_discovered() -> None:
    assert {"medical3d", "geospatial", "audio"} <= set(plugins.discover_plugins())


def test_a_broken_plugin_is_left_out_and_named(broken_plugin: None) -> None:
    loaded = plugins.discover_plugins()
    assert "martian" not in loaded and "medical3d" in loaded  # the others keep working
    assert "no_such_package_xyz" in plugins.plugin_failures()["martian"]
    with pytest.raises(ValueError, match=r"unknown domain 'martian' \(its plugin failed"):
        get_domain("martian")
