"""satmae releases (being written)."""
