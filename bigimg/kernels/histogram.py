"""Histogram kernels: counting and applying a CDF, one pass over a block.

Every kernel takes a 3-D block ``(K, P, Q)`` (any strides): ``K`` separate
histograms (the kept index, e.g. the band), each over a ``(P, Q)`` plane.
:func:`as_planes` makes that view of a block.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bigimg.kernels._jit import kernel


def as_planes(block: np.ndarray, kept: tuple[int, ...]) -> np.ndarray:
    """``block`` as ``(K, P, Q)``: the kept axes first (merged), the others merged in two.

    A view whenever the axes can be merged without copying (always for one
    kept axis and two others, e.g. ``(y, x, band)`` with ``kept=(2,)``),
    otherwise a copy.
    """
    rest = [a for a in range(block.ndim) if a not in kept]
    moved = block.transpose(*kept, *rest)
    k = int(np.prod([block.shape[a] for a in kept], dtype=np.int64))
    inner = [block.shape[a] for a in rest]
    q = inner[-1] if inner else 1
    p = int(np.prod(inner[:-1], dtype=np.int64)) if inner else 1
    return moved.reshape(k, p, q)


def _int_scalar(value: int, dtype: np.dtype) -> np.integer:
    """``value`` as uint64 for uint64 data, else int64: ``v - value`` then never overflows."""
    return np.uint64(value) if dtype == np.uint64 else np.int64(value)


def _excluded_array(exclude: tuple[Any, ...], dtype: np.dtype) -> np.ndarray:
    """``exclude`` in ``dtype`` (values it cannot hold are dropped: no element equals them)."""
    kept = [v for v in exclude if np.asarray(v).astype(dtype) == v]
    return np.array(kept, dtype=dtype)


# ---------------------------------------------------------------- counting by value
@kernel
def _count_values(planes, low, high, exclude, counts):
    # one table: measured faster here than four interleaved ones
    k_n, p_n, q_n = planes.shape
    n_ex = exclude.size
    for k in range(k_n):
        c = counts[k]
        for p in range(p_n):
            for q in range(q_n):
                v = planes[k, p, q]
                if v < low or v > high:
                    continue
                skip = False
                for e in range(n_ex):
                    if v == exclude[e]:
                        skip = True
                if not skip:
                    c[v - low] += 1


def count_values(planes: np.ndarray, low: int, n: int, exclude: tuple[Any, ...] = ()) -> np.ndarray:
    """Counts of each integer value ``low .. low + n - 1`` per plane (exact, one bin per value).

    Parameters
    ----------
    planes : numpy.ndarray
        Integer array ``(K, P, Q)``, any strides.
    low, n : int
        First value counted and number of values (bins).
    exclude : tuple, optional
        Values not counted.

    Returns
    -------
    numpy.ndarray
        int64 counts ``(K, n)``.

    Examples
    --------
    >>> a = np.array([[[0, 1, 1, 7]]], dtype="uint8")
    >>> count_values(a, 0, 3).tolist()
    [[1, 2, 0]]
    """
    counts = np.zeros((planes.shape[0], n), dtype=np.int64)
    if planes.size and n:
        _count_values(
            planes,
            _int_scalar(low, planes.dtype),
            _int_scalar(low + n - 1, planes.dtype),
            _excluded_array(exclude, planes.dtype),
            counts,
        )
    return counts


# ---------------------------------------------------------------- uniform bins
@kernel
def _count_uniform(planes, lo, hi, first, denom, nbins, edges, margin, exclude, counts):
    # numpy.histogram's uniform path, value by value: keep lo <= v <= hi (NaN
    # fails both), v in the edges' dtype (``lo + 0`` has it), index
    # ``t = (v - first) / denom * nbins`` in numpy's promotion of those
    # types, ``int(t)``, the last edge to the last bin, then one step down or
    # up where rounding put v on the wrong side of an edge. That check only
    # runs where t is within ``margin`` of an integer: elsewhere the rounding
    # of t and of the edges (``margin`` bounds both) cannot have moved v
    # across one. A row's t are computed first (a loop the compiler
    # vectorizes, with its divisions), then counted into four interleaved
    # tables (no wait on the previous increment of the same bin).
    k_n, p_n, q_n = planes.shape
    n = edges.size - 1
    n_ex = exclude.size
    zero = lo - lo
    tf = np.empty(q_n, dtype=np.float64)
    tables = np.zeros((4, n + 1), dtype=np.int64)
    for k in range(k_n):
        tables[:] = 0
        for p in range(p_n):
            row = planes[k, p]
            for q in range(q_n):
                v = row[q] + zero
                ok = (v >= lo) & (v <= hi)
                t = (v - first) / denom * nbins
                tf[q] = t if ok else -1.0  # left out: to bin n, dropped
            for e in range(n_ex):
                for q in range(q_n):
                    if row[q] == exclude[e]:
                        tf[q] = -1.0
            for q in range(q_n):
                t = tf[q]
                i = min(np.intp(max(t, 0.0)), n - 1)  # t = n: the last edge, in the last bin
                f = t - i
                if t < 0.0:
                    i = n
                elif f < margin or f > 1.0 - margin:  # rare: no branch to mispredict elsewhere
                    v = row[q] + zero
                    if v < edges[i]:
                        i -= 1
                    elif i != n - 1 and v >= edges[i + 1]:
                        i += 1
                tables[q & 3, i] += 1
        for b in range(n):
            counts[k, b] += tables[0, b] + tables[1, b] + tables[2, b] + tables[3, b]


def uniform_bins(dtype: np.dtype, n: int, first: Any, last: Any) -> tuple[Any, ...]:
    """The constants ``numpy.histogram`` uses for ``n`` uniform bins over ``(first, last)``.

    Returns ``(lo, hi, first, denom, nbins, edges, margin)`` for
    :func:`count_uniform`, each in the dtype numpy computes it in for data of
    ``dtype``: the bounds as numpy compares them, ``first`` and the edges in
    the edges' dtype (the promotion of the range and the data), ``denom =
    last - first`` and ``nbins`` in the dtype of the division; ``margin``
    bounds the rounding of the bin position, in bins. ``first``/``last`` are
    the range values exactly as given to numpy (Python or numpy scalars:
    their type matters). Raises ValueError as numpy does for a range it
    cannot cut.
    """
    if first == last:  # numpy widens an empty range
        first, last = first - 0.5, last + 0.5
    edges = np.histogram_bin_edges(np.empty(0, dtype=dtype), bins=n, range=(first, last))
    btype = edges.dtype
    lo = btype.type(np.result_type(np.empty(0, dtype), first).type(first))
    hi = btype.type(np.result_type(np.empty(0, dtype), last).type(last))
    denom = np.subtract(last, first, dtype=np.result_type(last, first))
    dtype_div = np.result_type(np.empty(0, btype), denom)
    # t = (v - first) / denom * n: 3 roundings of its dtype, relative, plus
    # the edges' (linspace) error of a few ulps of the largest edge, in bins
    # (and denom's own rounding, in the dtype of last - first)
    eps_d, eps_b = np.finfo(dtype_div).eps, np.finfo(btype).eps
    eps_r = np.finfo(denom.dtype).eps if denom.dtype.kind == "f" else eps_d
    with np.errstate(all="ignore"):
        reach = float(np.abs(edges.astype(np.float64)).max()) / float(denom) * n
        margin = 8.0 * ((eps_d + eps_r) * (n + 1) + eps_b * (reach + n + 1))
    if not np.isfinite(margin) or margin > 0.25:
        margin = 1.0  # always check
    return lo, hi, btype.type(first), dtype_div.type(denom), dtype_div.type(n), edges, margin


def count_uniform(
    planes: np.ndarray, bins: tuple[Any, ...], exclude: tuple[Any, ...] = ()
) -> np.ndarray:
    """Counts in uniform bins per plane, bit for bit as ``numpy.histogram(plane, n, range)``.

    Parameters
    ----------
    planes : numpy.ndarray
        Float array ``(K, P, Q)``, any strides.
    bins : tuple
        :func:`uniform_bins` of the data's dtype, the bin count and the range.
    exclude : tuple, optional
        Values not counted (NaN never is).

    Returns
    -------
    numpy.ndarray
        int64 counts ``(K, n)``.

    Examples
    --------
    >>> a = np.array([[[0.0, 0.5, 1.0, np.nan, 2.0]]], dtype="float32")
    >>> count_uniform(a, uniform_bins(a.dtype, 2, 0.0, 1.0)).tolist()
    [[1, 2]]
    """
    edges = bins[5]
    counts = np.zeros((planes.shape[0], edges.size - 1), dtype=np.int64)
    if planes.size:
        _count_uniform(planes, *bins, _excluded_array(exclude, planes.dtype), counts)
    return counts


# ---------------------------------------------------------------- applying a CDF
@kernel
def _lut_values(planes, low, high, lut, exclude, out):
    # out = lut[k, clip(v, low, high) - low]; excluded values keep their value
    # (branches, not min/max: measured faster, they are well predicted)
    k_n, p_n, q_n = planes.shape
    n = lut.shape[1]
    n_ex = exclude.size
    for k in range(k_n):
        row = lut[k]
        for p in range(p_n):
            for q in range(q_n):
                v = planes[k, p, q]
                if v <= low:
                    r = row[0]
                elif v >= high:
                    r = row[n - 1]
                else:
                    r = row[v - low]
                for e in range(n_ex):
                    if v == exclude[e]:
                        r = v
                out[k, p, q] = r


def apply_lut(
    planes: np.ndarray,
    low: int,
    lut: np.ndarray,
    exclude: tuple[Any, ...] = (),
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``lut[k, v - low]`` for each integer ``v`` of plane ``k`` (clipped to the table).

    Excluded values keep their value (cast to ``lut``'s dtype). Writes into
    ``out`` (``(K, P, Q)``, any strides) when given.

    Examples
    --------
    >>> a = np.array([[[1, 2, 9]]], dtype="uint8")
    >>> apply_lut(a, 1, np.array([[10, 20, 30]], dtype="uint8")).tolist()
    [[[10, 20, 30]]]
    """
    if out is None:
        out = np.empty(planes.shape, dtype=lut.dtype)
    if planes.size:
        first = _int_scalar(low, planes.dtype)
        last = _int_scalar(low + lut.shape[1] - 1, planes.dtype)
        _lut_values(planes, first, last, lut, _excluded_array(exclude, planes.dtype), out)
    return out


