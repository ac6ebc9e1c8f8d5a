"""unet3d releases (being written)."""
