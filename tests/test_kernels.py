"""bigimg.kernels: each compiled kernel against its numpy/scipy reference, on plain arrays.

Awkward shapes (empty, 1 x N, odd sizes), the dtypes bigimg reads, NaN patterns
(none, all, borders, scattered), values on bin edges and strided (non-contiguous)
input. The kernels must match numpy bit for bit where numpy's result is exact
(counts, lookups) and scipy within the float rounding otherwise.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bigimg.filters import _dtype_weights, _weights
from bigimg.kernels import histogram as kh
from bigimg.kernels.gaussian import correlate_valid

RNG = np.random.default_rng(0)
SHAPES = [(0, 5), (1, 1), (1, 17), (13, 1), (7, 31)]
NAN_PATTERNS = ["none", "all", "borders", "scattered"]


def _with_nan(a: np.ndarray, pattern: str, seed: int = 0) -> np.ndarray:
    a = a.copy()
    if pattern == "all":
        a[...] = np.nan
    elif pattern == "borders" and a.size:
        a[:2] = np.nan
        a[..., -3:] = np.nan
    elif pattern == "scattered":
        a[np.random.default_rng(seed).random(a.shape) < 0.2] = np.nan
    return a


def _planes(a: np.ndarray) -> np.ndarray:
    """A 2-D array as one plane ``(1, P, Q)``."""
    return a[None]


def _strided(a: np.ndarray) -> np.ndarray:
    """The same values in a non-contiguous view (every other column of a wider array)."""
    wide = np.zeros((a.shape[0], 2 * a.shape[1]), dtype=a.dtype)
    wide[:, ::2] = a
    view = wide[:, ::2]
    assert not view.flags.c_contiguous or view.size <= 1
    return view


# ---------------------------------------------------------------- counting by value
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("strided", [False, True])
def test_count_values_is_bincount(dtype, shape, strided):
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -300), min(info.max, 700)
    a = RNG.integers(lo, hi, shape, endpoint=True).astype(dtype)
    if strided:
        a = _strided(a)
    low, n = int(lo) + 3, hi - lo - 10  # a window: values outside it are not counted
    got = kh.count_values(_planes(a), low, n, exclude=(lo + 5,))
    v = a.astype(np.int64).ravel()
    v = v[(v >= low) & (v < low + n) & (v != lo + 5)]
    np.testing.assert_array_equal(got[0], np.bincount(v - low, minlength=n))


def test_count_values_64_bit_extremes_and_planes():
    top = np.array([[2**64 - 1, 2**64 - 2, 2**64 - 2, 2**64 - 4]], dtype="u8")
    np.testing.assert_array_equal(kh.count_values(top[None], 2**64 - 4, 4)[0], [1, 0, 2, 1])
    low = np.array([[-(2**63), -(2**63) + 2, 2**63 - 1]], dtype="i8")
    np.testing.assert_array_equal(kh.count_values(low[None], -(2**63), 3)[0], [1, 0, 1])
    bands = RNG.integers(0, 256, (9, 11, 3)).astype("uint8")  # (y, x, band): strided planes
    got = kh.count_values(kh.as_planes(bands, (2,)), 0, 256)
    for b in range(3):
        np.testing.assert_array_equal(got[b], np.bincount(bands[..., b].ravel(), minlength=256))


# ---------------------------------------------------------------- uniform bins
def _edge_values(dtype: str, rng_: tuple, n: int) -> np.ndarray:
    """Values on and next to every edge, both range ends, outside values, NaN and inf."""
    edges = np.histogram_bin_edges(np.empty(0, dtype), bins=n, range=rng_).astype(dtype)
    near = [edges, np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)]
    extra = np.array([np.nan, np.inf, -np.inf, rng_[0], rng_[1]], dtype=dtype)
    return np.concatenate([*near, extra]).astype(dtype)


RANGES = [
    (0.0, 1.0),
    (0.1, 0.9),
    (np.float32(0.1), np.float32(0.9)),
    (np.float64(-3.3), np.float64(7.1)),
    (1e4, 1e4 + 1),  # narrow, far from zero: float32 rounding everywhere
    (5.0, 5.0),  # empty range: numpy widens it by 0.5 each side
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rng_", RANGES, ids=str)
@pytest.mark.parametrize("n", [1, 7, 256])
def test_count_uniform_is_numpy_histogram_on_edges(dtype, rng_, n):
    lo, hi = float(rng_[0]), float(rng_[1])
    vals = np.concatenate(
        [_edge_values(dtype, rng_, n), RNG.uniform(lo - 1, hi + 1, 500).astype(dtype)]
    )
    got = kh.count_uniform(vals.reshape(1, 1, -1), kh.uniform_bins(np.dtype(dtype), n, *rng_))
    np.testing.assert_array_equal(got[0], np.histogram(vals, bins=n, range=rng_)[0])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("pattern", NAN_PATTERNS)
@pytest.mark.parametrize("strided", [False, True])
def test_count_uniform_nan_patterns_shapes_strides(dtype, shape, pattern, strided):
    a = _with_nan(RNG.normal(0, 1, shape).astype(dtype), pattern)
    if strided:
        a = _strided(a)
    excl = (a.flat[0],) if a.size and not np.isnan(a.flat[0]) else ()
    got = kh.count_uniform(_planes(a), kh.uniform_bins(a.dtype, 16, -1.5, 2.0), excl)
    vals = a[~np.isin(a, excl)] if excl else a
    np.testing.assert_array_equal(got[0], np.histogram(vals, bins=16, range=(-1.5, 2.0))[0])


@settings(deadline=None)
@given(
    st.sampled_from(["float32", "float64"]),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.floats(1e-3, 1e6, allow_nan=False),
    st.integers(1, 300),
    st.integers(0, 2**32 - 1),
)
def test_count_uniform_drawn_ranges(dtype, first, width, n, seed):
    rng = np.random.default_rng(seed)
    first = np.dtype(dtype).type(first)
    last = np.dtype(dtype).type(first + width)
    try:  # numpy refuses a range it cannot cut into n distinct bins (so does histogram())
        edges = np.histogram_bin_edges(np.empty(0, dtype), bins=n, range=(first, last))
    except ValueError:
        assume(False)
    vals = np.concatenate(
        [
            rng.uniform(float(first), float(last), 300).astype(dtype),
            edges.astype(dtype),
            np.nextafter(edges.astype(dtype), np.asarray(np.inf, dtype)),
            np.nextafter(edges.astype(dtype), np.asarray(-np.inf, dtype)),
        ]
    )
    got = kh.count_uniform(vals.reshape(1, 1, -1), kh.uniform_bins(np.dtype(dtype), n, first, last))
    np.testing.assert_array_equal(got[0], np.histogram(vals, bins=n, range=(first, last))[0])


# ---------------------------------------------------------------- applying a CDF
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "int32"])
@pytest.mark.parametrize("out", ["float32", "uint8"])
def test_apply_lut_is_indexing(dtype, out):
    info = np.iinfo(dtype)
    low = max(int(info.min), -50)
    a = _strided(RNG.integers(low, low + 100, (6, 9)).astype(dtype))
    lut = RNG.random((1, 80)).astype(out) if out == "float32" else RNG.integers(0, 256, (1, 80))
    lut = lut.astype(out)
    ex = low + 1 if out == "float32" or low + 1 >= 0 else low + 2 - low  # a value out can hold
    got = kh.apply_lut(_planes(a), low, lut, exclude=(ex,))
    ref = lut[0][np.clip(a.astype(np.int64) - low, 0, 79)]
    ref[a == ex] = ex
    np.testing.assert_array_equal(got[0], ref)
    assert kh.apply_lut(np.zeros((1, 0, 3), dtype), low, lut).shape == (1, 0, 3)


def _centres(dtype: str, lo: float, hi: float, n: int = 256) -> np.ndarray:
    edges = np.histogram_bin_edges(np.empty(0, dtype), bins=n, range=(lo, hi))
    return ((edges[:-1] + edges[1:]) / 2).astype(np.float64)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pattern", NAN_PATTERNS)
@pytest.mark.parametrize("uniform", [True, False])
def test_interp_is_numpy_interp(dtype, pattern, uniform):
    a = _strided(_with_nan(RNG.uniform(-4, 6, (11, 23)).astype(dtype), pattern))
    xp = _centres(dtype, -3.0, 5.0)
    fp = np.cumsum(RNG.random(256))
    fp /= fp[-1]
    out = np.empty(a.shape, dtype)
    kh.interp(_planes(a), xp[None], fp[None], (a.flat[1],), out=out[None], uniform=uniform)
    ref = np.interp(a.astype(np.float64), xp, fp).astype(dtype)
    ref[np.isnan(a)] = np.nan
    ref[a == a.flat[1]] = a.flat[1]
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-7 if dtype == "float32" else 1e-12)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))


@pytest.mark.parametrize("out_dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_interp_integer_output_is_img_as_ubyte(out_dtype, dtype):
    import skimage.util

    a = _with_nan(RNG.uniform(-4, 6, (17, 19)).astype(dtype), "scattered")
    xp = _centres(dtype, -3.0, 5.0)
    fp = np.cumsum(RNG.random(256))
    fp /= fp[-1]
    floats = np.empty(a.shape, dtype)
    kh.interp(_planes(a), xp[None], fp[None], out=floats[None])
    ints = np.empty(a.shape, out_dtype)
    kh.interp(_planes(a), xp[None], fp[None], out=ints[None], nodata=3)
    convert = skimage.util.img_as_ubyte if out_dtype == "uint8" else skimage.util.img_as_uint
    ok = ~np.isnan(a)
    np.testing.assert_array_equal(ints[ok], convert(floats[ok]))
    assert (ints[~ok] == 3).all()


def test_interp_one_point_and_duplicate_points():
    a = np.array([[[np.nan, 0.0, 5.0]]])
    out = np.empty(a.shape)
    kh.interp(a, np.array([[1.0]]), np.array([[0.5]]), out=out)
    np.testing.assert_array_equal(out, [[[np.nan, 0.5, 0.5]]])
    xp = np.array([[0.0, 1.0, 1.0, 2.0]])  # float32 centres of a narrow range can repeat
    fp = np.array([[0.1, 0.4, 0.6, 1.0]])
    x = np.linspace(-1, 3, 41).reshape(1, 1, -1)
    kh.interp(x, xp, fp, out=(out := np.empty(x.shape)))
    np.testing.assert_allclose(out[0, 0], np.interp(x[0, 0], xp[0], fp[0]), atol=1e-15)


# ---------------------------------------------------------------- Gaussian
def _half(sigma: float, dtype) -> np.ndarray:
    r = int(4 * sigma + 0.5)
    return _dtype_weights(_weights(sigma, r), np.dtype(dtype))[r:]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), (23, 31), (30, 41)])
@pytest.mark.parametrize("step", [1, 3])
def test_correlate_is_scipy(dtype, shape, step):
    """Valid part of the separable correlation = scipy's correlate1d along y then x."""
    sy, sx = 1.5, 2.5
    wy, wx = _half(sy, dtype), _half(sx, dtype)
    ry, rx = wy.size - 1, wx.size - 1
    a = RNG.random((shape[0] + 2 * ry, shape[1] + 2 * rx, step)).astype(dtype)
    got = correlate_valid(a.reshape(1, a.shape[0], -1), wy, wx, step)
    got = got.reshape(shape[0], shape[1], step)
    full_y, full_x = (np.concatenate([w[:0:-1], w]).astype(np.float64) for w in (wy, wx))
    ref = ndi.correlate1d(a.astype(np.float64), full_y, axis=0, mode="constant")
    ref = ndi.correlate1d(ref, full_x, axis=1, mode="constant")[ry:-ry, rx:-rx]
    tol = {"rtol": 1e-6, "atol": 1e-7} if dtype == "float32" else {"rtol": 1e-13, "atol": 1e-15}
    np.testing.assert_allclose(got, ref, **tol)
    assert got.dtype == dtype


