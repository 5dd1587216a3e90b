"""Separable Gaussian (any symmetric kernel) correlation of a haloed block, NaN-aware.

The block is seen as ``(L, H, M)``: ``L`` independent planes (the axes
before ``y``), the ``y`` axis, and ``x`` merged with every axis after it
(``M = W * C``, C-ordered), so the ``x`` taps are ``C`` apart in a row. The
block carries a halo (the kernel radius) on both filtered axes; the result
is the *valid* part, ``(L, H - 2 ry, M - 2 rx C)``.

Each output row is one pass: the ``y`` correlation of the input rows into a
row buffer (it stays in the CPU cache), then the ``x`` correlation of that
buffer into the output; with ``omit`` the value and weight sums run
together. Every output value goes through the same sequence of IEEE
operations wherever it sits in the block, so the result is bit-identical
for any chunking.
"""

from __future__ import annotations

import numpy as np

from bigimg.kernels._jit import kernel


@kernel
def _correlate(a, wy, wx, step, out):
    # wy, wx: the half kernels (centre first); step: x tap stride in a row
    ry, rx = wy.size - 1, wx.size - 1
    n_l, n_h, n_m = out.shape
    n_mp = a.shape[2]
    row = np.empty(n_mp, dtype=out.dtype)
    for pl in range(n_l):
        for i in range(n_h):
            c = i + ry
            src = a[pl, c]
            w = wy[0]
            for t in range(n_mp):
                row[t] = w * src[t]
            for k in range(1, ry + 1):
                w = wy[k]
                up, down = a[pl, c - k], a[pl, c + k]
                for t in range(n_mp):
                    row[t] += w * (up[t] + down[t])
            # shifted views, not row[t + offset]: an index that might be
            # negative takes numba's wraparound test, which stops SIMD
            dst = out[pl, i]
            off = rx * step
            w = wx[0]
            mid = row[off : off + n_m]
            for t in range(n_m):
                dst[t] = w * mid[t]
            for k in range(1, rx + 1):
                w = wx[k]
                left, right = row[off - k * step :], row[off + k * step :]
                for t in range(n_m):
                    dst[t] += w * (left[t] + right[t])


