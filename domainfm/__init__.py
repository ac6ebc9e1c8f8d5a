"""domainfm: domain foundation models for 3D medical imaging, remote sensing and audio."""

from domainfm._version import __version__
from domainfm.pretrained.load import load_backbone

__all__ = ["__version__", "load_backbone"]
