"""Contrast-limited adaptive histogram equalization (CLAHE) of images of any size.

scikit-image's ``equalize_adapthist`` holds the image in memory; run block by
block it rescales each block by its own extremes and leaves tile seams. Here
every statistic is global and every chunk is mapped by the same rule, so the
result does not depend on the chunking (bit for bit):

1. the valid range of each band (:func:`bigimg.histogram.valid_range_passes`,
   the histogram's own first pass); 8-bit integers skip it: pass 2 counts
   every value per region, and the range and the bins are read off the counts;
2. the histogram of every contextual region: each chunk counts its pixels
   into the regions it overlaps (a region spans chunks, a chunk spans
   regions), the partial tables are summed by a tree reduction, and the
   finalize step clips each region's histogram and turns it into a grey-level
   map (``regions x nbins`` uint16 per band);
3. the extremes of the interpolated levels (skimage's last step rescales its
   result by them);
4. lazily, each chunk mapped through the maps of the four regions around
   each pixel, bilinearly, and rescaled.

The per-pixel arithmetic lives in :mod:`bigimg.kernels.adapthist` (numba),
imported by the tasks only, so ``import bigimg`` does not load numba.

Memory: a task holds its chunk, its partial table and (passes 3 and 4) the
maps of its bands. The count table grows as ``bands x regions x nbins x 8``
bytes (regions = ``ceil(Y / ky) * ceil(X / kx)``); the combine tree holds up to
a few such tables at its root, the maps are a quarter of it (uint16). A table
above :data:`MAX_TABLE_BYTES` is refused before any compute.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from bigimg.compute import Passes, Reduction, reduce_blocks, run_passes
from bigimg.histogram import cast_exclude, valid_range_passes
from bigimg.image import check_image, float_dtype, like

__all__ = ["MAX_TABLE_BYTES", "equalize_adapthist", "equalize_adapthist_passes"]

MAX_TABLE_BYTES = 2**30
"""Largest region-count table (``bands x regions x nbins x 8`` bytes) accepted: 1 GiB."""

_NR_OF_GRAY = 2**14  # skimage's grey levels; bigimg.kernels.adapthist.NR_OF_GRAY
_DIRECT, _UNIT32, _UNIT64, _RAW = 0, 1, 2, 3  # bigimg.kernels.adapthist's modes


# ---------------------------------------------------------------- task functions
def _kernels() -> Any:
    from bigimg.kernels import adapthist

    return adapthist


def _grid(offset: tuple[int, ...], shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(offset[1], offset[1] + shape[1], dtype=np.int64)
    xs = np.arange(offset[2], offset[2] + shape[2], dtype=np.int64)
    return ys, xs


def _counts_chunk(
    block: np.ndarray,
    *,
    offset: tuple[int, ...],
    levels: tuple[np.ndarray, np.ndarray, np.ndarray],
    exclude: np.ndarray,
    kernel: np.ndarray,
    sizes: np.ndarray,
    nbins: int,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The block's region counts as a box: (first band, first region y, first region x), table."""
    k = _kernels()
    modes, w_lo, w_hi = (a[offset[0] : offset[0] + block.shape[0]] for a in levels)
    ys, xs = _grid(offset, block.shape)
    ny, nx = -(-int(sizes[0]) // int(kernel[0])), -(-int(sizes[1]) // int(kernel[1]))
    y0, y1 = k.touched(int(ys[0]), int(ys[-1]), ny, int(kernel[0]), int(sizes[0]))
    x0, x1 = k.touched(int(xs[0]), int(xs[-1]), nx, int(kernel[1]), int(sizes[1]))
    out = np.zeros((block.shape[0], y1 - y0 + 1, x1 - x0 + 1, nbins), dtype=np.int64)
    first = np.array([y0, x0], dtype=np.int64)
    k.region_counts(block, modes, w_lo, w_hi, exclude, ys, xs, kernel, sizes, first, out)
    return (offset[0], y0, x0), out


def _merge_boxes(
    parts: list[tuple[tuple[int, int, int], np.ndarray]],
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Sum partial tables into one table over the union of their boxes."""
    lo = np.min([p[0] for p in parts], axis=0)
    hi = np.max([np.add(p[0], p[1].shape[:3]) for p in parts], axis=0)
    out = np.zeros((*(hi - lo), parts[0][1].shape[3]), dtype=np.int64)
    for start, table in parts:
        at = tuple(
            slice(s - o, s - o + n) for s, o, n in zip(start, lo, table.shape[:3], strict=True)
        )
        out[at] += table
    return (int(lo[0]), int(lo[1]), int(lo[2])), out


def _maps(
    box: tuple[tuple[int, int, int], np.ndarray], *, shape: tuple[int, ...], clip_limit: float
) -> np.ndarray:
    """The full count table from the root box, then every region's map (uint16)."""
    start, table = box
    counts = np.zeros(shape, dtype=np.int64)
    at = tuple(slice(s, s + n) for s, n in zip(start, table.shape[:3], strict=True))
    counts[at] = table
    maps: np.ndarray = _kernels().region_maps(counts, clip_limit)
    return maps


def _raw_maps(
    box: tuple[tuple[int, int, int], np.ndarray],
    *,
    shape: tuple[int, ...],
    clip_limit: float,
    nbins: int,
    low: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """8-bit integers: region counts of every value -> each band's range, its bins, the maps.

    Returns ``(maps, mins, maxs)``; a band with no valid value gets NaN extremes
    (and identity maps), for the caller to refuse.
    """
    k = _kernels()
    start, table = box
    raw = np.zeros(shape, dtype=np.int64)
    raw[tuple(slice(s, s + n) for s, n in zip(start, table.shape[:3], strict=True))] = table
    n_bands = shape[0]
    counts = np.zeros((*shape[:3], nbins), dtype=np.int64)
    mins, maxs = np.full(n_bands, np.nan), np.full(n_bands, np.nan)
    for b in range(n_bands):
        seen = np.flatnonzero(raw[b].sum(axis=(0, 1)))
        if seen.size == 0:
            continue
        lo, hi = int(seen[0]), int(seen[-1])
        mins[b], maxs[b] = lo + low, hi + low
        bins = k.bin_of(np.arange(lo, hi + 1) + low, mins[b], maxs[b], nbins)  # nondecreasing
        first = np.flatnonzero(np.diff(bins, prepend=-1))
        counts[b][..., bins[first]] = np.add.reduceat(raw[b][..., lo : hi + 1], first, axis=-1)
    return k.region_maps(counts, clip_limit), mins, maxs


def _extremes_chunk(
    block: np.ndarray,
    maps: np.ndarray,
    *,
    offset: tuple[int, ...],
    levels: tuple[np.ndarray, np.ndarray, np.ndarray],
    exclude: np.ndarray,
    kernel: np.ndarray,
    n_bands: int,
) -> np.ndarray:
    """``(n_bands, 2)``: min and max interpolated level of the block's valid pixels per band."""
    k = _kernels()
    modes, w_lo, w_hi = (a[offset[0] : offset[0] + block.shape[0]] for a in levels)
    ys, xs = _grid(offset, block.shape)
    info = np.iinfo(np.int64)
    ext = np.empty((block.shape[0], 2), dtype=np.int64)
    ext[:, 0], ext[:, 1] = info.max, info.min
    none = np.zeros(block.shape[0])
    k.mapped(block, maps, modes, w_lo, w_hi, exclude, ys, xs, kernel, none, none,
             np.empty((0, 0, 0)), ext)  # fmt: skip
    out = np.empty((n_bands, 2), dtype=np.int64)
    out[:, 0], out[:, 1] = info.max, info.min
    out[offset[0] : offset[0] + block.shape[0]] = ext
    return out


def _merge_extremes(parts: list[np.ndarray]) -> np.ndarray:
    return np.stack(
        [np.min([p[:, 0] for p in parts], axis=0), np.max([p[:, 1] for p in parts], axis=0)], axis=1
    )


def _map_block(
    block: np.ndarray,
    maps: np.ndarray,
    bands: np.ndarray,
    ys: np.ndarray,
    xs: np.ndarray,
    *,
    levels: tuple[np.ndarray, np.ndarray, np.ndarray],
    extremes: np.ndarray,
    exclude: np.ndarray,
    kernel: np.ndarray,
    out_dtype: np.dtype,
) -> np.ndarray:
    """The equalized block: each valid pixel's level interpolated, then rescaled."""
    modes, w_lo, w_hi = (a[bands] for a in levels)
    r_lo, r_hi = (extremes[bands, i].astype(np.float64) for i in (0, 1))
    out = np.empty(block.shape, dtype=out_dtype)
    _kernels().mapped(block, maps, modes, w_lo, w_hi, exclude, ys.astype(np.int64),
                      xs.astype(np.int64), kernel, r_lo, r_hi, out,
                      np.empty((0, 2), dtype=np.int64))  # fmt: skip
    return out


# ---------------------------------------------------------------- validation
def _check_dims(img: xr.DataArray, dims: Any) -> tuple[Hashable, Hashable]:
    if isinstance(dims, (str, bytes)) or not isinstance(dims, Sequence):
        raise TypeError(f"dims must be a pair of dim names such as ('y', 'x'), got {dims!r}")
    unknown = [d for d in dims if d not in img.dims]
    if unknown:
        raise ValueError(f"dims names unknown dim(s) {unknown!r}; img has dims {img.dims!r}")
    if len(dims) != 2 or dims[0] == dims[1]:
        raise ValueError(f"dims must name two distinct dims of img, got {dims!r}")
    return dims[0], dims[1]


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check_kernel_size(kernel_size: Any, sizes: dict[Hashable, int]) -> tuple[int, int]:
    """``(ky, kx)``: an int for both dims, a dict by dim (missing dims: 1/8), or None (1/8 each)."""
    default = {d: max(n // 8, 1) for d, n in sizes.items()}
    if kernel_size is None:
        given: dict[Hashable, Any] = {}
    elif _is_int(kernel_size):
        given = dict.fromkeys(sizes, kernel_size)
    elif isinstance(kernel_size, Mapping):
        unknown = [d for d in kernel_size if d not in sizes]
        if unknown:
            raise ValueError(f"kernel_size names dim(s) {unknown!r} not in dims={tuple(sizes)!r}")
        given = dict(kernel_size)
    else:
        raise TypeError(
            f"kernel_size must be None, an int or a dict of ints by dim, got {kernel_size!r}"
        )
    out = []
    for d, n in sizes.items():
        k = given.get(d, default[d])
        if not _is_int(k):
            raise TypeError(f"kernel_size[{d!r}] must be an int, got {k!r}")
        if not 1 <= k <= n:
            raise ValueError(
                f"kernel_size[{d!r}] must be between 1 and the image's {d!r} size {n}, got {k!r}"
            )
        out.append(int(k))
    return out[0], out[1]


def _check_clip_limit(clip_limit: Any) -> float:
    if not isinstance(clip_limit, numbers.Real) or isinstance(clip_limit, bool):
        raise TypeError(f"clip_limit must be a number in [0, 1], got {clip_limit!r}")
    value = float(clip_limit)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"clip_limit must be in [0, 1] (0: no clipping), got {clip_limit!r}")
    return value


def _check_nbins(nbins: Any) -> int:
    if not _is_int(nbins):
        raise TypeError(f"nbins must be an int, got {nbins!r}")
    if not 2 <= nbins <= _NR_OF_GRAY:
        raise ValueError(f"nbins must be between 2 and {_NR_OF_GRAY} (grey levels), got {nbins!r}")
    return int(nbins)


def _check_table(n_bands: int, regions: tuple[int, int], nbins: int) -> None:
    size = n_bands * regions[0] * regions[1] * nbins * 8
    if size > MAX_TABLE_BYTES:
        raise ValueError(
            f"equalize_adapthist would hold {n_bands} band(s) x {regions[0]} x {regions[1]} "
            f"regions x nbins={nbins} x 8 bytes = {size / 2**30:.2f} GiB of region counts, more "
            f"than the {MAX_TABLE_BYTES / 2**30:.0f} GiB it accepts; pass a larger kernel_size "
            "or fewer nbins"
        )


def _levels(
    dtype: np.dtype, mins: np.ndarray, maxs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per band: how values become skimage's ``w`` (mode), and ``w``'s global extremes."""
    n = mins.size
    modes = np.full(n, _DIRECT, dtype=np.int64)
    w_lo, w_hi = mins.astype(np.float64), maxs.astype(np.float64)
    if dtype in (np.float32, np.float64):
        unit = (mins >= 0) & (maxs <= 1)
        ct = dtype.type
        for i in np.flatnonzero(unit):
            modes[i] = _UNIT32 if dtype == np.float32 else _UNIT64
            w_lo[i], w_hi[i] = (
                float(np.clip(np.rint(ct(v) * ct(65535.0)), 0, 65535)) for v in (mins[i], maxs[i])
            )
    return modes, w_lo, w_hi


# ---------------------------------------------------------------- public API
def equalize_adapthist(
    img: xr.DataArray,
    *,
    kernel_size: int | Mapping[Hashable, int] | None = None,
    clip_limit: float = 0.01,
    nbins: int = 256,
    exclude: float | Sequence[float] = (),
    dims: Sequence[Hashable] = ("y", "x"),
) -> xr.DataArray:
    """Contrast-limited adaptive histogram equalization (CLAHE), out of core (computes statistics).

    Building the result computes three statistics passes over the data (the
    valid range, the region histograms, the extremes of the interpolated
    levels; two for 8-bit integers, whose range comes with the histograms);
    the result itself is lazy. Each band (each index of the dims not
    in ``dims``) is equalized on its own, as
    ``skimage.exposure.equalize_adapthist(band, kernel_size, clip_limit, nbins)``.

    Parameters
    ----------
    img : xarray.DataArray
        Image with the two ``dims`` (any others, e.g. ``band``, ``image``,
        are looped over), integer or floating dtype.
    kernel_size : int or dict of int by dim, optional
        Size of the contextual regions along each of ``dims`` (an int: the
        same for both). Default, and for a dim a dict leaves out: 1/8 of the
        image's size along it (at least 1), as skimage.
    clip_limit : float, default 0.01
        In [0, 1]: a region's histogram bins are clipped at
        ``max(int(clip_limit * n), 1)`` (``n``: its valid pixels) and the
        excess is redistributed as skimage does; 0 (or 1) is plain adaptive
        equalization.
    nbins : int, default 256
        Histogram bins per region, 2 to 16384 (over skimage's 2**14 grey levels).
    exclude : number or sequence of numbers, default ()
        Values never counted and left unchanged, as NaN is.
    dims : pair of str, default ("y", "x")
        The two dims the regions tile.

    Returns
    -------
    xarray.DataArray
        Lazy; same dims, coords, attrs and chunks as ``img``; valid pixels in
        [0, 1], NaN and excluded values unchanged; float32 (float64 for
        float64 input).

    Raises
    ------
    TypeError
        ``img`` is not a DataArray of an integer or floating dtype; an
        argument of the wrong type.
    ValueError
        Unknown ``dims``; ``kernel_size`` below 1 or above the image's size;
        ``clip_limit`` outside [0, 1]; ``nbins`` outside [2, 16384]; a region
        table above :data:`MAX_TABLE_BYTES` (all before any compute); a band
        with no valid pixel or non-finite values (after the first pass).

    Notes
    -----
    Bit for bit, before the final rescale, the arithmetic of
    ``skimage.exposure.equalize_adapthist`` (0.26): the values are rescaled
    to 2**14 grey levels by the band's global range (floats in [0, 1] first
    quantized to 16 bits as skimage's ``img_as_uint`` does), regions are
    tiled from the top-left corner, a last region that runs past the image
    counts the reflected pixels skimage's padding puts there, histograms are
    clipped and redistributed as skimage does, and the maps of the four
    neighbouring regions are interpolated bilinearly in skimage's float32
    order. The final rescale by the extremes of the result is the same
    formula in float64, then cast to the output dtype.

    Where skimage is undefined or differs:

    - NaN and ``exclude`` values are not counted in any region (a region's
      clip limit and normalization use its count of valid pixels) and keep
      their value. A region with no valid pixel takes the identity map of
      the global range (the map of a flat histogram), so its pixels'
      neighbours interpolate towards their own values.
    - Floats outside [0, 1] (which skimage refuses or clips) are rescaled
      from their global range directly; integers wider than 16 bits too
      (skimage first truncates them to 16 bits); float16 is read as float32.
    - A constant band maps every pixel to the level 0.

    Memory per task: one chunk, its partial count table, and the maps of its
    bands (``regions x nbins x 2`` bytes each). The whole count table, ``bands
    x regions x nbins x 8`` bytes, is combined on a worker and must be at most
    :data:`MAX_TABLE_BYTES` (1 GiB), 524,288 regions of 256 bins for one band: a
    100,000² band in 512² regions (38,416) needs 75 MiB; regions below 139 px
    are refused there. 8-bit integers count all 256 values per region first,
    so their table has at least 256 bins.

    References
    ----------
    .. [1] K. Zuiderveld, "Contrast Limited Adaptive Histogram Equalization",
       Graphics Gems IV, Academic Press, 1994, pp. 474-485.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> a = np.add.outer(np.arange(16), np.arange(16)).astype("uint8")
    >>> img = bi.from_array(a, chunks=5)
    >>> out = bi.equalize_adapthist(img, kernel_size=8)
    >>> out.dtype, out.dims, float(out.min()), float(out.max())
    (dtype('float32'), ('y', 'x', 'band'), 0.0, 1.0)
    """
    return run_passes(
        equalize_adapthist_passes(
            img,
            kernel_size=kernel_size,
            clip_limit=clip_limit,
            nbins=nbins,
            exclude=exclude,
            dims=dims,
        )  # fmt: skip
    )


def equalize_adapthist_passes(
    img: xr.DataArray,
    *,
    kernel_size: int | Mapping[Hashable, int] | None = None,
    clip_limit: float = 0.01,
    nbins: int = 256,
    exclude: float | Sequence[float] = (),
    dims: Sequence[Hashable] = ("y", "x"),
) -> Passes[xr.DataArray]:
    """:func:`equalize_adapthist` as :data:`~bigimg.compute.Passes` (three, or two, statistics passes).

    Every argument is checked before the first yield (the range pass).
    """
    check_image(img, "img", required=())
    if img.dtype.kind not in "iuf":
        raise TypeError(f"img must have an integer or floating dtype, got {img.dtype}")
    ydim, xdim = _check_dims(img, dims)
    ky, kx = _check_kernel_size(kernel_size, {ydim: img.sizes[ydim], xdim: img.sizes[xdim]})
    clip = _check_clip_limit(clip_limit)
    nb = _check_nbins(nbins)
    kept = tuple(d for d in img.dims if d not in (ydim, xdim))
    kshape = tuple(img.sizes[d] for d in kept)
    n_bands = math.prod(kshape)
    size_y, size_x = img.sizes[ydim], img.sizes[xdim]
    regions = (-(-size_y // ky), -(-size_x // kx))
    small_int = img.dtype.kind in "iu" and img.dtype.itemsize == 1
    _check_table(n_bands, regions, max(nb, 256) if small_int else nb)
    values = img if img.dtype != np.float16 else img.astype(np.float32)
    excl = np.array(cast_exclude(exclude, values.dtype), dtype=values.dtype)
    raw = values.transpose(*kept, ydim, xdim).data
    arr = raw if isinstance(raw, da.Array) else da.asarray(raw)
    arr = arr.reshape((n_bands, size_y, size_x)) if len(kept) != 1 else arr
    kernel = np.array([ky, kx], dtype=np.int64)
    sizes = np.array([size_y, size_x], dtype=np.int64)

    if small_int:  # one pass: every value counted per region, the range read off the counts
        low = int(np.iinfo(img.dtype).min)
        raw_levels = (np.full(n_bands, _RAW), np.full(n_bands, float(low)), np.zeros(n_bands))
        counts: Reduction[Any, Any] = Reduction(
            chunk=functools.partial(
                _counts_chunk, levels=raw_levels, exclude=excl, kernel=kernel, sizes=sizes,
                nbins=256,
            ),
            combine=_merge_boxes,
            finalize=functools.partial(
                _raw_maps, shape=(n_bands, *regions, 256), clip_limit=clip, nbins=nb, low=low
            ),
            with_offset=True,
        )  # fmt: skip
        ((maps, mins, maxs),) = yield (reduce_blocks(arr, counts, name="adapthist-counts"),)
        empty = np.flatnonzero(np.isnan(mins))
        if empty.size:
            where = dict(zip(kept, np.unravel_index(int(empty[0]), kshape), strict=True))
            raise ValueError(
                f"img has no valid pixels at {where or 'the whole image'} after exclusion "
                f"(exclude={list(np.atleast_1d(exclude))!r} is not counted)"
            )
        levels = _levels(values.dtype, mins, maxs)
    else:
        mins, maxs = yield from valid_range_passes(values, exclude=exclude, dims=(ydim, xdim))
        levels = _levels(values.dtype, np.ravel(mins), np.ravel(maxs))
        counts = Reduction(
            chunk=functools.partial(
                _counts_chunk, levels=levels, exclude=excl, kernel=kernel, sizes=sizes, nbins=nb
            ),
            combine=_merge_boxes,
            finalize=functools.partial(_maps, shape=(n_bands, *regions, nb), clip_limit=clip),
            with_offset=True,
        )
        (maps,) = yield (reduce_blocks(arr, counts, name="adapthist-counts"),)

    table = da.from_array(maps, chunks=(arr.chunks[0], (regions[0],), (regions[1],), (nb,)))
    extremes: Reduction[np.ndarray, np.ndarray] = Reduction(
        chunk=functools.partial(
            _extremes_chunk, levels=levels, exclude=excl, kernel=kernel, n_bands=n_bands
        ),
        combine=_merge_extremes,
        with_offset=True,
    )
    (ext,) = yield (reduce_blocks([arr, table], extremes, name="adapthist-extremes"),)

    out_dt = float_dtype(img.dtype)
    bands = da.arange(n_bands, chunks=arr.chunks[0])
    ys = da.arange(size_y, chunks=arr.chunks[1])
    xs = da.arange(size_x, chunks=arr.chunks[2])
    data = da.blockwise(
        _map_block, "kyx", arr, "kyx", table, "kabc", bands, "k", ys, "y", xs, "x",
        dtype=out_dt, meta=np.empty((0, 0, 0), dtype=out_dt), concatenate=True,
        levels=levels, extremes=ext, exclude=excl, kernel=kernel, out_dtype=out_dt,
    )  # fmt: skip
    data = data.reshape((*kshape, size_y, size_x)) if len(kept) != 1 else data
    out = xr.DataArray(data, dims=(*kept, ydim, xdim)).transpose(*img.dims)
    return like(img, out.data)