@kernel
def _interp(planes, xp, fp, slope, scale, search, exclude, single, imax, nodata, out):
    # np.interp(v, xp[k], fp[k]) in float64 (numpy's formula fp[j] + slope[j]
    # (v - xp[j])); the segment j comes from the mean spacing (search 0),
    # corrected by one step against the true xp (search 1), or by bisection
    # (search 2: any increasing xp). NaN stays NaN, excluded values keep
    # theirs (a second, rare pass). imax > 0: the float result (float32 if
    # ``single``) times imax, rounded and clipped to [0, imax] as skimage's
    # img_as_ubyte / img_as_uint do, NaN becoming ``nodata``. One row at a
    # time, without branches in the common path.
    k_n, p_n, q_n = planes.shape
    n = xp.shape[1]
    n_ex = exclude.size
    res = np.empty(q_n, dtype=np.float64)
    seg = np.empty(q_n, dtype=np.int32)
    for k in range(k_n):
        x, f, s, sc, how = xp[k], fp[k], slope[k], scale[k], search[k]
        x0, x1, f1 = x[0], x[n - 1], f[n - 1]
        top = max(n - 2.0, 0.0)
        for p in range(p_n):
            row = planes[k, p]
            if n == 1:
                for q in range(q_n):
                    v = np.float64(row[q])
                    res[q] = v if v != v else f1
            elif how == 2:
                for q in range(q_n):
                    v = np.float64(row[q])
                    a, b = 0, n - 1  # x[a] <= v < x[b], or v == x1
                    while b - a > 1:
                        m = (a + b) >> 1
                        if x[m] <= v:
                            a = m
                        else:
                            b = m
                    r = f[a] + s[a] * (max(v, x0) - x[a])
                    r = f1 if v >= x1 else r
                    res[q] = v if v != v else r
            else:
                # three loops: the segment from the mean spacing (SIMD), the
                # correction and the lookups (scalar), NaN and the last point (SIMD)
                for q in range(q_n):
                    v = np.float64(row[q])
                    c = min(max(v, x0), x1)
                    t = min(max((c - x0) * sc, 0.0), top)
                    seg[q] = np.int32(t) if t == t else np.int32(0)  # NaN: any segment
                    res[q] = c
                if how == 1:
                    for q in range(q_n):
                        c = res[q]
                        j = seg[q]
                        if c < x[j]:
                            j -= 1
                        if c >= x[j + 1] and j < n - 2:
                            j += 1
                        res[q] = f[j] + s[j] * (c - x[j])
                else:
                    for q in range(q_n):
                        c = res[q]
                        j = seg[q]
                        res[q] = f[j] + s[j] * (c - x[j])
                for q in range(q_n):
                    v = np.float64(row[q])
                    r = f1 if v >= x1 else res[q]
                    res[q] = v if v != v else r
            dst = out[k, p]
            if imax == 0:
                for q in range(q_n):
                    dst[q] = res[q]
            else:
                for q in range(q_n):
                    r = res[q]
                    y = np.float64(np.float32(r) * np.float32(imax)) if single else r * imax
                    y = min(max(np.rint(y), 0.0), imax)
                    dst[q] = nodata if r != r else y
            for e in range(n_ex):
                for q in range(q_n):
                    if row[q] == exclude[e]:
                        dst[q] = row[q]


