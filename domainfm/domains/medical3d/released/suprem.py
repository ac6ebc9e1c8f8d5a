"""suprem releases (being written)."""
