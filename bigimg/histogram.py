"""Global histograms by chunked reduction, and histogram equalization.

A histogram of an image far larger than memory is a reduction: every chunk
counts its own pixels (a compiled kernel), the per-chunk counts are summed by a
dask tree reduction, and only the small table of counts ever reaches the
client. No pixel is sorted or gathered.

Integer images are counted exactly, one bin per integer value, as
scikit-image does. For 8- and 16-bit integers a single pass counts the whole
dtype range and the valid range is read off the counts;
wider integers and floats first find the valid range (pass 1) and then count
(pass 2). Equalization maps every pixel through the normalized cumulative
counts: a lookup table for integers (``lut[img]``), linear interpolation
between bin centres otherwise, chunk by chunk and lazily, written in the
float dtype or (``dtype=``) directly as 8/16-bit integers.

Layers: kernels (:mod:`bigimg.kernels.histogram`, compiled, called by the
``_*_kernel`` adapters here, which cut a block into per-band planes; the
range pass and explicit bin edges stay in numpy) -> chunked builders (``_blockwise`` for the maps; ``_reduce``, a
:class:`~bigimg.compute.Reduction` of a kernel's partial results, for the
counts and ranges; the only dask code) -> public API (:func:`histogram`,
:func:`equalize_hist`, :func:`plot_histogram`).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr

from bigimg.compute import Passes, Reduction, reduce_blocks, run_passes, sum_parts
from bigimg.errors import BigimgWarning
from bigimg.files import check_new_object, check_png_name, new_object
from bigimg.image import check_image, float_dtype, like
from bigimg.kernels import histogram as kh

# Widest integer range counted exactly (one bin per value) before we refuse.
MAX_INT_BINS = 2**24
# Most bins per histogram: every chunk's partial counts and the result hold
# 8 bytes per bin and histogram, so 2**24 bins are 128 MiB per histogram.
MAX_BINS = 2**24
# Most counts over all histograms (int64: 1 GiB), e.g. one histogram per pixel with dims="band".
MAX_COUNTS = 2**27
# Largest difference from np.interp that equalization's interpolation accepts to skip the
# segment correction (the contract is 1e-6 from scikit-image's equalize_hist).
INTERP_ATOL = 1e-8

__all__ = [
    "cast_exclude",
    "equalize_hist",
    "equalize_hist_passes",
    "histogram",
    "plot_histogram",
    "valid_range_passes",
]


# ---------------------------------------------------------------- kernels
# Each kernel takes one block and ``kept``: the axes along which separate
# histograms are kept (``band`` by default). Partial results, and the tables
# the counting kernels read, have the block's shape with every other axis
# collapsed to 1, plus one trailing axis.


def _rows(
    shape: tuple[int, ...], kept: tuple[int, ...]
) -> Iterator[tuple[tuple[int, ...], tuple[Any, ...]]]:
    """Yield ``(idx, slicer)``: each index along the kept axes and the block view it selects."""
    for idx in np.ndindex(*(shape[a] for a in kept)):
        sl: list[Any] = [slice(None)] * len(shape)
        for a, i in zip(kept, idx, strict=True):
            sl[a] = i
        yield idx, tuple(sl)


def _partial_index(ndim: int, kept: tuple[int, ...], idx: tuple[int, ...]) -> tuple[int, ...]:
    """Where the partial result of ``idx`` goes (0 on the collapsed axes)."""
    out = [0] * ndim
    for a, i in zip(kept, idx, strict=True):
        out[a] = i
    return tuple(out)


def _partial_shape(shape: tuple[int, ...], kept: tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(s if a in kept else 1 for a, s in enumerate(shape)) + (n,)


def _excluded(values: np.ndarray, exclude: tuple[Any, ...]) -> np.ndarray:
    """Boolean mask of the values equal to one of ``exclude`` (NaN is not included)."""
    if not exclude:
        return np.zeros(values.shape, dtype=bool)
    return np.isin(values, np.array(exclude, dtype=values.dtype))  # sorts a long exclude


def _valid_values(values: np.ndarray, exclude: tuple[Any, ...]) -> np.ndarray:
    """The values that are neither NaN nor excluded, as a 1-D array."""
    bad = _excluded(values, exclude)
    if values.dtype.kind == "f":
        bad |= np.isnan(values)
    return values[~bad]


def _minmax_kernel(
    block: np.ndarray, *, kept: tuple[int, ...], exclude: tuple[Any, ...]
) -> np.ndarray:
    """Per kept index: ``[min, max]`` of the valid values; ``[+big, -big]`` when there are none."""
    dt = block.dtype
    if dt.kind == "f":
        empty = (np.inf, -np.inf)
    else:
        info = np.iinfo(dt)
        empty = (info.max, info.min)
    out = np.empty(_partial_shape(block.shape, kept, 2), dtype=dt)
    for idx, sl in _rows(block.shape, kept):
        sub = block[sl]
        if dt.kind == "f" and not exclude:
            lo, hi = np.fmin.reduce(sub, axis=None), np.fmax.reduce(sub, axis=None)  # skip NaN
            out[_partial_index(block.ndim, kept, idx)] = empty if np.isnan(lo) else (lo, hi)
            continue
        vals = _valid_values(sub, exclude)
        out[_partial_index(block.ndim, kept, idx)] = (
            (vals.min(), vals.max()) if vals.size else empty
        )
    return out


def _merge_minmax(parts: list[np.ndarray]) -> np.ndarray:
    """Combine :func:`_minmax_kernel` partials: ``[min of the mins, max of the maxes]``."""
    lo = np.minimum.reduce([p[..., 0] for p in parts])
    hi = np.maximum.reduce([p[..., 1] for p in parts])
    return np.stack([lo, hi], axis=-1)


def _count_dtype_kernel(block: np.ndarray, *, kept: tuple[int, ...]) -> np.ndarray:
    """8/16-bit integers: counts of every value of the dtype (bin ``i`` is ``dtype.min + i``)."""
    n = 1 << (8 * block.dtype.itemsize)
    counts = kh.count_values(kh.as_planes(block, kept), int(np.iinfo(block.dtype).min), n)
    return counts.reshape(_partial_shape(block.shape, kept, n))


def _count_window_kernel(
    block: np.ndarray, *, kept: tuple[int, ...], low: int, n: int, exclude: tuple[Any, ...]
) -> np.ndarray:
    """Wider integers: counts of the values ``low .. low + n - 1`` (one bin each)."""
    counts = kh.count_values(kh.as_planes(block, kept), low, n, exclude)
    return counts.reshape(_partial_shape(block.shape, kept, n))


def _count_uniform_kernel(
    block: np.ndarray,
    ranges: np.ndarray | None = None,
    *,
    kept: tuple[int, ...],
    n: int,
    exclude: tuple[Any, ...],
    fixed: tuple[Any, Any] | None = None,
) -> np.ndarray:
    """``n`` uniform bins per kept index, exactly as ``numpy.histogram``.

    The range is ``fixed`` (the user's ``range``, its two values passed on
    untouched) or read from ``ranges`` (``(first, last)`` per kept index, laid
    out like the partial result, found in the data, in the image's dtype as
    numpy's ``a.min()``). numpy computes the edges in the dtype those values
    promote to with the data's, so they are never converted here.
    """
    planes = kh.as_planes(block, kept)
    out = np.zeros((planes.shape[0], n), dtype=np.int64)
    for k, (idx, _) in enumerate(_rows(block.shape, kept)):
        where = _partial_index(block.ndim, kept, idx)
        rng = fixed if fixed is not None else tuple(ranges[where])  # type: ignore[index]
        bins = kh.uniform_bins(block.dtype, n, *rng)
        out[k] = kh.count_uniform(planes[k : k + 1], bins, exclude)[0]
    return out.reshape(_partial_shape(block.shape, kept, n))


def _count_edges_kernel(
    block: np.ndarray, *, kept: tuple[int, ...], edges: np.ndarray, exclude: tuple[Any, ...]
) -> np.ndarray:
    """Counts in explicit bins ``[e_i, e_i+1)``, the last one closed (numpy's rule), no sorting."""
    n = edges.size - 1
    out = np.empty(_partial_shape(block.shape, kept, n), dtype=np.int64)
    for idx, sl in _rows(block.shape, kept):
        vals = _valid_values(block[sl], exclude)
        i = np.searchsorted(edges, vals, side="right") - 1
        i[vals == edges[-1]] = n - 1
        out[_partial_index(block.ndim, kept, idx)] = np.bincount(i[(i >= 0) & (i < n)], minlength=n)
    return out


def _out_planes(
    shape: tuple[int, ...], kept: tuple[int, ...], dtype: Any
) -> tuple[np.ndarray, np.ndarray]:
    """An empty block of ``shape`` laid out with the kept axes outermost, and its planes.

    Each kept index (a band) is then one contiguous plane: a kernel fills it
    without strided writes, and the band-first store layout needs no copy.
    Returns the block (in ``shape``'s axis order) and its ``(K, P, Q)`` view.
    """
    order = [*kept, *(a for a in range(len(shape)) if a not in kept)]
    buf = np.empty([shape[a] for a in order], dtype=dtype)
    return buf.transpose(np.argsort(order)), kh.as_planes(buf, tuple(range(len(kept))))


def _lut_kernel(
    block: np.ndarray,
    lut: np.ndarray,
    *,
    kept: tuple[int, ...],
    low: int | None = None,
    exclude: tuple[Any, ...] = (),
) -> np.ndarray:
    """Integers: ``lut[idx][value - low]`` (``low``: the dtype's min by default); excluded values keep their value."""
    out, planes = _out_planes(block.shape, kept, lut.dtype)
    low = int(np.iinfo(block.dtype).min) if low is None else low
    kh.apply_lut(
        kh.as_planes(block, kept), low, lut.reshape(planes.shape[0], -1), exclude, out=planes
    )
    return out


def _interp_kernel(
    block: np.ndarray,
    xp: np.ndarray,
    fp: np.ndarray,
    *,
    kept: tuple[int, ...],
    exclude: tuple[Any, ...],
    uniform: bool,
    out_dtype: np.dtype,
    nodata: Any = 0,
) -> np.ndarray:
    """``np.interp(value, xp[idx], fp[idx])``; NaN stays NaN (``nodata`` for an integer ``out_dtype``), excluded values keep their value."""
    out, planes = _out_planes(block.shape, kept, out_dtype)
    k = planes.shape[0]
    kh.interp(
        kh.as_planes(block, kept), xp.reshape(k, -1), fp.reshape(k, -1), exclude,
        out=planes, uniform=uniform, atol=INTERP_ATOL, nodata=nodata,
    )  # fmt: skip
    return out


# ---------------------------------------------------------------- chunked builders
def _blockwise(
    kernel: Any,
    arr: da.Array,
    kept: tuple[int, ...],
    tables: Sequence[np.ndarray] = (),
    *,
    dtype: Any,
    **kwargs: Any,
) -> da.Array:
    """Map ``kernel(block, *table_blocks, kept=kept, **kwargs)`` over the blocks of ``arr``.

    Each table has the kept axes' sizes first (then any trailing axes) and is
    chunked like ``arr`` along them, so a task receives only its own rows and
    the graph holds each table once.
    """
    dtype = np.dtype(dtype)
    nd = arr.ndim
    ind = tuple(range(nd))
    args: list[Any] = [arr, ind]
    nxt = nd + 1
    for table in tables:
        extra = table.ndim - len(kept)
        chunks = tuple(arr.chunks[a] for a in kept) + tuple((s,) for s in table.shape[len(kept) :])
        args += [da.from_array(table, chunks=chunks), kept + tuple(range(nxt, nxt + extra))]
        nxt += extra
    return da.blockwise(
        kernel, ind, *args, dtype=dtype, meta=np.empty((0,) * nd, dtype),
        concatenate=True, kept=kept, **kwargs,
    )  # fmt: skip


def _reduce(
    s: _Setup,
    kernel: Callable[..., np.ndarray],
    size: int,
    *,
    combine: Callable[[list[np.ndarray]], np.ndarray],
    dtype: Any,
    table: np.ndarray | None = None,
    **kwargs: Any,
) -> da.Array:
    """``kernel``'s partial results over the blocks of ``s.arr``, combined (lazy).

    ``kernel(block[, table_block], kept=s.kept, **kwargs)`` returns ``size``
    values per kept index; ``table`` holds ``(kept sizes..., k)`` values the
    kernel reads, passed to each task for its own kept indices only. Returns
    ``(kept sizes..., size)``.
    """
    arrays = [s.arr]
    if table is not None:
        shape = _partial_shape(s.arr.shape, s.kept, table.shape[-1])
        chunks = [s.arr.chunks[a] if a in s.kept else (1,) for a in range(s.arr.ndim)]
        arrays.append(da.from_array(table.reshape(shape), chunks=(*chunks, (table.shape[-1],))))
    reduction: Reduction[np.ndarray, np.ndarray] = Reduction(
        chunk=functools.partial(kernel, kept=s.kept, **kwargs), combine=combine
    )
    reduced = tuple(a for a in range(s.arr.ndim) if a not in s.kept)
    out = reduce_blocks(
        arrays, reduction, axis=reduced, dtype=dtype, new_axes=(size,), name="histogram"
    )
    return out.reshape((*(s.arr.shape[a] for a in s.kept), size))


def _counts(s: _Setup, kernel: Callable[..., np.ndarray], size: int, **kwargs: Any) -> da.Array:
    """Counts ``(kept sizes..., size)`` summed from ``kernel``'s per-block counts (lazy)."""
    return _reduce(s, kernel, size, combine=sum_parts, dtype=np.int64, **kwargs)


def _minmax(s: _Setup) -> Passes[tuple[np.ndarray, np.ndarray]]:
    """Min and max of the valid values per kept index, ``[+big, -big]`` where none (one pass)."""
    (both,) = yield (
        _reduce(s, _minmax_kernel, 2, combine=_merge_minmax, dtype=s.arr.dtype, exclude=s.exclude),
    )
    return both[..., 0], both[..., 1]


# ---------------------------------------------------------------- validation
@dataclass(frozen=True)
class _Setup:
    """Validated inputs shared by :func:`histogram` and :func:`equalize_hist`."""

    arr: da.Array
    kept: tuple[int, ...]
    kept_dims: tuple[Hashable, ...]
    exclude: tuple[Any, ...]  # cast to the image's dtype
    exclude_given: tuple[float, ...]
    bins: int | np.ndarray


def _setup(img: Any, bins: Any, exclude: Any, dims: Any) -> _Setup:
    check_image(img, "img", required=())
    if img.dtype.kind not in "iuf":
        raise TypeError(f"img must have an integer or floating dtype, got {img.dtype}")
    if dims is None:
        reduce_dims = tuple(d for d in img.dims if d != "band")
    elif isinstance(dims, str):
        reduce_dims = (dims,)
    elif isinstance(dims, Iterable):
        reduce_dims = tuple(dims)
    else:
        raise TypeError(f"dims must be a dim name or a sequence of dim names, got {dims!r}")
    unknown = [d for d in reduce_dims if d not in img.dims]
    if unknown:
        raise ValueError(f"dims names unknown dim(s) {unknown!r}; img has dims {img.dims!r}")
    if not reduce_dims or len(set(reduce_dims)) != len(reduce_dims):
        raise ValueError(f"dims must name one or more distinct dims of img, got {dims!r}")
    kept = tuple(i for i, d in enumerate(img.dims) if d not in reduce_dims)
    arr = img.data if isinstance(img.data, da.Array) else da.asarray(img.data)
    given = _check_exclude(exclude)
    s = _Setup(
        arr=arr,
        kept=kept,
        kept_dims=tuple(img.dims[a] for a in kept),
        exclude=_cast_exclude(given, img.dtype),
        exclude_given=given,
        bins=_check_bins(bins),
    )
    if isinstance(s.bins, np.ndarray):
        _check_size(img, s, s.bins.size - 1)
    elif _small_int(img.dtype):
        _check_size(img, s, 1 << (8 * img.dtype.itemsize))
    elif img.dtype.kind == "f":
        _check_size(img, s, s.bins)
    return s


def _check_bins(bins: Any) -> int | np.ndarray:
    if isinstance(bins, numbers.Integral) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be >= 1, got {bins!r}")
        if bins > MAX_BINS:  # type: ignore[operator]  # typeshed: numbers.Integral has no __gt__
            raise ValueError(
                f"bins must be at most {MAX_BINS} (2**24: 128 MiB of counts per histogram "
                f"and per chunk), got {bins!r}"
            )
        return int(bins)
    if isinstance(bins, (str, bytes, bool)) or not isinstance(bins, (Sequence, np.ndarray)):
        raise TypeError(f"bins must be an int or a sequence of bin edges, got {bins!r}")
    try:
        raw = np.asarray(bins)
    except (TypeError, ValueError):  # ragged
        raise TypeError(f"bins edges must be numbers, got {bins!r}") from None
    mixed_bool = (  # [0.5, True] converts to float; an ndarray of floats holds no bool
        raw.dtype.kind == "f"
        and not isinstance(bins, np.ndarray)
        and any(isinstance(v, (bool, np.bool_)) for v in bins)
    )
    if raw.dtype.kind not in "iuf" or mixed_bool:  # strings, bools, None: numpy converts some
        raise TypeError(f"bins edges must be numbers, got {bins!r} (dtype {raw.dtype})")
    edges = raw.astype(np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError(f"bins edges must be a 1-D sequence of at least 2 values, got {bins!r}")
    if edges.size - 1 > MAX_BINS:
        raise ValueError(
            f"bins must give at most {MAX_BINS} bins (2**24: 128 MiB of counts per histogram "
            f"and per chunk), got {edges.size} edges"
        )
    if not np.all(np.isfinite(edges)):
        raise ValueError(f"bins edges must be finite, got {bins!r}")
    if np.any(np.diff(edges) < 0):
        raise ValueError(f"bins edges must increase monotonically, got {bins!r}")
    return edges


def _check_range(range: Any) -> tuple[Any, Any] | str | None:  # noqa: A002  (numpy's name)
    """``None``, ``"shared"`` or the user's ``(first, last)``, each value kept as given.

    numpy computes the bin edges in the dtype the two values promote to with
    the data's (a float32 array range keeps float32 edges), so they are
    checked but not converted.
    """
    if range is None:
        return None
    if isinstance(range, str):
        if range != "shared":
            raise ValueError(f"range must be None, 'shared' or a pair (min, max), got {range!r}")
        return range
    if (
        isinstance(range, bytes)
        or not isinstance(range, (Sequence, np.ndarray))
        or np.ndim(range) != 1
        or len(range) != 2
    ):
        raise TypeError(f"range must be None, 'shared' or a pair (min, max), got {range!r}")
    first, last = range[0], range[1]
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (first, last)):
        raise TypeError(f"range must hold two numbers, got {range!r}")
    try:
        finite = math.isfinite(first) and math.isfinite(last)
    except OverflowError:  # a Python int too large for a float
        finite = False
    if not finite:
        raise ValueError(f"range must be finite, got {range!r}")
    if not first < last:
        raise ValueError(f"range must have min < max, got {range!r}")
    return first, last


def _check_exclude(exclude: Any) -> tuple[float, ...]:
    def ok(v: Any) -> bool:
        return isinstance(v, numbers.Real) and not isinstance(v, bool)

    if ok(exclude):
        return (exclude,)
    if isinstance(exclude, (str, bytes)) or not isinstance(exclude, (Iterable, np.ndarray)):
        raise TypeError(f"exclude must be a number or a sequence of numbers, got {exclude!r}")
    values = tuple(exclude.tolist() if isinstance(exclude, np.ndarray) else exclude)
    bad = [v for v in values if not ok(v)]
    if bad:
        raise TypeError(f"exclude must hold numbers only, got {bad!r} in {exclude!r}")
    return values


def _cast_exclude(values: tuple[Any, ...], dtype: np.dtype) -> tuple[Any, ...]:
    """The excluded values that the dtype can hold, as scalars of that dtype (NaN dropped)."""
    out: list[Any] = []
    for v in values:
        if dtype.kind == "f":
            try:
                f = float(v)
            except OverflowError:  # a Python int beyond any float: no pixel equals it
                continue
            if math.isnan(f) or (math.isfinite(f) and abs(f) > float(np.finfo(dtype).max)):
                continue
            out.append(dtype.type(f))
        else:
            info = np.iinfo(dtype)
            if isinstance(v, numbers.Integral) or float(v).is_integer():
                if info.min <= int(v) <= info.max:
                    out.append(dtype.type(int(v)))
    return tuple(dict.fromkeys(out))


def _label(img: xr.DataArray, kept_dims: tuple[Hashable, ...], idx: tuple[int, ...]) -> str:
    parts = []
    for d, i in zip(kept_dims, idx, strict=True):
        v = img[d].values[i] if d in img.coords else i
        parts.append(f"{d}={v.item() if isinstance(v, np.generic) else v!r}")
    return ", ".join(parts) or "the whole image"


def _check_nonempty(img: xr.DataArray, s: _Setup, empty: np.ndarray, what: str) -> None:
    """Raise naming the first kept index (e.g. ``band='g'``) whose histogram has no pixel."""
    empty = np.asarray(empty)
    for idx in np.ndindex(empty.shape):
        if empty[idx]:
            raise ValueError(
                f"img has no valid pixels at {_label(img, s.kept_dims, idx)} {what} "
                f"(NaN and exclude={list(s.exclude_given)!r} are not counted)"
            )


def _check_counts(img: xr.DataArray, s: _Setup, counts: np.ndarray, what: str) -> None:
    _check_nonempty(img, s, counts.sum(axis=-1) == 0, what)


def _warn_empty(img: xr.DataArray, s: _Setup, counts: np.ndarray, what: str) -> None:
    """Warn naming the kept indices whose histogram over a given range or bins counted nothing.

    Their counts stay zero, as ``numpy.histogram``'s: the range is the
    caller's, so an empty one is an answer, not an error (issue 22).
    """
    empty = np.asarray(counts.sum(axis=-1) == 0)
    labels = [_label(img, s.kept_dims, idx) for idx in np.ndindex(empty.shape) if empty[idx]]
    if labels:
        warnings.warn(
            f"histogram: img has no valid pixels at {'; '.join(labels)} {what} (NaN and "
            f"exclude={list(s.exclude_given)!r} are not counted): its counts are all zero",
            BigimgWarning,
            stacklevel=5,  # histogram's caller (through run_passes)
        )


def _check_size(img: xr.DataArray, s: _Setup, n: int) -> None:
    """Refuse more than ``MAX_COUNTS`` counts in all (before any compute where ``n`` is known)."""
    k = math.prod(_kept_shape(img, s))
    if k * n > MAX_COUNTS:
        raise ValueError(
            f"{k} histograms (one per index of {s.kept_dims!r}, the dims not in dims=) of {n} "
            f"bins are {k * n} counts, more than the {MAX_COUNTS} (1 GiB) bigimg holds; "
            "pass dims= naming more dims, or fewer bins"
        )


def _checked_edges(
    img: xr.DataArray, s: _Setup, idx: tuple[int, ...] | None, first: Any, last: Any
) -> np.ndarray:
    """:func:`_uniform_edges`, refusing a range numpy cannot cut into ``bins`` finite, distinct edges."""
    n = s.bins
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # numpy raises below for those
            return _uniform_edges(s.arr.dtype, n, first, last)  # type: ignore[arg-type]
    except ValueError:
        where = "range" if idx is None else f"the valid range of {_label(img, s.kept_dims, idx)}"
        raise ValueError(
            f"bins={n} equal-width bins cannot be made over {where} [{first}, {last}] in "
            f"{s.arr.dtype} (too narrow or too wide for the dtype); pass fewer bins, another "
            "range= or explicit bin edges"
        ) from None


# ---------------------------------------------------------------- counting
def _small_int(dtype: np.dtype) -> bool:
    return dtype.kind in "iu" and dtype.itemsize <= 2


def _int_counts(
    img: xr.DataArray, s: _Setup, rng: tuple[Any, Any] | None
) -> Passes[tuple[np.ndarray, int]]:
    """Exact integer counts ``(kept..., n)`` of the values ``low .. low + n - 1``, and ``low``.

    The window is ``range`` (integers inside it) when given, else the valid
    min..max over all kept indices (one pass for 8/16-bit integers, two otherwise).
    """
    dt = s.arr.dtype
    info = np.iinfo(dt)
    if rng is not None:  # checked before any compute
        lo, hi = max(math.ceil(rng[0]), info.min), min(math.floor(rng[1]), info.max)
        if lo > hi:
            raise ValueError(f"range {rng!r} holds no integer value of img's dtype {dt}")
    if _small_int(dt):
        (counts,) = yield (_counts(s, _count_dtype_kernel, 1 << (8 * dt.itemsize)),)
        for v in s.exclude:
            counts[..., int(v) - info.min] = 0
        if rng is None:
            seen = np.flatnonzero(counts.reshape(-1, counts.shape[-1]).sum(axis=0))
            if seen.size == 0:
                _check_counts(img, s, counts, "after exclusion")
            lo, hi = int(seen[0]) + info.min, int(seen[-1]) + info.min
        return counts[..., lo - info.min : hi - info.min + 1], lo
    if rng is None:
        mins, maxs = yield from _minmax(s)
        _check_nonempty(img, s, mins > maxs, "after exclusion")
        lo, hi = int(mins.min()), int(maxs.max())
    n = hi - lo + 1
    if n > MAX_INT_BINS:
        raise ValueError(
            f"img's integer values span {n} distinct values ({lo}..{hi}), more than the {MAX_INT_BINS} "
            "counted exactly; pass a narrower range= or cast img to float to use bins="
        )
    _check_size(img, s, n)
    (counts,) = yield (_counts(s, _count_window_kernel, n, low=lo, n=n, exclude=s.exclude),)
    return counts, lo


def _float_ranges(img: xr.DataArray, s: _Setup) -> Passes[tuple[np.ndarray, np.ndarray]]:
    """Pass 1: per kept index min and max of the valid values, finite-checked."""
    mins, maxs = yield from _minmax(s)
    _check_nonempty(img, s, mins > maxs, "after exclusion")
    if not (np.isfinite(mins).all() and np.isfinite(maxs).all()):
        raise ValueError(
            f"img's valid values span [{mins.min()}, {maxs.max()}], which is not finite; "
            "pass a finite range= or exclude=[inf, -inf]"
        )
    return mins, maxs


def _uniform_counts(
    s: _Setup, ranges: np.ndarray | None, n: int, fixed: tuple[Any, Any] | None = None
) -> da.Array:
    """Counts in ``n`` uniform bins over ``fixed`` or over each kept index's ``ranges`` (lazy)."""
    return _counts(s, _count_uniform_kernel, n, table=ranges, n=n, exclude=s.exclude, fixed=fixed)


def _edges_counts(s: _Setup, edges: np.ndarray) -> da.Array:
    return _counts(s, _count_edges_kernel, edges.size - 1, edges=edges, exclude=s.exclude)


def _uniform_edges(dtype: np.dtype, n: int, first: Any, last: Any) -> np.ndarray:
    """The bin edges ``numpy.histogram`` uses for ``n`` bins over ``(first, last)`` on ``dtype`` data."""
    return np.histogram_bin_edges(np.empty(0, dtype=dtype), bins=n, range=(first, last))


def _kept_shape(img: xr.DataArray, s: _Setup) -> tuple[int, ...]:
    return tuple(img.shape[a] for a in s.kept)


def valid_range_passes(
    img: xr.DataArray,
    *,
    exclude: float | Sequence[float] = (),
    dims: str | Sequence[Hashable] | None = None,
) -> Passes[tuple[np.ndarray, np.ndarray]]:
    """:func:`histogram`'s range pass: min and max of the valid values per kept index.

    One pass (a :data:`~bigimg.compute.Passes` with a single yield), for
    other capabilities that need the global range of the valid pixels
    (``equalize_adapthist``). Returns ``(mins, maxs)``, arrays of the kept
    dims' shape in ``img``'s dtype. Arguments are checked as :func:`histogram`
    checks them, before the yield; after it, ValueError names the first kept
    index with no valid pixel, or non-finite floating extremes.
    """
    s = _setup(img, 1, exclude, dims)
    if s.arr.dtype.kind == "f":
        return (yield from _float_ranges(img, s))
    mins, maxs = yield from _minmax(s)
    _check_nonempty(img, s, mins > maxs, "after exclusion")
    return mins, maxs


def cast_exclude(exclude: Any, dtype: Any) -> tuple[Any, ...]:
    """``exclude`` checked as :func:`histogram` checks it, cast to ``dtype`` (values it cannot hold dropped)."""
    return _cast_exclude(_check_exclude(exclude), np.dtype(dtype))


# ---------------------------------------------------------------- public API
def histogram(
    img: xr.DataArray,
    *,
    bins: int | Sequence[float] = 256,
    range: tuple[float, float] | Literal["shared"] | None = None,  # noqa: A002  (numpy's name)
    exclude: float | Sequence[float] = (),
    dims: str | Sequence[Hashable] | None = None,
) -> xr.DataArray:
    """Histogram of the valid pixels of an image of any size (computes).

    A chunked reduction: every chunk is counted by a numpy kernel and the
    per-chunk counts are summed by a dask tree reduction, so memory holds a
    few chunks and the counts, never the pixels. NaN and ``exclude`` values
    are never counted.

    Parameters
    ----------
    img : xarray.DataArray
        Image (any dims), integer or floating dtype; dask-backed or numpy.
    bins : int or sequence of float, default 256
        Floating images: the number of equal-width bins over ``range``, with
        ``numpy.histogram``'s edges (the last bin includes its right edge).
        Integer images ignore an int ``bins``: every integer value of the
        range has its own bin (as ``skimage.exposure.histogram`` does). A
        sequence gives explicit, monotonically increasing bin edges (any dtype).
        At most ``MAX_BINS`` = 2**24 bins (their counts take 128 MiB per
        histogram and per chunk).
    range : (number, number) or "shared", optional
        ``(min, max)``: values outside are not counted; the two values keep
        their types, so the edges are computed in the dtype numpy would use
        (a float32 array range on a float32 image gives float32 edges).
        Default (None): each histogram over its own valid min and max, as
        ``numpy.histogram`` on that band gives. ``"shared"``: every histogram
        over the min and max of all of them, so they share their bins.
        Either is found by a first pass (skipped for 8- and 16-bit integers,
        which are counted over the whole dtype range in one pass and
        trimmed). Integer images always share their bins (one per integer
        value, over the union of the bands' ranges: a band counts 0 outside
        its own). Ignored with explicit edges.
    exclude : number or sequence of numbers, default ()
        Values never counted, e.g. ``[0, 255]`` for a NoData border. Compared
        after casting to the image's dtype.
    dims : str or sequence of str, optional
        Dims to count over; one histogram per index of the other dims.
        Default: every dim but ``band``.

    Returns
    -------
    xarray.DataArray
        int64 counts with the dims of ``img`` not in ``dims`` (in order) and
        ``bin``, the coords of the kept dims, and ``bin_centre`` (the integer
        values for integer images), ``bin_lower`` and ``bin_upper``. Where the
        histograms have their own bins (floating images, several histograms,
        default ``range``) these three have the kept dims and ``bin``;
        otherwise they have dim ``bin`` only and ``bin`` holds the centres too.

    Raises
    ------
    TypeError
        ``img`` is not a DataArray of an integer/float dtype; ``bins``,
        ``range``, ``exclude`` or ``dims`` of the wrong type.
    ValueError
        ``bins < 1``, more than ``MAX_BINS`` bins or bad edges; ``range`` not
        finite, min >= max or a string other than ``"shared"``; ``dims``
        naming a dim ``img`` lacks; a histogram with no valid pixel after
        exclusion when its range comes from the data; non-finite valid values
        with no ``range``.

    Warns
    -----
    BigimgWarning
        A histogram over a given ``range`` (or bin edges) that holds no valid
        pixel: its counts are zero, as ``numpy.histogram``'s.

    Notes
    -----
    Equal to ``numpy.histogram(valid, bins, range)`` on each kept index's
    valid pixels, with ``range`` as given, or that index's own valid
    min/max by default. ``range="shared"`` is the common binning of
    ``skimage.exposure.histogram`` with ``channel_axis``. Chunking never
    changes the counts.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> img = bi.from_array(np.array([[0, 1, 1], [2, 255, 3]], dtype="uint8"), chunks=1)
    >>> h = bi.histogram(img, exclude=[0, 255])
    >>> h.dims, h["bin"].values.tolist(), h.values.tolist()
    (('band', 'bin'), [1, 2, 3], [[2, 1, 1]])
    >>> f = bi.from_array(np.array([[0.0, np.nan], [0.5, 1.0]]))
    >>> bi.histogram(f, bins=2).values.tolist(), bi.histogram(f, bins=2)["bin_upper"].values.tolist()
    ([[1, 2]], [0.5, 1.0])
    >>> two = bi.from_array(np.array([[[0.0, 10.0], [1.0, 30.0]]]))  # bands of their own ranges
    >>> h = bi.histogram(two, bins=2)
    >>> h["bin_upper"].dims, h["bin_upper"].values.tolist()
    (('band', 'bin'), [[0.5, 1.0], [20.0, 30.0]])
    >>> bi.histogram(two, bins=2, range="shared")["bin_upper"].values.tolist()
    [15.0, 30.0]
    """
    return run_passes(_histogram_passes(img, bins, range, exclude, dims))


def _histogram_passes(
    img: xr.DataArray,
    bins: Any,
    range: Any,
    exclude: Any,
    dims: Any,  # noqa: A002
) -> Passes[xr.DataArray]:
    s = _setup(img, bins, exclude, dims)
    rng = _check_range(range)
    given = rng if isinstance(rng, tuple) else None
    dt = s.arr.dtype
    kshape = _kept_shape(img, s)
    if isinstance(s.bins, np.ndarray):
        (counts,) = yield (_edges_counts(s, s.bins),)
        lower, upper = s.bins[:-1], s.bins[1:]
        given = None  # range is ignored
    elif dt.kind in "iu":
        counts, low = yield from _int_counts(img, s, given)
        values = np.arange(counts.shape[-1], dtype=dt) + dt.type(low)  # uint64 may pass int64
        lower, upper = values - 0.5, values + 0.5
    elif given is not None:
        edges = _checked_edges(img, s, None, *given)
        (counts,) = yield (_uniform_counts(s, None, s.bins, fixed=given),)
        lower, upper = edges[:-1], edges[1:]
    else:
        mins, maxs = yield from _float_ranges(img, s)  # img's dtype, as numpy's a.min()
        shared = rng == "shared" or math.prod(kshape) == 1
        if shared:
            mins, maxs = np.full_like(mins, mins.min()), np.full_like(maxs, maxs.max())
        ranges = np.stack([mins, maxs], axis=-1).reshape((*kshape, 2))
        edges = np.stack(
            [_checked_edges(img, s, i, *ranges[i]) for i in np.ndindex(kshape)]
        ).reshape((*kshape, s.bins + 1))
        (counts,) = yield (_uniform_counts(s, ranges, s.bins),)
        if shared:
            edges = edges[(0,) * len(kshape)]
        lower, upper = edges[..., :-1], edges[..., 1:]
    if isinstance(s.bins, np.ndarray):
        _warn_empty(img, s, counts, "inside bins")
    elif given is not None:
        _warn_empty(img, s, counts, f"inside range={rng!r}")
    else:
        _check_counts(img, s, counts, "after exclusion")
    coords: dict[Hashable, Any] = {
        name: c for name, c in img.coords.items() if set(c.dims) <= set(s.kept_dims)
    }
    bin_dims = ("bin",) if lower.ndim == 1 else (*s.kept_dims, "bin")
    if dt.kind in "iu" and not isinstance(s.bins, np.ndarray):
        centres: np.ndarray = values
    else:
        centres = ((lower + upper) / 2.0).astype(np.float64)  # in the edges' dtype, as skimage
    if lower.ndim == 1:
        coords["bin"] = ("bin", centres)
    coords["bin_centre"] = (bin_dims, centres)
    coords["bin_lower"] = (bin_dims, np.asarray(lower, dtype=np.float64))
    coords["bin_upper"] = (bin_dims, np.asarray(upper, dtype=np.float64))
    return xr.DataArray(
        counts,
        dims=(*s.kept_dims, "bin"),
        coords=coords,
        name="histogram",
        attrs={
            "bigimg_exclude": list(s.exclude_given),
            "bigimg_dims": [str(d) for d in img.dims if d not in s.kept_dims],
        },
    )


def equalize_hist(
    img: xr.DataArray,
    *,
    bins: int | Sequence[float] = 256,
    exclude: float | Sequence[float] = (),
    out_range: tuple[float, float] = (0.0, 1.0),
    dims: str | Sequence[Hashable] | None = None,
    dtype: Literal["uint8", "uint16"] | None = None,
    nodata: float | None = None,
) -> xr.DataArray:
    """Histogram equalization with a global CDF; NaN and excluded values kept (computes the histogram).

    Building the result computes the histogram of the valid pixels (one pass
    over the data for 8/16-bit integers, two otherwise); the result itself is
    lazy: every chunk is mapped through the normalized cumulative counts,
    with a lookup table for integer images and linear interpolation between
    bin centres for floating images.

    Parameters
    ----------
    img : xarray.DataArray
        Image (any dims), integer or floating dtype.
    bins : int or sequence of float, default 256
        Number of bins for floating images (ignored for integer images, where
        every integer value is its own bin, as in scikit-image), or explicit
        bin edges.
    exclude : number or sequence of numbers, default ()
        Values left out of the histogram and left unchanged in the output,
        e.g. ``[0, 255]`` for a NoData border. NaN is always left out and kept.
    out_range : (float, float), default (0.0, 1.0)
        The equalized values are ``out_min + (out_max - out_min) * cdf``.
    dims : str or sequence of str, optional
        Dims the CDF is computed over; one CDF per index of the other dims.
        Default: every dim but ``band`` (one CDF per band).
    dtype : {None, "uint8", "uint16"}, default None
        ``None``: a float result. ``"uint8"``/``"uint16"``: the float result
        (with the default ``out_range``) scaled to the integer type's full
        range, exactly as ``skimage.util.img_as_ubyte`` / ``img_as_uint``
        would scale it (``rint(v * max)``), written directly in that type:
        a quarter (a half) of the float32 bytes, what display wants.
    nodata : int, optional
        With ``dtype``: the value NaN pixels get. Required when ``img`` is
        floating (NaN can occur); checked before anything is computed.

    Returns
    -------
    xarray.DataArray
        Lazy, same dims, coords, attrs and chunks as ``img``; float32
        (float64 for float64 input), or ``dtype``.

    Raises
    ------
    TypeError, ValueError
        As :func:`histogram`; also for a bad ``out_range``, and when any
        band (index of the kept dims) has no valid pixel after exclusion;
        an unknown ``dtype``; with ``dtype``: a float ``img`` and no
        ``nodata``, a ``nodata`` or an ``exclude`` value the type cannot
        hold, or an ``out_range`` other than ``(0.0, 1.0)``.

    Notes
    -----
    On every valid pixel, each band equals
    ``skimage.exposure.equalize_hist(band, nbins=bins, mask=valid)`` rescaled
    to ``out_range``, where ``valid`` is "not NaN and not excluded": the range
    of the bins is each band's own min/max of valid pixels.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> img = bi.from_array(np.array([[0, 10, 20], [30, 40, 255]], dtype="uint8"), chunks=2)
    >>> out = bi.equalize_hist(img, exclude=[0, 255])
    >>> out.dtype, out.values[..., 0].tolist()
    (dtype('float32'), [[0.0, 0.25, 0.5], [0.75, 1.0, 255.0]])
    >>> f = bi.from_array(np.array([[0.5, np.nan, 2.0], [3.0, 4.0, 8.0]], dtype="float32"))
    >>> bi.equalize_hist(f, dtype="uint8", nodata=0).values[..., 0].tolist()
    [[51, 0, 87], [144, 202, 255]]
    """
    return run_passes(
        equalize_hist_passes(
            img,
            bins=bins,
            exclude=exclude,
            out_range=out_range,
            dims=dims,
            dtype=dtype,
            nodata=nodata,
        )  # fmt: skip
    )


def equalize_hist_passes(
    img: xr.DataArray,
    *,
    bins: int | Sequence[float],
    exclude: float | Sequence[float],
    out_range: tuple[float, float],
    dims: str | Sequence[Hashable] | None,
    dtype: Literal["uint8", "uint16"] | None = None,
    nodata: float | None = None,
) -> Passes[xr.DataArray]:
    """:func:`equalize_hist` as :data:`~bigimg.compute.Passes`: one statistics pass at a time.

    Yields the lazy range (floats and wide integers) and then the lazy
    counts, each as a one-tuple, and returns the lazy equalized image. The
    arguments are checked before the first yield. A pipeline uses this to
    compute the first pass together with other work on the same blocks;
    :func:`equalize_hist` runs it with :func:`~bigimg.compute.run_passes`.
    """
    s = _setup(img, bins, exclude, dims)
    lo, hi = _check_out_range(out_range)
    dt = s.arr.dtype
    float_dt = float_dtype(dt)
    out_dt, fill = _check_out_dtype(img, s, dtype, nodata, (lo, hi))
    kshape = _kept_shape(img, s)

    def scaled_cdf(counts: np.ndarray, what: str) -> np.ndarray:
        _check_counts(img, s, counts, what)
        cdf = np.cumsum(counts, axis=-1, dtype=np.float64)
        return lo + (hi - lo) * (cdf / cdf[..., -1:])

    def table(counts: np.ndarray, low: int) -> np.ndarray:
        """The lookup table for integers ``low, low + 1, ...``: excluded values map to themselves."""
        lut = _to_out_dtype(scaled_cdf(counts, "after exclusion").astype(float_dt), out_dt)
        for v in s.exclude:
            if 0 <= int(v) - low < lut.shape[-1]:
                lut[..., int(v) - low] = v
        return lut

    if isinstance(s.bins, np.ndarray):
        (counts,) = yield (_edges_counts(s, s.bins),)
        xp = np.broadcast_to((s.bins[:-1] + s.bins[1:]) / 2.0, counts.shape)
        fp = scaled_cdf(counts, "inside bins")
        data = _blockwise(
            _interp_kernel, s.arr, s.kept, [np.ascontiguousarray(xp), fp],
            dtype=out_dt, exclude=s.exclude, uniform=False, out_dtype=out_dt, nodata=fill,
        )  # fmt: skip
    elif _small_int(dt):
        info = np.iinfo(dt)
        (counts,) = yield (_counts(s, _count_dtype_kernel, 1 << (8 * dt.itemsize)),)
        for v in s.exclude:
            counts[..., int(v) - info.min] = 0
        data = _blockwise(_lut_kernel, s.arr, s.kept, [table(counts, int(info.min))], dtype=out_dt)
    elif dt.kind in "iu":
        counts, low = yield from _int_counts(img, s, None)
        data = _blockwise(
            _lut_kernel, s.arr, s.kept, [table(counts, low)], dtype=out_dt, low=low,
            exclude=s.exclude,
        )  # fmt: skip
    else:
        mins, maxs = yield from _float_ranges(img, s)
        ranges = np.stack([mins, maxs], axis=-1).reshape((*kshape, 2))
        xp = np.empty((*kshape, s.bins), dtype=np.float64)
        for idx in np.ndindex(*kshape):
            edges = _checked_edges(img, s, idx, *ranges[idx])
            xp[idx] = (edges[:-1] + edges[1:]) / 2.0  # in the edges' dtype, as skimage
        (counts,) = yield (_uniform_counts(s, ranges, s.bins),)
        data = _blockwise(
            _interp_kernel, s.arr, s.kept, [xp, scaled_cdf(counts, "after exclusion")],
            dtype=out_dt, exclude=s.exclude, uniform=True, out_dtype=out_dt, nodata=fill,
        )  # fmt: skip
    return like(img, data)


OUT_DTYPES = ("uint8", "uint16")


def _check_out_dtype(
    img: xr.DataArray, s: _Setup, dtype: Any, nodata: Any, out_range: tuple[float, float]
) -> tuple[np.dtype, Any]:
    """``equalize_hist``'s output dtype and the value NaN becomes, checked before any compute."""
    if dtype is None:
        if nodata is not None:
            raise ValueError(
                f"nodata={nodata!r} is only used with dtype='uint8' or 'uint16' (a float result "
                "keeps NaN); pass dtype= too, or leave nodata out"
            )
        return float_dtype(s.arr.dtype), 0
    try:
        out_dt = np.dtype(dtype)
    except TypeError:
        out_dt = None
    if out_dt is None or out_dt.name not in OUT_DTYPES:
        raise ValueError(f"dtype must be one of {{None, 'uint8', 'uint16'}}, got {dtype!r}")
    if out_range != (0.0, 1.0):
        raise ValueError(
            f"out_range must be (0.0, 1.0) with dtype={out_dt.name!r} (the result spans the "
            f"type's full range), got {out_range!r}"
        )
    imax = int(np.iinfo(out_dt).max)

    def fits(v: Any) -> bool:
        return (
            isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v) in range(imax + 1)
        )

    if nodata is None and s.arr.dtype.kind == "f":
        raise ValueError(
            f"img is {s.arr.dtype}, so NaN pixels can occur, and dtype={out_dt.name!r} has no NaN: "
            f"pass nodata= (an integer in 0..{imax}) for them"
        )
    if nodata is not None and not fits(nodata):
        raise ValueError(
            f"nodata must be an integer in 0..{imax} for dtype={out_dt.name!r}, got {nodata!r}"
        )
    bad = [v for v in s.exclude_given if not fits(v)]
    if bad:
        raise ValueError(
            f"exclude values keep their value, and {bad!r} cannot be held by dtype={out_dt.name!r} "
            f"(integers 0..{imax}); leave dtype out or exclude other values"
        )
    return out_dt, 0 if nodata is None else int(nodata)


def _to_out_dtype(values: np.ndarray, out_dt: np.dtype) -> np.ndarray:
    """Float values in [0, 1] as ``skimage.util.img_as_ubyte``/``img_as_uint`` make them (a small table)."""
    if out_dt.kind == "f":
        return values
    imax = np.iinfo(out_dt).max
    scaled = np.multiply(values, imax, dtype=values.dtype)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, imax, out=scaled)
    return scaled.astype(out_dt)