@kernel
def _correlate_omit(a, wy, wx, step, out):
    # as _correlate on the valid (non-NaN) samples, value and weight sums
    # together; out = num / den, num itself where the footprint had no NaN
    # (den is then exactly ``full``, the weights' own sum, and num the same
    # value as _correlate's, bit for bit), NaN where the pixel is NaN. Output
    # rows whose y reach holds no NaN run _correlate's loops (den would be
    # ``full`` everywhere), input rows without NaN skip the NaN tests.
    ry, rx = wy.size - 1, wx.size - 1
    n_l, n_h, n_m = out.shape
    n_hp, n_mp = a.shape[1], a.shape[2]
    num = np.empty(n_mp, dtype=out.dtype)
    den = np.empty(n_mp, dtype=out.dtype)
    numx = np.empty(n_m, dtype=out.dtype)
    denx = np.empty(n_m, dtype=out.dtype)
    one = wy[0] / wy[0]  # 1 and 0 in the weights' dtype (not float64)
    zero = wy[0] - wy[0]
    # the weight sum of a footprint without NaN, computed as den is
    d1 = wy[0] * one
    for k in range(1, ry + 1):
        d1 += wy[k] * (one + one)
    full = wx[0] * d1
    for k in range(1, rx + 1):
        full += wx[k] * (d1 + d1)
    off = rx * step
    nan_rows = np.zeros(n_hp + 1, dtype=np.int64)  # cumulative count of rows holding NaN
    for pl in range(n_l):
        for p in range(n_hp):
            src = a[pl, p]
            bad = False
            for t in range(n_mp):
                bad |= src[t] != src[t]
            nan_rows[p + 1] = nan_rows[p] + bad
        for i in range(n_h):
            c = i + ry
            src = a[pl, c]
            dst = out[pl, i]
            if nan_rows[c + ry + 1] == nan_rows[c - ry]:  # no NaN in reach: the plain loops
                w = wy[0]
                for t in range(n_mp):
                    num[t] = w * src[t]
                for k in range(1, ry + 1):
                    w = wy[k]
                    up, down = a[pl, c - k], a[pl, c + k]
                    for t in range(n_mp):
                        num[t] += w * (up[t] + down[t])
                w = wx[0]
                mid = num[off : off + n_m]
                for t in range(n_m):
                    dst[t] = w * mid[t]
                for k in range(1, rx + 1):
                    w = wx[k]
                    left, right = num[off - k * step :], num[off + k * step :]
                    for t in range(n_m):
                        dst[t] += w * (left[t] + right[t])
                continue
            w = wy[0]
            for t in range(n_mp):
                v = src[t]
                ok = v == v
                num[t] = w * (v if ok else zero)
                den[t] = w * (one if ok else zero)
            for k in range(1, ry + 1):
                w = wy[k]
                up, down = a[pl, c - k], a[pl, c + k]
                if (
                    nan_rows[c - k + 1] == nan_rows[c - k]
                    and nan_rows[c + k + 1] == nan_rows[c + k]
                ):
                    w2 = w * (one + one)
                    for t in range(n_mp):
                        num[t] += w * (up[t] + down[t])
                        den[t] += w2
                    continue
                for t in range(n_mp):
                    u, d = up[t], down[t]
                    uok, dok = u == u, d == d
                    num[t] += w * ((u if uok else zero) + (d if dok else zero))
                    den[t] += w * ((one if uok else zero) + (one if dok else zero))
            w = wx[0]
            nmid, dmid = num[off : off + n_m], den[off : off + n_m]
            for t in range(n_m):
                numx[t] = w * nmid[t]
                denx[t] = w * dmid[t]
            for k in range(1, rx + 1):
                w = wx[k]
                nl, nr = num[off - k * step :], num[off + k * step :]
                dl, dr = den[off - k * step :], den[off + k * step :]
                for t in range(n_m):
                    numx[t] += w * (nl[t] + nr[t])
                    denx[t] += w * (dl[t] + dr[t])
            centre = src[off : off + n_m]
            for t in range(n_m):
                s, m = numx[t], denx[t]
                r = s if m == full else s / m
                v = centre[t]
                dst[t] = r if v == v else v


def correlate_valid(
    a: np.ndarray, wy: np.ndarray, wx: np.ndarray, step: int, *, omit: bool = False
) -> np.ndarray:
    """Separable correlation of a haloed block ``(L, Hp, Mp)``, valid part only.

    Parameters
    ----------
    a : numpy.ndarray
        float32 or float64 block ``(L, H + 2 ry, (W + 2 rx) * step)``; the
        last axis must be contiguous.
    wy, wx : numpy.ndarray
        Half kernels of symmetric weights in ``a``'s dtype, centre first:
        ``wy[k]`` weighs the samples ``k`` rows above and below
        (``[1.0]``: the axis is not filtered).
    step : int
        Distance in the last axis between two ``x`` taps (the number of
        values per pixel, e.g. bands).
    omit : bool, default False
        Normalized convolution over the non-NaN samples: NaN pixels stay
        NaN, valid pixels get ``sum(w v) / sum(w)`` over their valid
        neighbours (exactly the plain result where no NaN is in reach).
        ``False``: NaN spreads, as in scipy.

    Returns
    -------
    numpy.ndarray
        ``(L, H, W * step)`` in ``a``'s dtype.

    Examples
    --------
    >>> a = np.arange(5.0).reshape(1, 1, 5)
    >>> correlate_valid(a, np.ones(1), np.array([0.5, 0.25]), 1).tolist()
    [[[1.0, 2.0, 3.0]]]
    >>> a[0, 0, 1] = np.nan
    >>> correlate_valid(a, np.ones(1), np.array([0.5, 0.25]), 1, omit=True).tolist()
    [[[nan, 2.3333333333333335, 3.0]]]
    """
    n_l, n_hp, n_mp = a.shape
    ry, rx = wy.size - 1, wx.size - 1
    shape = (n_l, max(n_hp - 2 * ry, 0), max(n_mp - 2 * rx * step, 0))
    out = np.empty(shape, dtype=a.dtype)
    if out.size:
        wy, wx = wy.astype(a.dtype), wx.astype(a.dtype)
        (_correlate_omit if omit else _correlate)(a, wy, wx, step, out)
    return out
