"""scale_mae releases (being written)."""
