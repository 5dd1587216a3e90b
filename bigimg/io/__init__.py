"""Storage: reading inputs, bigimg's Zarr stores (write, open, resume) and their pyramids.

Modules, lowest first: :mod:`~bigimg.io.chunks` (a stored array in other
chunks), :mod:`~bigimg.io.store` (one store: layout, completeness, resume,
checked reads), :mod:`~bigimg.io.pyramid` (levels inside a store),
:mod:`~bigimg.io.read` (every input format) and :mod:`~bigimg.io.api` (the
public functions below).
"""

from bigimg.io.api import open_zarr, store_info, to_zarr
from bigimg.io.pyramid import open_level, write_pyramid
from bigimg.io.read import open_image
from bigimg.io.store import WriteResult

__all__ = [
    "WriteResult",
    "open_image",
    "open_level",
    "open_zarr",
    "store_info",
    "to_zarr",
    "write_pyramid",
]
