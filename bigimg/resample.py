"""Resampling: NaN-aware block means (``coarsen_mean``), the step between pyramid levels."""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr

from bigimg.image import check_image, float_dtype, per_dim


def coarsen_mean(obj: xr.DataArray, factor: int | Mapping[Hashable, int] = 2) -> xr.DataArray:
    """NaN-aware block mean: each output pixel is the mean of the valid input pixels of its block.

    The last block along a dim is smaller when the size is not a multiple of
    the factor (xarray's ``boundary="pad"``: padded with NaN, which the mean
    skips). A block with no valid pixel is NaN. Lazy.

    Parameters
    ----------
    obj : xarray.DataArray
        Image with dims ``y`` and ``x`` (any others, such as ``band`` or
        ``image``, are kept).
    factor : int or dict, default 2
        Block size: an int applies to ``y`` and ``x``; a dict names dims
        (dims left out get 1). A factor larger than its dim's size makes one
        block of the whole dim, as xarray's ``boundary="pad"`` does.

    Returns
    -------
    xarray.DataArray
        float32 (float64 stays float64), coords along the coarsened dims are
        block means (pixel centres), attrs kept.

    Raises
    ------
    TypeError
        ``obj`` is not a DataArray or not real numbers, or ``factor`` is
        neither int nor dict.
    ValueError
        A factor is not a positive integer, names an unknown dim, or would
        average a non-numeric coord (such as band names).

    Notes
    -----
    This is ``obj.coarsen(..., boundary="pad").mean()``. Chunks are first
    aligned to multiples of the factor, so each output chunk reads one input
    chunk and memory stays bounded by the chunk size.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> from bigimg.resample import coarsen_mean
    >>> img = bi.from_array(np.array([[1.0, 3.0, 5.0], [np.nan, 2.0, np.nan]], "float32"))
    >>> coarsen_mean(img, 2).isel(band=0).values
    array([[2., 5.]], dtype=float32)
    """
    check_image(obj, "obj")
    if obj.dtype.kind not in "biuf":
        raise TypeError(f"obj must have a real numeric dtype (bool, int or float), got {obj.dtype}")
    factors = _factors(obj, factor)
    windows = {d: f for d, f in factors.items() if f > 1}
    _check_coords(obj, windows)
    data = obj.astype(float_dtype(obj.dtype))
    if not windows:
        return data
    pad = {d: (0, -data.sizes[d] % f) for d, f in windows.items() if data.sizes[d] % f}
    if pad:  # NaN-pad to whole blocks (what boundary="pad" does), before aligning chunks
        data = data.pad(pad, mode="constant", keep_attrs=True)
    if data.chunks is not None:  # align chunk boundaries with block boundaries
        aligned = {}
        for d, f in windows.items():
            chunks = data.chunks[data.get_axis_num(d)]
            if any(c % f for c in chunks):
                aligned[d] = max(f, round(max(chunks) / f) * f)
        if aligned:
            data = data.chunk(aligned)
    return data.coarsen(windows, boundary="exact").mean()


# ---------------------------------------------------------------- internals
def check_size(value: Any, name: str) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _factors(obj: xr.DataArray, factor: Any) -> dict[Hashable, int]:
    values = per_dim(obj, factor, "factor", default=1.0)
    out = {}
    for d, v in zip(obj.dims, values, strict=True):
        if v < 1 or v != math.floor(v):
            raise ValueError(f"factor[{d!r}] must be a positive integer, got {v!r}")
        # beyond the dim's size, padding only adds NaN the mean skips: one block
        # of the whole dim is the same result, without padding to the factor
        out[d] = min(int(v), obj.sizes[d])
    return out


def _check_coords(obj: xr.DataArray, windows: Mapping[Hashable, int]) -> None:
    """Refuse coarsening a dim whose coords cannot be averaged (block means of labels)."""
    for name, coord in obj.coords.items():
        coarsened = [d for d in coord.dims if d in windows]
        if coarsened and coord.dtype.kind not in "biufmM":
            raise ValueError(
                f"factor[{coarsened[0]!r}]={windows[coarsened[0]]} would average the coord "
                f"{name!r} of dtype {coord.dtype}, which has no mean; drop it first "
                f"(obj.drop_vars({name!r})) or leave {coarsened[0]!r} out of factor"
            )
