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


def discover_plugins() -> dict[str, ModuleType]:
    """Import every installed domain plugin once; ``{entry-point name: module}``."""
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name not in _loaded:
            _loaded[entry.name] = entry.load()
    return dict(_loaded)
