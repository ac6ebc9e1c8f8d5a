"""medicalnet releases (being written)."""
