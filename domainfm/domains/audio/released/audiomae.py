"""audiomae releases (being written)."""
