"""Quick-look PNGs of images of any size, computed out of core with dask.

A preview is a NaN-aware block mean of the image (:func:`bigimg.multiscale.coarsen_mean`)
small enough to plot, stretched per band between two percentiles of the
*full-resolution* image. The percentiles come from a global histogram built
chunk by chunk, so no step ever holds more than a chunk of the image and the
small preview in memory. NoData (NaN) is transparent in the PNG.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy as np
import xarray as xr

from bigimg.files import (
    check_disjoint,
    check_local_only,
    check_new_object,
    check_png_name,
    is_url,
    new_object,
)
from bigimg.histogram import histogram
from bigimg.image import check_image, with_band
from bigimg.resample import check_size, coarsen_mean

_HIST_BINS = 4096  # float data: percentiles interpolate within 1/4096 of each band's range
_MAX_INT_BINS = 65536  # integers spanning at most this many values: one bin per value


# ---------------------------------------------------------------- public API
def quicklook(
    obj: xr.DataArray,
    path: str | os.PathLike[str] | None = None,
    *,
    max_size: int = 2048,
    bands: Sequence[int] | None = None,
    stretch: tuple[float, float] = (2.0, 98.0),
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """A small stretched preview of ``obj``, also written as a PNG when ``path`` is given (computes).

    The image is block-averaged (NaN-aware) by the smallest integer factor
    that brings its longest side to at most ``max_size``; each band is then
    mapped linearly from its ``stretch`` percentiles, taken from a histogram
    of the full-resolution band, to [0, 1], and clipped.

    Parameters
    ----------
    obj : xarray.DataArray
        Image with dims ``y``, ``x`` and optionally ``band``. Other dims must
        have length 1 (select one image of a stack first).
    path : path-like or str, optional
        Where to write the PNG (ending in ``.png``), a local path or a URL
        (``s3://…``, ``memory://…``): RGBA for three bands, grey + alpha for
        one; NoData pixels (NaN in any shown band) are fully transparent.
    max_size : int, default 2048
        Longest side of the preview, in pixels.
    bands : sequence of int, optional
        Positions along ``band`` to show: one (grey) or three (RGB). Default:
        the first three bands if there are at least three, else the first.
    stretch : (float, float), default (2, 98)
        Percentiles of the valid pixels mapped to black and to white.
    overwrite : bool, default False
        Replace an existing file at ``path``. The PNG is written under a
        temporary name and renamed into place when complete; at a URL it is
        sent in one put of the finished bytes (:func:`bigimg.files.new_object`).
    storage_options : dict, optional
        fsspec options (credentials, endpoint) for a URL ``path``.

    Returns
    -------
    xarray.DataArray
        In-memory float32 preview in [0, 1], NaN for NoData, dims
        ``(y, x, band)``, coords block-averaged, the input's attrs plus
        ``bigimg_quicklook_factor`` and ``bigimg_quicklook_limits`` (the
        values mapped to 0 and 1, per band).

    Raises
    ------
    TypeError
        ``obj`` is not a DataArray or not real numbers; ``max_size`` or a
        band is not an int; ``overwrite`` is not a bool.
    ValueError
        Missing ``y``/``x`` dims, a stack of several images, bad ``bands``,
        ``stretch`` or ``max_size``, ``path``'s folder does not exist or its
        suffix is not ``.png``, or
        ``path`` overlaps the file or store ``obj`` was read from (known from
        ``obj.encoding["source"]`` or ``obj.attrs["bigimg_source"]``).
    FileExistsError
        ``path`` exists and ``overwrite`` is false (checked before computing).
    IsADirectoryError
        ``path`` is a folder.

    Notes
    -----
    Two passes over the data run on the active Dask scheduler: the first
    computes the preview and each band's range, the second the histograms
    (:func:`bigimg.histogram`: one bin per value for integers spanning at
    most 65536 values, else 4096 bins over each band's own range).
    Percentiles are interpolated inside the bins, so they are within one bin
    of ``numpy.percentile`` (exact, as ``method="inverted_cdf"``, for
    integers). Every task holds about one chunk and the per-chunk histograms
    are summed by a tree reduction, so memory does not grow with the image.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> img = bi.from_array(np.random.default_rng(0).random((300, 200)))
    >>> small = bi.quicklook(img, max_size=100)
    >>> small.shape, small.attrs["bigimg_quicklook_factor"]
    ((100, 67, 1), 3)
    """
    check_image(obj, "obj")
    check_size(max_size, "max_size")
    lo, hi = _check_stretch(stretch)
    if path is not None:
        path = _check_png_path(path, obj, overwrite, storage_options)
    img = _select(obj, bands)
    if img.chunks is None:
        img = img.chunk()
    img = img.chunk({"band": -1})
    factor = max(1, math.ceil(max(img.sizes["y"], img.sizes["x"]) / max_size))
    # each band's range over its finite pixels (+-inf where a band has none: no NaN warnings)
    finite = np.isfinite(img) if img.dtype.kind == "f" else True
    low, high = img.where(finite, np.inf), img.where(finite, -np.inf)
    small, vmin, vmax = dask.compute(  # pass 1: the preview and the ranges
        coarsen_mean(img, factor),
        low.min(dim=("y", "x"), skipna=False),
        high.max(dim=("y", "x"), skipna=False),
    )
    limits = _band_limits(
        img, vmin.values.astype(np.float64), vmax.values.astype(np.float64), (lo, hi)
    )
    # a band without finite pixels (NaN limits) still shows -inf black and +inf white
    p0 = xr.DataArray(np.nan_to_num(limits[:, 0], nan=0.0), dims="band")
    scale = xr.DataArray(
        np.where(limits[:, 1] > limits[:, 0], limits[:, 1] - limits[:, 0], 1.0), dims="band"
    )
    preview = ((small - p0) / scale).clip(0.0, 1.0).astype("float32")
    preview.attrs = {
        **obj.attrs,
        "bigimg_quicklook_factor": factor,
        "bigimg_quicklook_limits": limits.tolist(),
    }
    if path is not None:
        write_png(preview.values, path, overwrite=overwrite, storage_options=storage_options)
    return preview


def write_png(
    rgb: np.ndarray,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Path | str:
    """Write a ``(y, x, 1 or 3)`` float array in [0, 1] as an 8-bit PNG with alpha.

    A pixel that is NaN in any band is fully transparent. A local file is
    written under a temporary name in ``path``'s folder and renamed into place
    when complete; at a URL (``s3://…``, ``memory://…``) the finished bytes are
    sent in one put (:func:`bigimg.files.new_object`).

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(y, x, 1 or 3)`` values in [0, 1] (clipped), NaN for transparent.
    path : path-like or str
        The PNG to write (ending in ``.png``), a local path or a URL.
    overwrite : bool, default False
        Replace an existing file at ``path``.
    storage_options : dict, optional
        fsspec options (credentials, endpoint) for a URL ``path``.

    Returns
    -------
    pathlib.Path or str
        ``path`` (a URL as given).

    Raises
    ------
    ValueError
        ``rgb`` has the wrong shape, or ``path`` does not end in ``.png``.
    TypeError
        ``overwrite`` is not a bool.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    IsADirectoryError, FileNotFoundError
        ``path`` is a folder, or its folder does not exist.

    Examples
    --------
    >>> import numpy as np, tempfile, os, PIL.Image
    >>> p = write_png(np.array([[[0.0], [np.nan]]]), os.path.join(tempfile.mkdtemp(), "a.png"))
    >>> PIL.Image.open(p).mode
    'LA'
    >>> write_png(np.zeros((2, 2, 3)), "memory://bigimg-doc/q.png", overwrite=True)
    'memory://bigimg-doc/q.png'
    """
    import PIL.Image

    rgb = np.asarray(rgb, dtype=np.float32)
    if rgb.ndim != 3 or rgb.shape[2] not in (1, 3) or rgb.size == 0:
        raise ValueError(f"rgb must have shape (y, x, 1 or 3), got {rgb.shape}")
    _check_overwrite(overwrite)
    where = check_new_object(  # before the work
        path, overwrite=overwrite, what="path", storage_options=storage_options
    )
    _check_suffix(where)
    alpha = np.all(np.isfinite(rgb), axis=2)
    pix = np.round(np.clip(np.nan_to_num(rgb, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)
    pix[~alpha] = 0
    a = np.where(alpha, 255, 0).astype(np.uint8)[:, :, None]
    image = PIL.Image.fromarray(np.concatenate([pix, a], axis=2))  # LA/RGBA
    with new_object(where, overwrite=overwrite, what="path", storage_options=storage_options) as fh:
        image.save(fh, format="PNG")
    return where


# ---------------------------------------------------------------- validation
def _check_png_path(
    path: str | os.PathLike[str],
    obj: xr.DataArray,
    overwrite: bool,
    storage_options: Mapping[str, Any] | None = None,
) -> Path | str:
    """The PNG path or URL, refused before any compute if it exists or overlaps ``obj``'s source."""
    _check_overwrite(overwrite)
    if is_url(path):
        check_disjoint(path, _source_paths(obj), what="path")
        where = check_new_object(
            path, overwrite=overwrite, what="path", storage_options=storage_options
        )
    else:
        check_local_only(path, storage_options, "path")
        path = Path(path)
        if not path.parent.is_dir():
            raise ValueError(f"path: folder {str(path.parent)!r} does not exist")
        check_disjoint(path, _source_paths(obj), what="path")
        where = check_new_object(path, overwrite=overwrite, what="path")
    _check_suffix(where)
    return where


def _check_overwrite(overwrite: object) -> None:
    if not isinstance(overwrite, bool | np.bool_):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")


def _check_suffix(path: str | os.PathLike[str]) -> None:
    check_png_name(path, what="path")


def _source_paths(obj: xr.DataArray) -> list[str]:
    """Files or stores ``obj`` was read from, as far as its encoding and attrs tell."""
    found = []
    source = obj.encoding.get("source")
    if isinstance(source, str | os.PathLike):
        found.append(os.fspath(source))
    recorded = obj.attrs.get("bigimg_source")
    if isinstance(recorded, str) and recorded:
        store = recorded.split("#")[0]  # pyramid levels record "store#levels/k/image"
        if Path(store).exists():  # provenance can also be a description, not a path
            found.append(store)
    return found


def _check_stretch(stretch: object) -> tuple[float, float]:
    if (
        not isinstance(stretch, Sequence)
        or len(stretch) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in stretch)
    ):
        raise TypeError(f"stretch must be two percentiles (lo, hi), got {stretch!r}")
    lo, hi = float(stretch[0]), float(stretch[1])
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"stretch must satisfy 0 <= lo < hi <= 100, got {stretch!r}")
    return lo, hi


def _select(obj: xr.DataArray, bands: Sequence[int] | None) -> xr.DataArray:
    """``obj`` as ``(y, x, band)`` with the chosen bands (lazy)."""
    obj = with_band(obj)
    extra = {d: n for d, n in obj.sizes.items() if d not in ("y", "x", "band")}
    if any(n > 1 for n in extra.values()):
        raise ValueError(
            f"obj has dim(s) {extra} besides y, x, band; select one image first, "
            f"e.g. obj.isel({next(iter(extra))}=0)"
        )
    obj = obj.isel(dict.fromkeys(extra, 0)).transpose("y", "x", "band")
    nb = obj.sizes["band"]
    if bands is None:
        bands = [0, 1, 2] if nb >= 3 else [0]
    if isinstance(bands, str | bytes) or not isinstance(bands, Sequence):
        raise TypeError(f"bands must be a sequence of 1 or 3 ints, got {bands!r}")
    if any(not isinstance(b, numbers.Integral) or isinstance(b, bool) for b in bands):
        raise TypeError(f"bands must be ints (positions along 'band'), got {bands!r}")
    if len(bands) not in (1, 3) or any(not 0 <= b < nb for b in bands):
        raise ValueError(f"bands must be 1 or 3 positions in [0, {nb}), got {list(bands)!r}")
    return obj.isel(band=[int(b) for b in bands])


# ---------------------------------------------------------------- global statistics
def _band_limits(
    img: xr.DataArray, vmin: np.ndarray, vmax: np.ndarray, q: tuple[float, float]
) -> np.ndarray:
    """Percentiles ``q`` of each band's valid pixels, ``(band, 2)``, NaN for empty bands (computes).

    One :func:`bigimg.histogram` pass, none for ``(0, 100)`` (the band's own
    minimum and maximum, given). Integers spanning at most
    ``_MAX_INT_BINS`` values are counted value by value (exact percentiles);
    other data are rescaled lazily to [0, 1] per band first, so each band
    gets the full ``_HIST_BINS`` resolution whatever the others' ranges.
    """
    limits = np.full((len(vmin), 2), np.nan)
    if q == (0.0, 100.0):  # the exact min and max, known: no histogram pass
        finite = np.isfinite(vmin)
        limits[finite, 0], limits[finite, 1] = vmin[finite], vmax[finite]
        return limits
    constant = np.isfinite(vmin) & (vmin == vmax)  # every percentile is that value
    limits[constant] = vmin[constant, None]
    has = np.flatnonzero(np.isfinite(vmin) & ~constant)  # bands with a histogram to build
    if has.size == 0:
        return limits
    sel, lo, hi = img.isel(band=has), vmin[has], vmax[has]
    if img.dtype.kind in "iu" and hi.max() - lo.min() < _MAX_INT_BINS:
        hist = histogram(sel, range=(float(lo.min()), float(hi.max())))
        lower = np.broadcast_to(hist["bin_lower"].values, hist.shape)
        upper = np.broadcast_to(hist["bin_upper"].values, hist.shape)
        exact = True
    else:
        span = np.where(hi > lo, hi - lo, 1.0)
        scaled = (sel - xr.DataArray(lo, dims="band")) / xr.DataArray(span, dims="band")
        hist = histogram(scaled, bins=_HIST_BINS, range=(0.0, 1.0))
        lower = lo[:, None] + hist["bin_lower"].values * span[:, None]
        upper = lo[:, None] + hist["bin_upper"].values * span[:, None]
        exact = False
    hist = hist.transpose("band", "bin")
    for i, b in enumerate(has):
        limits[b] = _percentiles_from_counts(
            hist.values[i], lower[i], upper[i], q, interpolate=not exact
        )
    return limits


# ---------------------------------------------------------------- kernels
def _percentiles_from_counts(
    counts: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    q: Sequence[float],
    *,
    interpolate: bool = True,
) -> np.ndarray:
    """Percentiles ``q`` (0-100) of histogrammed data (NaN when the histogram is empty).

    ``interpolate=True`` interpolates linearly inside the bin where the CDF
    crosses ``q``; ``False`` returns that bin's centre (exact for integer data
    counted one value per bin).

    Examples
    --------
    >>> _percentiles_from_counts(np.array([0, 2, 2]), np.array([0., 1, 2]), np.array([1., 2, 3]), [0, 50, 100])
    array([1., 2., 3.])
    """
    counts = np.asarray(counts)
    cdf = np.cumsum(counts)
    if cdf[-1] == 0:
        return np.full(len(q), np.nan)
    target = np.asarray(q, dtype=np.float64) / 100 * cdf[-1]
    idx = np.searchsorted(cdf, target, side="left")
    idx = np.clip(np.maximum(idx, np.flatnonzero(counts)[0]), 0, len(counts) - 1)
    if not interpolate:
        return (lower[idx] + upper[idx]) / 2
    before = np.where(idx > 0, cdf[idx - 1], 0)
    frac = np.clip((target - before) / counts[idx], 0.0, 1.0)
    return lower[idx] + frac * (upper[idx] - lower[idx])