def _check_out_range(out_range: Any) -> tuple[float, float]:
    if (
        isinstance(out_range, (str, bytes))
        or not isinstance(out_range, (Sequence, np.ndarray))
        or len(out_range) != 2
        or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in out_range)
    ):
        raise TypeError(f"out_range must be a pair of numbers (min, max), got {out_range!r}")
    try:
        lo, hi = float(out_range[0]), float(out_range[1])
    except OverflowError:  # a Python int beyond any float
        lo, hi = math.nan, math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo)) or lo >= hi:
        raise ValueError(
            f"out_range must be finite with min < max and a finite max - min, got {out_range!r}"
        )
    return lo, hi


def plot_histogram(
    hist: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> Path | str:
    """Draw a histogram from :func:`histogram` and its CDF to a PNG.

    One step curve of counts per histogram (per band; at most 12 are drawn)
    over its own bins, on the left axis; the normalized cumulative counts on
    the right axis. Uses matplotlib's Agg canvas directly, so no GUI backend
    or global pyplot state is touched. The PNG is written under a temporary
    name and renamed to ``path`` once complete; at a URL (``s3://…``,
    ``memory://…``) the finished bytes are sent in one put.

    Parameters
    ----------
    hist : xarray.DataArray
        Counts with a ``bin`` dim (as returned by :func:`histogram`); the
        edges are read from its ``bin_lower``/``bin_upper`` coords (shared or
        per histogram), else from ``bin``.
    path : path-like or str
        The PNG to write (ending in ``.png``), a local path whose folder
        exists, or a URL.
    title : str, optional
        Figure title.
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
    TypeError
        ``hist`` is not a DataArray with a ``bin`` dim; ``overwrite`` not a bool.
    ValueError
        ``hist`` has no bin, or ``path`` does not end in ``.png``.
    FileExistsError
        ``path`` exists and ``overwrite`` is false (the file is left untouched).
    FileNotFoundError, IsADirectoryError
        The folder of ``path`` does not exist, or ``path`` is a folder.

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os
    >>> h = bi.histogram(bi.from_array(np.arange(100.0).reshape(10, 10)), bins=10)
    >>> bi.plot_histogram(h, os.path.join(tempfile.mkdtemp(), "h.png")).suffix
    '.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(hist, xr.DataArray) or "bin" not in hist.dims:
        raise TypeError(
            f"hist must be a DataArray with a 'bin' dim (from bi.histogram), got {type(hist).__name__}"
        )
    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be a bool, got {overwrite!r}")
    n = hist.sizes["bin"]
    if n == 0:
        raise ValueError("hist must have at least one bin, got an empty 'bin' dim")
    where = check_new_object(  # before any drawing
        path, overwrite=overwrite, what="path", storage_options=storage_options
    )
    check_png_name(path, what="path")
    other = [d for d in hist.dims if d != "bin"]
    flat = hist.transpose(*other, "bin")
    rows = flat.values.reshape(-1, n)
    names = [", ".join(f"{d}={flat[d].values[i]}" if d in flat.coords else f"{d}={i}" for d, i in zip(other, idx, strict=True))
             for idx in np.ndindex(*(flat.sizes[d] for d in other))]  # fmt: skip

    def per_row(name: str) -> np.ndarray:
        for key in (name, "bin"):
            if key in hist.coords:
                return hist[key].broadcast_like(flat).transpose(*other, "bin").values.reshape(-1, n)
        return np.broadcast_to(np.arange(n, dtype=np.float64), rows.shape)

    lower, upper = per_row("bin_lower"), per_row("bin_upper")
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax2 = ax.twinx()
    colors = (
        ["tab:red", "tab:green", "tab:blue"]
        if len(rows) == 3
        else [f"C{i % 10}" for i in np.arange(len(rows))]
    )
    for i, (row, name) in enumerate(zip(rows[:12], names[:12], strict=False)):
        edges = np.append(lower[i], upper[i, -1])
        ax.stairs(row, edges, color=colors[i], alpha=0.8, label=name or "counts")
        total = row.sum()
        if total > 0:
            ax2.plot(upper[i], np.cumsum(row) / total, color=colors[i], linestyle="--", linewidth=1)
    ax.set_xlabel("value")
    ax.set_ylabel("count")
    ax2.set_ylabel("CDF (dashed)")
    ax2.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize="small")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with new_object(where, overwrite=overwrite, what="path", storage_options=storage_options) as fh:
        fig.savefig(fh, format="png")
    return where