def interp(
    planes: np.ndarray,
    xp: np.ndarray,
    fp: np.ndarray,
    exclude: tuple[Any, ...] = (),
    *,
    out: np.ndarray,
    uniform: bool = True,
    atol: float = 1e-8,
    nodata: float = 0,
) -> np.ndarray:
    """``np.interp(v, xp[k], fp[k])`` for each value of plane ``k``, written into ``out``.

    NaN stays NaN and excluded values keep their value. With a float ``out``
    the result is cast to it; with a ``uint8``/``uint16`` ``out`` the float
    result (float32 unless the data are float64) is scaled as
    ``skimage.util.img_as_ubyte`` / ``img_as_uint`` do (``rint(r * max)``,
    clipped) and NaN becomes ``nodata``.

    Parameters
    ----------
    planes : numpy.ndarray
        ``(K, P, Q)``, any real dtype and strides.
    xp, fp : numpy.ndarray
        ``(K, n)`` float64: increasing points and their values.
    exclude : tuple, optional
        Values that keep their value.
    out : numpy.ndarray
        ``(K, P, Q)`` result, any strides.
    uniform : bool, default True
        ``xp`` is nearly evenly spaced (bin centres): the segment comes from
        the mean spacing, in O(1), and is corrected against the true ``xp``
        (one step each way) when taking the neighbouring segment could be
        off by more than ``atol``. ``False``: bisection.

    Returns
    -------
    numpy.ndarray
        ``out``.

    Examples
    --------
    >>> a = np.array([[[0.0, 0.25, np.nan, 2.0]]])
    >>> xp, fp = np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]])
    >>> interp(a, xp, fp, out=np.empty(a.shape)).tolist()
    [[[0.0, 0.25, nan, 1.0]]]
    >>> interp(a, xp, fp, out=np.empty(a.shape, "uint8"), nodata=7).tolist()
    [[[0, 64, 7, 255]]]
    """
    xp = np.asarray(xp, dtype=np.float64)
    fp = np.asarray(fp, dtype=np.float64)
    k_n, n = xp.shape
    search = np.full(k_n, 2, dtype=np.int64)
    scale = np.zeros(k_n)
    slope = np.zeros_like(xp)
    if n >= 2:
        dx = np.diff(xp, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope[:, :-1] = np.diff(fp, axis=1) / dx
        for k in range(k_n if uniform else 0):
            x = xp[k]
            if not (dx[k] > 0).all():
                continue
            scale[k] = (n - 1) / (x[-1] - x[0])
            grid = x[0] + np.arange(n) / scale[k]
            off = np.abs(x - grid).max() + 4 * np.finfo(np.float64).eps * np.abs(x).max() * n
            bend = float(np.abs(np.diff(slope[k, :-1])).max()) if n > 2 else 0.0
            search[k] = 1 if bend * off > atol else 0
    if out.dtype.kind == "u":
        imax = float(np.iinfo(out.dtype).max)
    else:
        imax = 0.0
    single = planes.dtype != np.float64
    if planes.size:
        _interp(
            planes, xp, fp, slope, scale, search, _excluded_array(exclude, planes.dtype),
            single, imax, nodata, out,
        )  # fmt: skip
    return out
