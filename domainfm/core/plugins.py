"""Discovery of installed domain plugins.

A domain is a package that registers its backbones, released checkpoints, input contract and
CLI hooks when it is imported. Installed domains are listed under the entry-point group
``domainfm.domains`` (``pyproject.toml``)::

    [project.entry-points."domainfm.domains"]
    medical3d = "domainfm.domains.medical3d"

so a third-party domain becomes available by being installed, and the layers below never
import a domain by name. :func:`discover_plugins` imports each listed module once; lookups that
miss (an unknown backbone, release or contract) call it before giving up.

Example::

    >>> sorted(discover_plugins())
    ['audio', 'geospatial', 'medical3d']
"""

from __future__ import annotations

from importlib.metadata import entry_points
from types import ModuleType

ENTRY_POINT_GROUP = "domainfm.domains"

_loaded: dict[str, ModuleType] = {}
_failed: dict[str, str] = {}


def discover_plugins() -> dict[str, ModuleType]:
    """Import every installed domain plugin once; ``{entry-point name: module}``.

    A plugin that fails to import (a broken third-party install, a missing optional
    dependency) is left out and remembered with its error (:func:`plugin_failures`), so the
    other domains keep working and a lookup of the broken one can say why it is missing.
    """
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _loaded or entry.name in _failed:
            continue
        try:
            _loaded[entry.name] = entry.load()
        except Exception as err:  # any import failure of foreign code
            _failed[entry.name] = f"{entry.value}: {type(err).__name__}: {err}"
    return dict(_loaded)


def plugin_failures() -> dict[str, str]:
    """``{entry-point name: why it could not be imported}`` of the plugins left out."""
    discover_plugins()
    return dict(_failed)
