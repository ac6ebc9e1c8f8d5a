"""m2d releases (being written)."""
