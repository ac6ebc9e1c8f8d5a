"""wav2vec2 releases (being written)."""
