"""CLAHE kernels: one block (or one table of region histograms) in, numpy out.

The arithmetic is scikit-image's ``equalize_adapthist`` (0.26) step by step,
so the results agree bit for bit before the final rescale:

1. every valid value ``v`` of a band becomes a grey level
   ``q = rint((w - w_lo) / (w_hi - w_lo) * 16383)`` (``2**14`` levels), where
   ``w`` is ``v`` itself (integers; floats outside [0, 1]) or, for floats in
   [0, 1], skimage's ``img_as_uint``: ``clip(rint(v * 65535), 0, 65535)``
   computed in the image's float type; ``w_lo, w_hi`` are the band's global
   (not the block's) extremes of ``w``. The bin is ``q // bin_size`` with
   ``bin_size = 1 + 16384 // nbins``.
2. :func:`region_counts`: the histogram of each contextual region, over the
   valid pixels of a block; the last region along an axis whose length is
   not a multiple of the kernel size also counts the reflected pixels
   skimage's ``np.pad(mode="reflect")`` puts there.
3. :func:`region_maps`: skimage's ``clip_histogram`` (its excess
   redistribution, loop included) and ``map_histogram`` per region, with the
   region's count of valid pixels in place of the kernel's area.
4. :func:`mapped`: each pixel's level through the four neighbouring regions'
   maps, bilinear weights ``t / k`` in float64, the four products summed in
   float32 in skimage's order and truncated to an integer ``r``; then either
   the extremes of ``r`` (the statistic of the final rescale) or
   ``(r - r_min) / (r_max - r_min)``.

numba compiles these on first use (cached on disk); ``import bigimg`` does not
import this module.
"""

from __future__ import annotations

import numba
import numpy as np

NR_OF_GRAY = 2**14
"""Grey levels of skimage's CLAHE (``NR_OF_GRAY``)."""

DIRECT, UNIT32, UNIT64, RAW = 0, 1, 2, 3
"""How a value becomes ``w`` (see the module docstring): itself, or ``img_as_uint`` in
float32/64; ``RAW``: no binning, the bin is ``v - w_lo`` (8-bit integers counted value by
value before their range is known)."""

__all__ = [
    "DIRECT",
    "NR_OF_GRAY",
    "RAW",
    "UNIT32",
    "UNIT64",
    "bin_of",
    "bin_size",
    "clip_histogram",
    "identity_map",
    "mapped",
    "region_counts",
    "region_maps",
    "touched",
]


def bin_size(nbins: int) -> int:
    """Grey levels per bin, as skimage: ``1 + 16384 // nbins``."""
    return 1 + NR_OF_GRAY // nbins


@numba.njit(cache=True, nogil=True)
def _bin(v, mode, w_lo, w_hi, size):
    if mode == RAW:
        return np.int64(v) - np.int64(w_lo)
    if mode == UNIT32:
        u = np.rint(np.float32(v) * np.float32(65535.0))
        w = np.float64(min(max(u, np.float32(0.0)), np.float32(65535.0)))
    elif mode == UNIT64:
        w = min(max(np.rint(np.float64(v) * 65535.0), 0.0), 65535.0)
    else:
        w = np.float64(v)
    if w_hi > w_lo:
        q = np.rint((w - w_lo) / (w_hi - w_lo) * 16383.0 + 0.0)
    else:
        q = 0.0
    return np.int64(q) // size


@numba.njit(cache=True, nogil=True)
def _excluded(v, exclude):
    if v != v:  # NaN
        return True
    for e in exclude:
        if v == e:
            return True
    return False


@numba.njit(cache=True, nogil=True)
def _extra(p, n_regions, k, size):
    """The last region when ``p`` is also one of its reflected pixels, else -1."""
    d = n_regions * k - size
    if d > 0 and size - 1 - d <= p <= size - 2:
        return n_regions - 1
    return -1


def touched(first: int, last: int, n_regions: int, k: int, size: int) -> tuple[int, int]:
    """The regions pixels ``first .. last`` of an axis count in (first, last), reflections included."""
    lo, hi = first // k, last // k
    d = n_regions * k - size
    if d > 0 and first <= size - 2 and last >= size - 1 - d:
        hi = n_regions - 1
    return lo, hi


