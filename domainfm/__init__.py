"""domainfm: domain foundation models for 3D medical imaging, remote sensing and audio."""

__version__ = "0.1.0"

from domainfm.pretrained.load import load_backbone

__all__ = ["__version__", "load_backbone"]
