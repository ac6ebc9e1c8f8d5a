"""The registry of objective classes, keyed by their config name."""

from __future__ import annotations

from domainfm.core.registry import Registry

OBJECTIVES: Registry[type] = Registry("objective", record_init=True)
