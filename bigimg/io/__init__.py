"""Storage: reading inputs, bigimg's Zarr stores (write, open, resume) and their pyramids.

Modules, lowest first: :mod:`~bigimg.io.layout` (what a store holds, from its
metadata: zarr only), :mod:`~bigimg.io.chunks` (a stored array in other
chunks), :mod:`~bigimg.io.store` (one store: layout, completeness, resume,
checked reads), :mod:`~bigimg.io.pyramid` (levels inside a store),
:mod:`~bigimg.io.read` (every input format) and :mod:`~bigimg.io.api` (the
public functions below).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bigimg.io.api import open_zarr, to_zarr
    from bigimg.io.info import store_info
    from bigimg.io.pyramid import open_level, write_pyramid
    from bigimg.io.read import open_image
    from bigimg.io.store import WriteResult

# imported on first use: `bigimg info` needs store_info (zarr only), not dask or xarray
_WHERE = {
    "WriteResult": "bigimg.io.store",
    "open_image": "bigimg.io.read",
    "open_level": "bigimg.io.pyramid",
    "open_zarr": "bigimg.io.api",
    "store_info": "bigimg.io.info",
    "to_zarr": "bigimg.io.api",
    "write_pyramid": "bigimg.io.pyramid",
}

__all__ = [
    "WriteResult",
    "open_image",
    "open_level",
    "open_zarr",
    "store_info",
    "to_zarr",
    "write_pyramid",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
