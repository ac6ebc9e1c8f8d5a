"""Released audio foundation-model weights: key maps, input contracts, licences.

Importing this package registers every release of the domain (one module per family).
"""

# one module per family of releases; importing each registers its entries
from domainfm.domains.audio.released import (
    audiomae,  # noqa: F401
    beats,  # noqa: F401
    byola,  # noqa: F401
    m2d,  # noqa: F401
    ssast,  # noqa: F401
    wav2vec2,  # noqa: F401
)
from domainfm.domains.audio.released.byola import byola_keys

__all__ = ["byola_keys"]
