"""ssast releases (being written)."""
