"""domainfm: domain foundation models for 3D medical imaging, remote sensing and audio."""

__version__ = "0.1.0"