def _masked_reference(a: np.ndarray, wy: np.ndarray, wx: np.ndarray, step: int) -> np.ndarray:
    """Normalized convolution in float64 with scipy: sum(w v) / sum(w) over the valid samples."""
    ry, rx = wy.size - 1, wx.size - 1
    full_y, full_x = (np.concatenate([w[:0:-1], w]).astype(np.float64) for w in (wy, wx))
    x = a.reshape(a.shape[0], -1, step).astype(np.float64)
    ok = ~np.isnan(x)

    def conv(v: np.ndarray) -> np.ndarray:
        v = ndi.correlate1d(v, full_y, axis=0, mode="constant")
        return ndi.correlate1d(v, full_x, axis=1, mode="constant")[
            ry : -ry or None, rx : -rx or None
        ]

    with np.errstate(invalid="ignore", divide="ignore"):
        out = conv(np.where(ok, x, 0)) / conv(ok.astype(np.float64))
    out[~ok[ry : x.shape[0] - ry, rx : x.shape[1] - rx]] = np.nan
    return out.reshape(out.shape[0], -1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("pattern", NAN_PATTERNS)
@pytest.mark.parametrize("step", [1, 2])
def test_correlate_omit_is_normalized_convolution(dtype, pattern, step):
    wy, wx = _half(2.0, dtype), _half(1.0, dtype)
    a = _with_nan(RNG.random((40, 33 * step)).astype(dtype), pattern, seed=step)
    got = correlate_valid(a[None], wy, wx, step, omit=True)[0]
    ref = _masked_reference(a, wy, wx, step)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    tol = {"rtol": 2e-6, "atol": 1e-6} if dtype == "float32" else {"rtol": 1e-12, "atol": 1e-14}
    np.testing.assert_allclose(got, ref, **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("omit", [False, True])
def test_correlate_same_bits_in_any_window(dtype, omit):
    """A pixel's value does not depend on where the block around it starts or ends: chunk invariance."""
    wy, wx = _half(2.0, dtype), _half(3.0, dtype)
    ry, rx = wy.size - 1, wx.size - 1
    a = _with_nan(RNG.random((60, 70)).astype(dtype), "scattered" if omit else "none")
    a[:, :20] = RNG.random((60, 20))  # rows and blocks without NaN next to rows with NaN
    whole = correlate_valid(a[None], wy, wx, 1, omit=omit)[0]
    for y0, y1, x0, x1 in [
        (0, 30, 0, 40),
        (7, 60, 13, 70),
        (25, 47, 3, 38),
        (0, 2 * ry + 1, 0, 70),
    ]:
        part = correlate_valid(np.ascontiguousarray(a[y0:y1, x0:x1])[None], wy, wx, 1, omit=omit)
        np.testing.assert_array_equal(part[0], whole[y0 : y1 - 2 * ry, x0 : x1 - 2 * rx])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_correlate_omit_equals_plain_without_nan_and_keeps_lone_pixels(dtype):
    wy, wx = _half(2.0, dtype), _half(2.0, dtype)
    a = RNG.random((30, 30)).astype(dtype)
    np.testing.assert_array_equal(
        correlate_valid(a[None], wy, wx, 1, omit=True), correlate_valid(a[None], wy, wx, 1)
    )
    lone = np.full((21, 21), np.nan, dtype)
    lone[10, 10] = 7.0
    got = correlate_valid(lone[None], _half(1.0, dtype), _half(1.0, dtype), 1, omit=True)[0]
    assert got[6, 6] == pytest.approx(7.0, rel=1e-6)
    assert np.isnan(got).sum() == got.size - 1


def test_correlate_empty_and_single_axis():
    w = _half(1.0, "float32")
    assert correlate_valid(np.zeros((1, 3, 20), "float32"), w, w, 1).shape == (1, 0, 12)
    a = RNG.random((2, 15, 4)).astype("float32")  # only y filtered: wx = [1]
    one = np.ones(1, "float32")
    got = correlate_valid(a, w, one, 1)
    ref = ndi.correlate1d(
        a.astype(np.float64), np.concatenate([w[:0:-1], w]), axis=1, mode="constant"
    )
    np.testing.assert_allclose(got, ref[:, 4:-4], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------- plumbing
def test_numba_is_imported_on_first_call_only():
    code = (
        "import sys, bigimg, bigimg.filters, bigimg.histogram, bigimg.kernels.histogram as kh\n"
        "import numpy as np\n"
        "assert 'numba' not in sys.modules, 'numba imported at import time'\n"
        "kh.count_values(np.zeros((1, 2, 2), 'uint8'), 0, 4)\n"
        "assert 'numba' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kernels_pickle_by_name():
    from bigimg.kernels.histogram import _count_values

    assert pickle.loads(pickle.dumps(_count_values)) is _count_values
