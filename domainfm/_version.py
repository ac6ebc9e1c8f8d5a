"""The package version (one place; ``domainfm.__version__`` and exports read it)."""

__version__ = "0.2.0"
