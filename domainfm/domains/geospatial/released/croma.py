"""croma releases (being written)."""
