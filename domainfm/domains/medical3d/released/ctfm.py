"""ctfm releases (being written)."""
