"""Released geospatial foundation-model weights: key maps, input contracts, licences.

Importing this package registers every release of the domain (one module per family).
"""

# one module per family of releases; importing each registers its entries
from domainfm.domains.geospatial.released import (
    clay,  # noqa: F401
    croma,  # noqa: F401
    dofa,  # noqa: F401
    prithvi,  # noqa: F401
    satmae,  # noqa: F401
    scale_mae,  # noqa: F401
    softcon,  # noqa: F401
    ssl4eo,  # noqa: F401
)
from domainfm.domains.geospatial.released.ssl4eo import S2_L1C_DN_INPUT

__all__ = ["S2_L1C_DN_INPUT"]
