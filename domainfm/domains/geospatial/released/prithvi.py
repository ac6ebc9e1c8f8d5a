"""prithvi releases (being written)."""
