"""Released 3D medical foundation-model weights: key maps, input contracts, licences.

Importing this package registers every release of the domain (one module per family).
"""

# one module per family of releases; importing each registers its entries
from domainfm.domains.medical3d.released import (
    ctfm,  # noqa: F401
    medicalnet,  # noqa: F401
    suprem,  # noqa: F401
    swin_unetr,  # noqa: F401
    unet3d,  # noqa: F401
    voco,  # noqa: F401
)
