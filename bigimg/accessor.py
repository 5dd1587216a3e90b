"""``DataArray.bigimg``: every operation as a method; it only delegates."""

from __future__ import annotations

from typing import Any

import xarray as xr


@xr.register_dataarray_accessor("bigimg")
class BigimgAccessor:
    """Example: ``img.bigimg.gaussian_filter(sigma={"y": 2, "x": 2})``."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    def to_zarr(self, store: Any, **kwargs: Any) -> Any:
        from bigimg.io import to_zarr

        return to_zarr(self._obj, store, **kwargs)

    def quicklook(self, path: Any = None, **kwargs: Any) -> xr.DataArray:
        from bigimg.quicklook import quicklook

        return quicklook(self._obj, path, **kwargs)

    # --- methods added by capability modules go below this line ---