@numba.njit(cache=True, nogil=True)
def region_counts(block, modes, w_lo, w_hi, exclude, ys, xs, kernel, sizes, first, out):
    """Add the region histograms of one block ``(K, h, w)`` to ``out`` ``(K, n_y, n_x, nbins)``.

    ``ys``, ``xs``: the block's global row and column indices; ``kernel``,
    ``sizes``: the kernel size and the image size along y and x; ``first``:
    the region at ``out[:, 0, 0]`` along y and x (``out`` must cover every
    region the block counts in, see :func:`touched`). ``modes``, ``w_lo``,
    ``w_hi``: per band (see the module docstring). NaN and ``exclude``
    values are not counted.
    """
    ky, kx = kernel[0], kernel[1]
    ny, nx = -(-sizes[0] // ky), -(-sizes[1] // kx)
    lo_y, lo_x = first[0], first[1]
    size = 1 + NR_OF_GRAY // out.shape[3]
    for k in range(block.shape[0]):
        for i in range(block.shape[1]):
            ra = ys[i] // ky - lo_y
            rb = _extra(ys[i], ny, ky, sizes[0])
            if rb >= 0:
                rb -= lo_y
            for j in range(block.shape[2]):
                v = block[k, i, j]
                if _excluded(v, exclude):
                    continue
                b = _bin(v, modes[k], w_lo[k], w_hi[k], size)
                ca = xs[j] // kx - lo_x
                cb = _extra(xs[j], nx, kx, sizes[1])
                out[k, ra, ca, b] += 1
                if rb >= 0:
                    out[k, rb, ca, b] += 1
                if cb >= 0:
                    cb -= lo_x
                    out[k, ra, cb, b] += 1
                    if rb >= 0:
                        out[k, rb, cb, b] += 1
    return out


@numba.njit(cache=True, nogil=True)
def clip_histogram(hist, clip_limit):
    """skimage's ``clip_histogram`` in place on a 1-D int64 histogram (same steps, same result)."""
    n = hist.size
    n_excess = 0
    for i in range(n):
        if hist[i] > clip_limit:
            n_excess += hist[i] - clip_limit
            hist[i] = clip_limit
    bin_incr = n_excess // n
    upper = clip_limit - bin_incr
    for i in range(n):
        if hist[i] < upper:
            n_excess -= bin_incr
            hist[i] += bin_incr
    for i in range(n):
        if upper <= hist[i] < clip_limit:
            n_excess += hist[i] - clip_limit
            hist[i] = clip_limit
    while n_excess > 0:
        prev = n_excess
        for index in range(n):
            under = 0
            for i in range(n):
                under += hist[i] < clip_limit
            step = max(1, under // n_excess)
            added = 0
            for i in range(index, n, step):
                if hist[i] < clip_limit:
                    hist[i] += 1
                    added += 1
            n_excess -= added
            if n_excess <= 0:
                break
        if prev == n_excess:
            break
    return hist


def bin_of(values: np.ndarray, w_lo: float, w_hi: float, nbins: int) -> np.ndarray:
    """The bins of integer ``values`` of a band whose range is ``w_lo .. w_hi`` (as the kernels)."""
    size = bin_size(nbins)
    return np.array([_bin(v, DIRECT, w_lo, w_hi, size) for v in values.tolist()], dtype=np.int64)


def identity_map(nbins: int) -> np.ndarray:
    """The map of a region with no valid pixel: the levels spread evenly over the global range.

    ``map_histogram`` of a histogram counting each bin's number of grey
    levels (``bin_size``, fewer in the last occupied bin, 0 above), unclipped:
    the identity up to the binning.
    """
    size = bin_size(nbins)
    levels = np.clip(NR_OF_GRAY - np.arange(nbins) * size, 0, size)
    out = np.cumsum(levels).astype(np.float64) * ((NR_OF_GRAY - 1) / NR_OF_GRAY)
    return np.minimum(out, NR_OF_GRAY - 1).astype(np.uint16)


@numba.njit(cache=True, nogil=True)
def _region_maps(counts, clip_limit, identity):
    m, nbins = counts.shape
    out = np.empty((m, nbins), dtype=np.uint16)
    hist = np.empty(nbins, dtype=np.int64)
    for r in range(m):
        n = 0
        for i in range(nbins):
            hist[i] = counts[r, i]
            n += hist[i]
        if n == 0:
            out[r] = identity
            continue
        if clip_limit > 0.0:
            clim = np.int64(max(clip_limit * n, 1.0))
        else:
            clim = n
        clip_histogram(hist, clim)
        scale = (NR_OF_GRAY - 1) / n
        cum = 0
        for i in range(nbins):
            cum += hist[i]
            out[r, i] = np.int64(min(np.float64(cum) * scale, NR_OF_GRAY - 1.0))
    return out


def region_maps(counts: np.ndarray, clip_limit: float) -> np.ndarray:
    """Grey-level maps ``(..., nbins)`` uint16 from region histograms ``(..., nbins)``.

    Per region: skimage's ``clip_histogram`` with the clip limit
    ``max(int(clip_limit * n), 1)`` (``n``: the region's count; no clipping
    for ``clip_limit == 0``), then ``map_histogram(hist, 0, 16383, n)``. A
    region with no count takes :func:`identity_map`.
    """
    nbins = counts.shape[-1]
    flat = np.ascontiguousarray(counts.reshape(-1, nbins), dtype=np.int64)
    out = _region_maps(flat, float(clip_limit), identity_map(nbins))
    return out.reshape(counts.shape)


@numba.njit(cache=True, nogil=True)
def _axis_weights(coords, k, n):
    """Per pixel along an axis: skimage's two neighbouring regions and the weight ``t / k``."""
    r0 = np.empty(coords.size, dtype=np.int64)
    r1 = np.empty(coords.size, dtype=np.int64)
    c = np.empty(coords.size, dtype=np.float64)
    for i in range(coords.size):
        j, t = divmod(coords[i] + k // 2, k)
        r0[i] = min(max(j - 1, 0), n - 1)
        r1[i] = min(j, n - 1)
        c[i] = t / k
    return r0, r1, c


@numba.njit(cache=True, nogil=True)
def mapped(block, maps, modes, w_lo, w_hi, exclude, ys, xs, kernel, r_lo, r_hi, out, extremes):
    """Map one block ``(K, h, w)`` through the region maps ``(K, n_y, n_x, nbins)``.

    Each valid pixel's level is skimage's: the four maps at its bin, weighted
    by ``(1 - cx)(1 - cy)``, ``cx (1 - cy)``, ``(1 - cx) cy``, ``cx cy`` in
    float64, each product cast to float32 and summed in float32 in that
    order, truncated to an integer ``r``. With ``extremes`` of shape
    ``(K, 2)``: only record the min and max of ``r`` over the valid pixels
    (``out`` is not touched). Otherwise write ``(r - r_lo) / (r_hi - r_lo)``
    (skimage's final ``rescale_intensity``; ``clip(r, 0, 1)`` when
    ``r_lo == r_hi``) into ``out``, and NaN and ``exclude`` values unchanged.
    """
    nbins = maps.shape[3]
    size = 1 + NR_OF_GRAY // nbins
    only = extremes.shape[0] > 0
    ry0, ry1, cy = _axis_weights(ys, kernel[0], maps.shape[1])
    rx0, rx1, cx = _axis_weights(xs, kernel[1], maps.shape[2])
    rescaled = np.empty(NR_OF_GRAY, dtype=np.float64)  # r -> output: r is in [0, 16383]
    for k in range(block.shape[0]):
        lo, hi = r_lo[k], r_hi[k]
        for r in range(NR_OF_GRAY):
            if hi != lo:
                rescaled[r] = (np.float64(r) - lo) / (hi - lo)
            else:
                rescaled[r] = min(max(np.float64(r), 0.0), 1.0)
        mode, wl, wh = modes[k], w_lo[k], w_hi[k]
        for i in range(block.shape[1]):
            top0 = maps[k, ry0[i]]
            top1 = maps[k, ry1[i]]
            wy1 = cy[i]
            wy0 = 1.0 - wy1
            for j in range(block.shape[2]):
                v = block[k, i, j]
                if _excluded(v, exclude):
                    if not only:
                        out[k, i, j] = v
                    continue
                b = _bin(v, mode, wl, wh, size)
                wx1 = cx[j]
                wx0 = 1.0 - wx1
                a0, a1 = rx0[j], rx1[j]
                s = np.float32(0.0)
                s += np.float32(np.float64(top0[a0, b]) * (wx0 * wy0))
                s += np.float32(np.float64(top0[a1, b]) * (wx1 * wy0))
                s += np.float32(np.float64(top1[a0, b]) * (wx0 * wy1))
                s += np.float32(np.float64(top1[a1, b]) * (wx1 * wy1))
                r = np.int64(s)
                if only:
                    extremes[k, 0] = min(extremes[k, 0], r)
                    extremes[k, 1] = max(extremes[k, 1], r)
                else:
                    out[k, i, j] = rescaled[min(r, NR_OF_GRAY - 1)]
    return out
