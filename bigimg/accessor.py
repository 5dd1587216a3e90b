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

    def add_noise(self, **kwargs: Any) -> xr.DataArray:
        from bigimg.noise import add_noise

        return add_noise(self._obj, **kwargs)

    def gaussian_filter(self, sigma: Any, **kwargs: Any) -> xr.DataArray:
        from bigimg.filters import gaussian_filter

        return gaussian_filter(self._obj, sigma, **kwargs)

    def gaussian_stretch(self, **kwargs: Any) -> xr.DataArray:
        from bigimg.stretch import gaussian_stretch

        return gaussian_stretch(self._obj, **kwargs)

    def histogram(self, **kwargs: Any) -> xr.DataArray:
        """Counts of the valid pixels (computes); see :func:`bigimg.histogram`."""
        from bigimg.histogram import histogram

        return histogram(self._obj, **kwargs)

    def equalize_hist(self, **kwargs: Any) -> xr.DataArray:
        """Histogram equalization; see :func:`bigimg.equalize_hist`."""
        from bigimg.histogram import equalize_hist

        return equalize_hist(self._obj, **kwargs)

    def coarsen_mean(self, factor: Any = 2) -> xr.DataArray:
        from bigimg.multiscale import coarsen_mean

        return coarsen_mean(self._obj, factor)

    def register(self, **kwargs: Any) -> xr.DataArray:
        from bigimg.register import register

        return register(self._obj, **kwargs)

    def shift_and_add(self, shifts: Any, **kwargs: Any) -> xr.Dataset:
        from bigimg.register import shift_and_add

        return shift_and_add(self._obj, shifts, **kwargs)

    def standardize(self, **kwargs: Any) -> xr.DataArray:
        from bigimg.whiten import standardize

        return standardize(self._obj, **kwargs)

    def zca_fit(self, eps: float = 1e-5, **kwargs: Any) -> Any:
        """Fit a :class:`bigimg.ZCA` on this stack (computes) and return it."""
        from bigimg.whiten import ZCA

        return ZCA(eps, **kwargs).fit(self._obj)
