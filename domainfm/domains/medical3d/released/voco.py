"""voco releases (being written)."""
