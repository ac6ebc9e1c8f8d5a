"""softcon releases (being written)."""
