"""clay releases (being written)."""
