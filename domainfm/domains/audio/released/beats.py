"""beats releases (being written)."""
