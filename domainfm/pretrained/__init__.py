"""Registry of released checkpoints, key mapping and load reports (see the checkpoint issue)."""
