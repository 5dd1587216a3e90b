"""``DataArray.bigimg``: every operation as a method, with the wrapped function's signature.

Each method is made from the function it calls, so ``help(img.bigimg.gaussian_filter)``
shows the function's own parameters and docstring, without the image argument.

``import bigimg`` registers a light stand-in with xarray as soon as xarray is
imported; the first ``img.bigimg`` imports this module and returns a
:class:`BigimgAccessor`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import xarray as xr

from bigimg.adapthist import equalize_adapthist
from bigimg.cog import to_cog
from bigimg.filters import gaussian_filter
from bigimg.histogram import equalize_hist, histogram
from bigimg.io import to_zarr
from bigimg.noise import add_noise
from bigimg.quicklook import quicklook
from bigimg.register import register, shift_and_add
from bigimg.resample import coarsen_mean
from bigimg.stretch import gaussian_stretch
from bigimg.whiten import ZCA, standardize


def _method(func: Callable[..., Any]) -> Callable[..., Any]:
    """``func(img, ...)`` as a method ``accessor.func(...)`` on the accessor's image."""

    @functools.wraps(func)
    def method(self: BigimgAccessor, *args: Any, **kwargs: Any) -> Any:
        return func(self._obj, *args, **kwargs)

    sig = inspect.signature(func)
    me = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[me, *list(sig.parameters.values())[1:]]
    )
    return method


class BigimgAccessor:
    """bigimg's operations on this image.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> img = bi.from_array(np.ones((8, 8)))
    >>> img.bigimg.gaussian_filter(sigma=2).dims
    ('y', 'x', 'band')
    """

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    add_noise = _method(add_noise)
    coarsen_mean = _method(coarsen_mean)
    equalize_adapthist = _method(equalize_adapthist)
    equalize_hist = _method(equalize_hist)
    gaussian_filter = _method(gaussian_filter)
    gaussian_stretch = _method(gaussian_stretch)
    histogram = _method(histogram)
    quicklook = _method(quicklook)
    register = _method(register)
    shift_and_add = _method(shift_and_add)
    standardize = _method(standardize)
    to_cog = _method(to_cog)
    to_zarr = _method(to_zarr)

    def zca_fit(self, eps: float = 1e-5, **kwargs: Any) -> ZCA:
        """Fit a :class:`bigimg.ZCA` on this stack (computes) and return it.

        ``eps`` and ``kwargs`` are :class:`bigimg.ZCA`'s parameters.
        """
        return ZCA(eps, **kwargs).fit(self._obj)
