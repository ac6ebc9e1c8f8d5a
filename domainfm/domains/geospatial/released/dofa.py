"""dofa releases (being written)."""
