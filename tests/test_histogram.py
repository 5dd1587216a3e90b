"""bigimg.histogram: against numpy.histogram and skimage.exposure.equalize_hist."""

from __future__ import annotations

import shutil
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import skimage.data
import skimage.exposure
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import bigimg as bi
from bigimg.histogram import _count_edges_kernel, _minmax_kernel
from bigimg.kernels import histogram as kh
from bigimg.pipeline import load_config
from tests.helpers import raise_if_dask_computes
from tests.strategies import chunkings

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def _interp_uniform(x, xp, fp):
    """The equalization kernel on one plane: ``np.interp`` for nearly even ``xp``, in float64."""
    x = np.asarray(x)
    out = np.empty(x.shape)
    kh.interp(
        x.reshape(1, 1, -1) if x.ndim < 2 else x[None],
        xp[None],
        fp[None],
        out=out.reshape(1, 1, -1) if x.ndim < 2 else out[None],
    )
    return out


# ---------------------------------------------------------------- helpers
def _valid(band: np.ndarray, exclude=()) -> np.ndarray:
    ok = ~np.isin(band, exclude)
    if band.dtype.kind == "f":
        ok &= ~np.isnan(band)
    return ok


def _assert_equalized(out: np.ndarray, img: np.ndarray, *, exclude=(), bins=256, out_range=(0, 1)):
    """Each band vs skimage with mask=valid on valid pixels; the rest unchanged."""
    lo, hi = out_range
    for b in range(img.shape[-1]):
        band = img[..., b]
        ok = _valid(band, exclude)
        ref = skimage.exposure.equalize_hist(band, nbins=bins, mask=ok)
        np.testing.assert_allclose(out[..., b][ok], lo + (hi - lo) * ref[ok], rtol=0, atol=1e-6)
        np.testing.assert_array_equal(out[..., b][~ok], band[~ok].astype(out.dtype))


def _float_with_nan_border(shape=(48, 40, 2), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.gamma(2.0, 1.5, size=shape).astype(np.float32)
    a[:5] = np.nan
    a[:, -3:] = np.nan
    return a


def _uint8_with_border(shape=(48, 40, 3), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.clip(rng.normal(120, 30, size=shape), 1, 254).astype(np.uint8)
    a[:4] = 0
    a[:, :3] = 255
    return a


# ---------------------------------------------------------------- histogram vs numpy
@pytest.mark.parametrize("chunks", [9, {"y": 48, "x": 1}, -1])
@pytest.mark.parametrize("bins", [1, 7, 256])
def test_histogram_float_matches_numpy(bins, chunks):
    """Default range: each band's own, exactly numpy.histogram on that band (issue 14)."""
    a = _float_with_nan_border()
    a[..., 1] = a[..., 1] * 3 + 10  # bands of very different ranges
    a[10, 10, 0] = 0.0
    h = bi.histogram(bi.from_array(a, chunks=chunks), bins=bins, exclude=[0])
    assert h.dims == ("band", "bin") and h.dtype == np.int64
    assert h["bin_lower"].dims == ("band", "bin") and "bin" not in h.coords
    for b in range(a.shape[-1]):
        band = a[..., b]
        ref, edges = np.histogram(band[_valid(band, [0])], bins=bins)
        np.testing.assert_array_equal(h.isel(band=b).values, ref)
        np.testing.assert_array_equal(h["bin_lower"].isel(band=b).values, edges[:-1])
        np.testing.assert_array_equal(h["bin_upper"].isel(band=b).values, edges[1:])
        np.testing.assert_array_equal(
            h["bin_centre"].isel(band=b).values, (edges[:-1] + edges[1:]) / 2
        )


@pytest.mark.parametrize("chunks", [9, {"y": 5, "x": 7}, -1])
@pytest.mark.parametrize("bins", [1, 7, 256])
def test_histogram_shared_range_matches_numpy(bins, chunks):
    a = _float_with_nan_border()
    a[..., 1] = a[..., 1] * 3 + 10
    a[10, 10, 0] = 0.0
    h = bi.histogram(bi.from_array(a, chunks=chunks), bins=bins, exclude=[0], range="shared")
    ok = _valid(a, [0])
    first, last = a[ok].min(), a[ok].max()  # common binning over the bands
    assert h["bin_lower"].dims == ("bin",)
    for b in range(a.shape[-1]):
        band = a[..., b]
        ref, edges = np.histogram(band[_valid(band, [0])], bins=bins, range=(first, last))
        np.testing.assert_array_equal(h.isel(band=b).values, ref)
        np.testing.assert_array_equal(h["bin_lower"].values, edges[:-1])
        np.testing.assert_array_equal(h["bin_upper"].values, edges[1:])
    np.testing.assert_allclose(h["bin"], (h["bin_lower"] + h["bin_upper"]) / 2, rtol=1e-6)
    np.testing.assert_array_equal(h["bin"], h["bin_centre"])


def test_histogram_single_band_auto_range_is_numpy_default():
    a = skimage.data.camera().astype(np.float32) / 7
    h = bi.histogram(bi.from_array(a, chunks=100), bins=50)
    ref, edges = np.histogram(a, bins=50)
    np.testing.assert_array_equal(h.isel(band=0).values, ref)
    np.testing.assert_array_equal(h["bin_upper"].values, edges[1:])


def test_histogram_given_range_drops_outside_values():
    a = _float_with_nan_border()
    h = bi.histogram(bi.from_array(a, chunks=11), bins=10, range=(1.0, 4.5))
    for b in range(2):
        band = a[..., b]
        ref, edges = np.histogram(band[_valid(band)], bins=10, range=(1.0, 4.5))
        np.testing.assert_array_equal(h.isel(band=b).values, ref)
    np.testing.assert_array_equal(h["bin_lower"].values, edges[:-1])


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_histogram_explicit_edges(dtype):
    a = _uint8_with_border().astype(dtype)
    edges = [0.0, 50.5, 100, 120, 121, 200, 255]  # uneven; the last bin holds 255
    h = bi.histogram(bi.from_array(a, chunks=13), bins=edges, exclude=[0])
    for b in range(a.shape[-1]):
        band = a[..., b]
        ref, _ = np.histogram(band[band != 0], bins=edges)
        np.testing.assert_array_equal(h.isel(band=b).values, ref)
    np.testing.assert_array_equal(h["bin_upper"].values, edges[1:])


def test_uint8_border_counted_exactly_like_skimage():
    a = _uint8_with_border()
    h = bi.histogram(bi.from_array(a, chunks=16), exclude=[0, 255], bins=3)  # bins ignored
    ok = _valid(a, [0, 255])
    lo, hi = int(a[ok].min()), int(a[ok].max())
    np.testing.assert_array_equal(h["bin"].values, np.arange(lo, hi + 1))
    np.testing.assert_array_equal(h["bin_lower"].values, np.arange(lo, hi + 1) - 0.5)
    for b in range(3):
        band = a[..., b]
        ref = np.bincount(band[_valid(band, [0, 255])].ravel() - lo, minlength=hi - lo + 1)
        np.testing.assert_array_equal(h.isel(band=b).values, ref)
    single = a[..., :1]
    counts, centres = skimage.exposure.histogram(single[_valid(single, [0, 255])])
    h1 = bi.histogram(bi.from_array(single, chunks=10), exclude=[0, 255])
    np.testing.assert_array_equal(h1.isel(band=0).values, counts)
    np.testing.assert_array_equal(h1["bin"].values, centres)


@pytest.mark.parametrize("dtype", ["uint16", "int8", "int16", "int32", "uint32", "int64"])
def test_integer_dtypes_count_every_value(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    a = np.clip(rng.normal(0 if info.min < 0 else 100, 40, size=(30, 20, 1)), info.min, info.max)
    a = a.astype(dtype)
    a[0, 0, 0] = 7
    h = bi.histogram(bi.from_array(a, chunks=7), exclude=7)
    band = a[..., 0]
    vals = band[band != 7]
    counts, centres = skimage.exposure.histogram(vals)
    np.testing.assert_array_equal(h.isel(band=0).values, counts)
    np.testing.assert_array_equal(h["bin"].values, centres)
    r = bi.histogram(bi.from_array(a, chunks=7), range=(-10.5, 30))
    expected = [(band == v).sum() for v in range(-10 if info.min < 0 else 0, 31)]
    np.testing.assert_array_equal(r.isel(band=0).values, expected)


def test_histogram_dims_keeps_other_dims_and_coords():
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 50, size=(3, 12, 10, 2)).astype(np.float32)
    img = bi.from_array(stack, chunks={"image": 1, "y": 5, "x": 4}).assign_coords(
        image=["a", "b", "c"], band=["r", "g"]
    )
    h = bi.histogram(img, bins=5, dims=("y", "x"))
    shared = bi.histogram(img, bins=5, dims=("y", "x"), range="shared")
    assert h.dims == ("image", "band", "bin")
    assert h["image"].values.tolist() == ["a", "b", "c"] and h["band"].values.tolist() == ["r", "g"]
    assert h["bin_lower"].dims == ("image", "band", "bin")
    for i in range(3):
        for b in range(2):
            ref, edges = np.histogram(stack[i, ..., b], bins=5)
            np.testing.assert_array_equal(h.isel(image=i, band=b).values, ref)
            np.testing.assert_array_equal(h["bin_upper"].isel(image=i, band=b).values, edges[1:])
            ref, _ = np.histogram(stack[i, ..., b], bins=5, range=(stack.min(), stack.max()))
            np.testing.assert_array_equal(shared.isel(image=i, band=b).values, ref)
    everything = bi.histogram(img, bins=5, dims=["image", "y", "x", "band"])
    assert everything.dims == ("bin",)
    np.testing.assert_array_equal(everything.values, np.histogram(stack, bins=5)[0])


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_equalize_dims_choose_what_shares_a_cdf(dtype):
    a = _uint8_with_border((20, 16, 3)).astype(dtype)
    stack = np.stack([a, a[::-1] // 2])  # (image, y, x, band)
    img = bi.from_array(stack, chunks={"image": 1, "y": 7, "x": 5, "band": 2})
    ok = _valid(stack, [0, 255])
    one = bi.equalize_hist(img, exclude=[0, 255], dims=["image", "y", "x", "band"]).values
    ref = skimage.exposure.equalize_hist(stack, mask=ok)
    np.testing.assert_allclose(one[ok], ref[ok], atol=1e-6)
    per_image = bi.equalize_hist(img, exclude=[0, 255], dims=("y", "x")).values
    for i in range(2):
        _assert_equalized(per_image[i], stack[i], exclude=[0, 255])


@settings(deadline=None)
@given(data=st.data())
def test_chunking_never_changes_histogram_or_equalization(data):
    a = _float_with_nan_border((23, 17, 2), seed=5)
    a[3:9, 4, 1] = 2.0
    chunks = data.draw(chunkings(a.shape))
    img = bi.from_array(da.from_array(a, chunks=chunks))
    ok = _valid(a, [2.0])
    h = bi.histogram(img, bins=16, exclude=[2.0])
    shared = bi.histogram(img, bins=16, exclude=[2.0], range="shared")
    for b in range(2):
        band = a[..., b]
        ref, _ = np.histogram(band[_valid(band, [2.0])], bins=16)
        np.testing.assert_array_equal(h.isel(band=b).values, ref)
        ref, _ = np.histogram(band[_valid(band, [2.0])], bins=16, range=(a[ok].min(), a[ok].max()))
        np.testing.assert_array_equal(shared.isel(band=b).values, ref)
    out = bi.equalize_hist(img, bins=16, exclude=[2.0]).values
    whole = bi.equalize_hist(bi.from_array(a, chunks=-1), bins=16, exclude=[2.0]).values
    np.testing.assert_array_equal(out, whole)  # per-pixel op: bit-identical
    u = _uint8_with_border((23, 17, 2), seed=5)
    uimg = bi.from_array(da.from_array(u, chunks=chunks))
    _assert_equalized(bi.equalize_hist(uimg, exclude=[0, 255]).values, u, exclude=[0, 255])


# ---------------------------------------------------------------- equalize vs skimage
@pytest.mark.parametrize("bins", [1, 2, 64])
def test_equalize_float_with_nan_border_matches_skimage(bins):
    a = _float_with_nan_border()
    out = bi.equalize_hist(bi.from_array(a, chunks=10), bins=bins)
    assert out.dtype == np.float32
    _assert_equalized(out.values, a, bins=bins)


def test_equalize_explicit_edges_interpolates_at_centres():
    a = _float_with_nan_border()
    edges = np.array([0.0, 1.0, 2.0, 4.0, 8.0, 30.0])
    out = bi.equalize_hist(bi.from_array(a, chunks=10), bins=edges).values
    for b in range(2):
        band = a[..., b]
        counts, _ = np.histogram(band[_valid(band)], bins=edges)
        ref = np.interp(band, (edges[:-1] + edges[1:]) / 2, np.cumsum(counts) / counts.sum())
        np.testing.assert_allclose(out[..., b], ref, atol=1e-6)


def test_equalize_uint8_with_0_255_border_matches_skimage():
    a = _uint8_with_border()
    out = bi.equalize_hist(bi.from_array(a, chunks=12), exclude=[0, 255], out_range=(-1, 2))
    assert out.dtype == np.float32
    _assert_equalized(out.values, a, exclude=[0, 255], out_range=(-1, 2))


@pytest.mark.parametrize("dtype", ["uint16", "int16", "int32", "float64"])
def test_equalize_other_dtypes_match_skimage(dtype):
    rng = np.random.default_rng(2)
    a = (rng.normal(0, 900, size=(40, 30, 2)) + (0 if dtype[0] in "if" else 30000)).astype(dtype)
    a[:2] = 5
    out = bi.equalize_hist(bi.from_array(a, chunks=9), exclude=[5], bins=100)
    assert out.dtype == ("float64" if dtype == "float64" else "float32")
    _assert_equalized(out.values, a, exclude=[5], bins=100)


def test_equalize_real_images_match_skimage():
    cam = skimage.data.camera()
    _assert_equalized(bi.equalize_hist(bi.from_array(cam, chunks=128)).values, cam[..., None])
    rgb = skimage.data.astronaut().astype(np.float32) / 255
    rgb[:40] = np.nan
    out = bi.equalize_hist(bi.from_array(rgb, chunks=100), bins=128)
    _assert_equalized(out.values, rgb, bins=128)


def test_equalized_cdf_has_slope_one():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(200, 150)).astype(np.float32)
    out = bi.equalize_hist(bi.from_array(a, chunks=64), bins=1024).values.ravel()
    q = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(np.quantile(out, q), q, atol=0.01)


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_constant_image(dtype):
    a = np.full((9, 8, 1), 3, dtype=dtype)
    out = bi.equalize_hist(bi.from_array(a, chunks=4)).values
    _assert_equalized(out, a)
    h = bi.histogram(bi.from_array(a, chunks=4), bins=4)
    ref, edges = np.histogram(a, bins=4) if dtype == "float32" else (np.array([72]), None)
    np.testing.assert_array_equal(h.isel(band=0).values, ref)


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int32"])
def test_single_valid_pixel(dtype):
    a = np.zeros((9, 8, 1), dtype=dtype)
    a[4, 5, 0] = 17
    out = bi.equalize_hist(bi.from_array(a, chunks=3), exclude=0).values
    _assert_equalized(out, a, exclude=[0])
    assert (out[a == 0] == 0).all()
    if dtype != "float32":  # one integer bin: cdf = [1]
        assert out[4, 5, 0] == 1.0


@pytest.mark.parametrize("offset", [0.0, 1e4, -3e5])
def test_interp_uniform_within_tolerance_of_numpy_with_float32_centres(offset):
    # float32 centres (as skimage makes them) of a narrow range far from zero are off an
    # even grid by up to an ulp: values at and next to the centres still agree with numpy
    rng = np.random.default_rng(4)
    vals = (offset + rng.uniform(0, 1, 20000)).astype(np.float32)
    edges = np.linspace(vals.min(), vals.max(), 257)  # float32, as skimage's
    xp = ((edges[:-1] + edges[1:]) / 2).astype(np.float64)
    fp = np.cumsum(rng.integers(1, 1000, 256)).astype(np.float64)
    fp /= fp[-1]
    x = np.concatenate([vals, xp.astype(np.float32), np.nextafter(xp, np.inf).astype(np.float32)])
    np.testing.assert_allclose(_interp_uniform(x, xp, fp), np.interp(x, xp, fp), rtol=0, atol=1e-8)


def test_kernels_on_plain_arrays():
    rng = np.random.default_rng(0)
    xp = (np.linspace(-3, 5, 257, dtype=np.float32)[:-1] + np.float32(8 / 512)).astype(np.float64)
    fp = np.cumsum(rng.random(256))
    fp /= fp[-1]
    x = np.concatenate([rng.uniform(-4, 6, 5000), xp, [np.nan, -np.inf, np.inf]])
    np.testing.assert_allclose(_interp_uniform(x, xp, fp), np.interp(x, xp, fp), atol=1e-12)
    x2 = np.asfortranarray(rng.uniform(-4, 6, (300, 401)))  # several pieces, strided
    before = x2.copy()
    np.testing.assert_allclose(_interp_uniform(x2, xp, fp), np.interp(x2, xp, fp), atol=1e-12)
    np.testing.assert_array_equal(x2, before)  # the input is not modified
    assert np.isnan(_interp_uniform(np.array([np.nan]), xp[:1], fp[:1]))[0]
    block = np.array([[np.nan, 1.0], [3.0, 5.0]])
    np.testing.assert_array_equal(
        _minmax_kernel(block, kept=(), exclude=(np.float64(5),)), [[[1.0, 3.0]]]
    )
    edges = np.array([0.0, 1.0, 5.0])
    np.testing.assert_array_equal(
        _count_edges_kernel(block, kept=(), edges=edges, exclude=()),
        [[np.histogram(block[~np.isnan(block)], bins=edges)[0]]],
    )


# ---------------------------------------------------------------- laziness
def test_equalize_is_lazy_after_the_histogram():
    u = bi.from_array(_uint8_with_border(), chunks=16)
    with raise_if_dask_computes(max_computes=1) as sched:  # uint8: one counting pass, no range pass
        out = u.bigimg.equalize_hist(exclude=[0, 255])
    assert sched.total_computes == 1 and isinstance(out.data, da.Array)
    assert out.chunks == u.chunks
    f = bi.from_array(_float_with_nan_border(), chunks=16)
    with raise_if_dask_computes(max_computes=3) as sched:  # (range + count) + count
        out = f.bigimg.equalize_hist()
        h = f.bigimg.histogram(range=(0, 3))  # range given: counting pass only
    assert sched.total_computes == 3 and isinstance(out.data, da.Array)
    assert h.sizes["bin"] == 256


def test_coords_and_attrs_survive():
    a = _uint8_with_border()
    img = bi.from_array(a, chunks=16).assign_coords(y=np.arange(48) * 2.5, band=["r", "g", "b"])
    img.attrs["crs"] = "EPSG:3857"
    out = bi.equalize_hist(img, exclude=[0, 255])
    xr.testing.assert_identical(out["y"], img["y"])
    assert out.attrs == img.attrs and out.dims == img.dims
    h = bi.histogram(img, exclude=[0, 255])
    assert h["band"].values.tolist() == ["r", "g", "b"] and "y" not in h.coords


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"bins": 0}, ValueError, "bins must be >= 1"),
        ({"bins": "10"}, TypeError, "bins"),
        ({"bins": 2.5}, TypeError, "bins"),
        ({"bins": [3.0, 1.0]}, ValueError, "bins edges must increase"),
        ({"bins": [1.0]}, ValueError, "bins edges"),
        ({"bins": [0.0, np.inf]}, ValueError, "bins edges must be finite"),
        ({"range": (2.0, 2.0)}, ValueError, "range must have min < max"),
        ({"range": (3.0, 1.0)}, ValueError, "range must have min < max"),
        ({"range": (0.0, np.inf)}, ValueError, "range must be finite"),
        ({"range": (0.0, np.nan)}, ValueError, "range must be finite"),
        ({"range": 5}, TypeError, "range"),
        ({"exclude": "0"}, TypeError, "exclude"),
        ({"exclude": [0, None]}, TypeError, "exclude"),
        ({"exclude": [True]}, TypeError, "exclude"),
        ({"dims": ("y", "nope")}, ValueError, "dims names unknown dim"),
        ({"dims": ()}, ValueError, "dims must name"),
        ({"dims": 3}, TypeError, "dims"),
    ],
)
def test_histogram_errors(kwargs, exc, match):
    img = bi.from_array(_float_with_nan_border(), chunks=16)
    with raise_if_dask_computes(), pytest.raises(exc, match=match):
        bi.histogram(img, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"out_range": (1.0, 0.0)}, ValueError, "out_range"),
        ({"out_range": (0.0, np.inf)}, ValueError, "out_range"),
        ({"out_range": "01"}, TypeError, "out_range"),
        ({"bins": -1}, ValueError, "bins"),
        ({"exclude": {"a": 1}}, TypeError, "exclude"),
        ({"dims": "z"}, ValueError, "dims"),
    ],
)
def test_equalize_errors(kwargs, exc, match):
    img = bi.from_array(_uint8_with_border(), chunks=16)
    with raise_if_dask_computes(), pytest.raises(exc, match=match):
        bi.equalize_hist(img, **kwargs)


def test_wrong_input_types():
    with pytest.raises(TypeError, match="img must be an xarray.DataArray"):
        bi.histogram(np.zeros((4, 4)))
    with pytest.raises(TypeError, match="img must have an integer or floating dtype"):
        bi.equalize_hist(xr.DataArray(np.zeros((4, 4), dtype=bool), dims=("y", "x")))


@pytest.mark.parametrize("dtype", ["float32", "uint8", "int32"])
def test_no_valid_pixels_in_one_band(dtype):
    a = _uint8_with_border((20, 10, 3)).astype(dtype)
    a[..., 1] = 0 if dtype != "float32" else np.nan
    img = bi.from_array(a, chunks=8).assign_coords(band=["r", "g", "b"])
    with pytest.raises(ValueError, match="no valid pixels at band='g'"):
        bi.equalize_hist(img, exclude=[0])
    with pytest.raises(ValueError, match="no valid pixels at band='g'"):
        bi.histogram(img, exclude=[0])


def test_integer_range_without_an_integer():
    img = bi.from_array(_uint8_with_border(), chunks=16)
    with raise_if_dask_computes(), pytest.raises(ValueError, match="range .* holds no integer"):
        bi.histogram(img, range=(0.2, 0.8))
    with raise_if_dask_computes(), pytest.raises(ValueError, match="range .* holds no integer"):
        bi.histogram(img.astype("int32"), range=(300.2, 300.8))


def test_no_pixels_inside_range_and_infinite_values():
    a = _float_with_nan_border()
    with pytest.warns(bi.BigimgWarning, match="no valid pixels .* inside range"):
        h = bi.histogram(bi.from_array(a), range=(100.0, 200.0))
    assert not h.values.any()
    a[30, 3, 0] = np.inf
    with pytest.raises(ValueError, match="not finite; pass a finite range="):
        bi.histogram(bi.from_array(a))
    h = bi.histogram(bi.from_array(a), exclude=[np.inf], bins=4)
    assert int(h.sum()) == np.isfinite(a).sum()


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint8", "int32"])
def test_explicit_range_without_valid_values_counts_zeros_as_numpy(dtype):
    """Issue 22, item 12: numpy returns zero counts for an empty range (its test_precision).

    With a range or bins given, that is the answer, with a BigimgWarning naming the
    bands; with a range to be found in the data, no valid value stays an error.
    """
    a = np.random.default_rng(2).integers(10, 100, (20, 10, 2)).astype(dtype)
    img = bi.from_array(a, chunks=8).assign_coords(band=["r", "g"])
    for kwargs in ({"range": (200.0, 250.0), "bins": 5}, {"bins": [-20.0, -10.0, -5.0]}):
        with pytest.warns(bi.BigimgWarning, match=r"no valid pixels at band='r'; band='g' inside"):
            h = bi.histogram(img, **kwargs)
        if dtype.startswith("float") or "bins" in kwargs and "range" not in kwargs:
            ref = np.histogram(a[..., 0], **kwargs)[0]
            np.testing.assert_array_equal(h.values, [ref, ref])
        assert not h.values.any() and h.sizes["bin"] > 0
    # one band empty inside the range, the other not: only the empty one is named
    b = a.copy()
    b[0, 0, 1] = 220
    with pytest.warns(bi.BigimgWarning, match=r"at band='r' inside range") as record:
        h = bi.histogram(bi.from_array(b).assign_coords(band=["r", "g"]), range=(200.0, 250.0))
    assert len(record) == 1 and "'g'" not in str(record[0].message)
    assert int(h.sel(band="g").sum()) == 1 and int(h.sel(band="r").sum()) == 0
    nan = np.full((4, 4), np.nan, "float32")
    with pytest.raises(ValueError, match="no valid pixels .* after exclusion"):
        bi.histogram(bi.from_array(nan))


# ---------------------------------------------------------------- plot, config, cluster
def test_plot_histogram_writes_png(tmp_path):
    import PIL.Image

    h = bi.histogram(bi.from_array(_uint8_with_border(), chunks=16), exclude=[0, 255])
    path = bi.plot_histogram(h, tmp_path / "hist.png", title="demo")
    with PIL.Image.open(path) as im:
        assert im.format == "PNG" and im.size == (800, 450)
    with pytest.raises(FileNotFoundError, match="path"):
        bi.plot_histogram(h, tmp_path / "missing" / "h.png")
    with pytest.raises(TypeError, match="hist must be"):
        bi.plot_histogram(h.rename(bin="b"), tmp_path / "h.png")


def test_equalize_config_runs_on_the_demo_mosaic(tmp_path):
    from bigimg.demo import synthetic_mosaic

    mosaic = synthetic_mosaic(256, chunks=128)
    bi.to_zarr(mosaic, tmp_path / "mosaic.zarr")
    shutil.copy(CONFIGS / "equalize.toml", tmp_path / "equalize.toml")
    pipe = load_config(tmp_path / "equalize.toml")
    assert [s.op for s in pipe.steps] == ["equalize_hist"]
    pipe.run()
    stored = xr.open_zarr(pipe.output.path)
    out = stored["image"].transpose("y", "x", "band")  # stored band-first
    # completeness is the group's attr, never the array's
    assert stored.attrs["bigimg_complete"] and out.dtype == np.float32
    _assert_equalized(out.values, mosaic.values, exclude=[0, 255])


def test_demo_step_on_float_nan_mosaic():
    """The synthetic demo's step (exclude=[0, 255]) on float32 data whose NoData is NaN."""
    from bigimg.demo import SYNTHETIC_STEPS
    from bigimg.pipeline import OPS

    step = next(s for s in SYNTHETIC_STEPS if s["op"] == "equalize_hist")
    params = OPS["equalize_hist"].params.model_validate(
        {k: v for k, v in step.items() if k != "op"}
    )
    a = _uint8_with_border((30, 20, 3)).astype(np.float32)
    a[a == 0] = np.nan
    out = OPS["equalize_hist"].func(bi.from_array(a, chunks=8), **dict(params))
    _assert_equalized(out.values, a, exclude=[0, 255])


def test_on_local_cluster(client):
    a = _uint8_with_border((64, 48, 3))
    img = bi.from_array(a, chunks=16)
    h = bi.histogram(img, exclude=[0, 255])
    assert int(h.sum()) == _valid(a, [0, 255]).sum()
    out = bi.equalize_hist(img, exclude=[0, 255]).compute()
    _assert_equalized(out.values, a, exclude=[0, 255])
    f = _float_with_nan_border()
    _assert_equalized(bi.equalize_hist(bi.from_array(f, chunks=16), bins=32).values, f, bins=32)


# ---------------------------------------------------------------- issue 14
def _edge_hugging_float32(rng_values, bins, seed=0) -> np.ndarray:
    """float32 values on and next to both the float32 and the float64 bin edges of the range."""
    rng = np.random.default_rng(seed)
    lo, hi = float(rng_values[0]), float(rng_values[1])
    edges = np.concatenate(
        [np.linspace(lo, hi, bins + 1), np.linspace(np.float32(lo), np.float32(hi), bins + 1)]
    ).astype(np.float32)
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    vals = np.concatenate([near, rng.uniform(lo - 0.1, hi + 0.1, 400 - near.size)]).astype("f4")
    return rng.permutation(vals).reshape(20, 20, 1)


@pytest.mark.parametrize("chunks", [7, {"y": 20, "x": 3}, -1])
@pytest.mark.parametrize("range_dtype", ["float64", "float32"])
def test_numpy_array_range_keeps_its_dtype(range_dtype, chunks):
    """A numpy range keeps its dtype, so edges and counts are numpy's exactly (issue 14)."""
    rng_values = np.array([0.1, 0.7], dtype=range_dtype)
    for bins in (3, 7, 10):
        a = _edge_hugging_float32(rng_values, bins)
        h = bi.histogram(bi.from_array(a, chunks=chunks), bins=bins, range=rng_values)
        ref, edges = np.histogram(a, bins=bins, range=rng_values)
        np.testing.assert_array_equal(h.isel(band=0).values, ref)
        np.testing.assert_array_equal(h["bin_lower"].values, edges[:-1].astype(np.float64))
        np.testing.assert_array_equal(h["bin_upper"].values, edges[1:].astype(np.float64))
        # Python floats and numpy scalars are passed on as numpy receives them too
        for pair in ((0.1, 0.7), (np.float64(0.1), np.float32(0.7)), [0, np.float32(0.7)]):
            got = bi.histogram(bi.from_array(a, chunks=chunks), bins=bins, range=pair)
            ref, edges = np.histogram(a, bins=bins, range=pair)
            np.testing.assert_array_equal(got.isel(band=0).values, ref)
            np.testing.assert_array_equal(got["bin_upper"].values, edges[1:].astype(np.float64))


@pytest.mark.parametrize("bins", [2**24 + 1, 2**40])
def test_absurd_bin_count_is_refused_up_front(bins):
    img = bi.from_array(_float_with_nan_border(), chunks=16)
    with raise_if_dask_computes(), pytest.raises(ValueError, match=r"bins must .*16777216"):
        bi.histogram(img, bins=bins)
    with raise_if_dask_computes(), pytest.raises(ValueError, match=r"bins must .*16777216"):
        bi.equalize_hist(img, bins=bins)
    with raise_if_dask_computes(), pytest.raises(ValueError, match=r"bins must .*16777216"):
        bi.histogram(img, bins=np.arange(2**24 + 2.0))


@pytest.mark.parametrize("chunks", [5, {"y": 48, "x": 7}, -1])
def test_equalize_per_band_ranges_match_skimage(chunks):
    a = _float_with_nan_border((48, 40, 3), seed=7)
    a[..., 1] = a[..., 1] * 100 - 50
    a[..., 2] = a[..., 2] * 1e-3
    for bins in (5, 256):
        out = bi.equalize_hist(bi.from_array(a, chunks=chunks), bins=bins).values
        _assert_equalized(out, a, bins=bins)


def test_plot_histogram_refuses_an_existing_file(tmp_path):
    h = bi.histogram(bi.from_array(_uint8_with_border(), chunks=16), exclude=[0, 255])
    path = tmp_path / "hist.png"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        bi.plot_histogram(h, path)
    assert path.read_bytes() == b"precious"
    assert bi.plot_histogram(h, path, overwrite=True) == path
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hist.png"]  # no temporary file left
    with pytest.raises(IsADirectoryError, match="path"):
        bi.plot_histogram(h, tmp_path, overwrite=True)


def test_plot_histogram_draws_each_bands_own_bins(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    drawn = []
    original = Axes.stairs

    def spy(self, values, edges, **kwargs):
        drawn.append((np.asarray(values), np.asarray(edges)))
        return original(self, values, edges, **kwargs)

    monkeypatch.setattr(Axes, "stairs", spy)
    a = _float_with_nan_border()
    a[..., 1] += 100
    for range_ in (None, "shared"):
        drawn.clear()
        h = bi.histogram(bi.from_array(a, chunks=16), bins=8, range=range_)
        bi.plot_histogram(h, tmp_path / f"{range_}.png")
        assert len(drawn) == 2
        for b, (values, edges) in enumerate(drawn):
            band = a[..., b]
            rng = None if range_ is None else (np.nanmin(a), np.nanmax(a))
            ref, ref_edges = np.histogram(band[_valid(band)], bins=8, range=rng)
            np.testing.assert_array_equal(values, ref)
            np.testing.assert_array_equal(edges, ref_edges.astype(np.float64))


# ---------------------------------------------------------------- hostile pass (issue 14)
@pytest.mark.parametrize("chunks", [1, 2, -1])
def test_uint64_and_int64_extremes_count_exactly(chunks):
    top = np.array([[2**64 - 1, 2**64 - 2, 2**64 - 2, 2**64 - 4]], dtype="u8")
    h = bi.histogram(bi.from_array(top, chunks=chunks))
    assert h["bin"].values.tolist() == [2**64 - 4, 2**64 - 3, 2**64 - 2, 2**64 - 1]
    assert h.values.tolist() == [[1, 0, 2, 1]]
    out = bi.equalize_hist(bi.from_array(top, chunks=chunks)).values.ravel()
    np.testing.assert_allclose(out, [1.0, 0.75, 0.75, 0.25])
    bottom = np.array([[-(2**63), -(2**63) + 2, 9]], dtype="i8")
    h = bi.histogram(bi.from_array(bottom, chunks=chunks), exclude=9)
    assert h.values.tolist() == [[1, 0, 1]] and h["bin"].values[0] == -(2**63)
    out = bi.equalize_hist(bi.from_array(bottom, chunks=chunks), exclude=9).values.ravel()
    np.testing.assert_array_equal(out, [0.5, 1.0, 9.0])


@pytest.mark.parametrize(
    ("values", "kwargs"),
    [
        ([1.0, np.nextafter(1.0, 2.0)], {"bins": 4}),  # narrower than 4 float64 steps
        ([-3.4e38, 0.0, 3.4e38], {"bins": 2}),  # max - min overflows float32
    ],
)
def test_ranges_numpy_cannot_bin_are_refused_by_name(values, kwargs):
    a = np.array([values], dtype="float32" if abs(values[0]) > 1e30 else "float64")
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="Too many bins"):
        np.histogram(a, **kwargs)  # numpy refuses too, with a less helpful message
    img = bi.from_array(a, chunks=1).assign_coords(band=["nir"])
    for func in (bi.histogram, bi.equalize_hist):
        with raise_if_dask_computes(max_computes=1):  # the range pass only: no counting
            with pytest.raises(ValueError, match=r"bins=\d+ equal-width bins .* band='nir'"):
                func(img, **kwargs)
    with raise_if_dask_computes(), pytest.raises(ValueError, match=r"bins=3 .* over range"):
        bi.histogram(bi.from_array(_float_with_nan_border()), bins=3, range=(-1e308, 1e308))


def test_too_many_histograms_refused_before_compute():
    big = bi.from_array(da.zeros((1000, 1000, 2), dtype="float32", chunks=500))
    with raise_if_dask_computes(), pytest.raises(ValueError, match=r"1000000 histograms .* dims="):
        bi.histogram(big, dims="band")  # one 256-bin histogram per pixel
    small = bi.from_array(da.zeros((100, 100, 2), dtype="uint16", chunks=50))
    with raise_if_dask_computes(), pytest.raises(ValueError, match="65536 bins"):
        bi.equalize_hist(small, dims="band")


@pytest.mark.parametrize(
    ("func", "kwargs", "exc", "match"),
    [
        (bi.histogram, {"bins": ["0", "1"]}, TypeError, "bins edges must be numbers"),
        (bi.histogram, {"bins": [0.0, True]}, TypeError, "bins edges must be numbers"),
        (bi.histogram, {"bins": [[0.0, 1.0], [2.0]]}, TypeError, "bins edges must be numbers"),
        (bi.histogram, {"range": "auto"}, ValueError, "range must be None, 'shared'"),
        (bi.histogram, {"range": np.array(1.0)}, TypeError, "range must be"),
        (bi.histogram, {"range": (0, 2**2000)}, ValueError, "range must be finite"),
        (bi.equalize_hist, {"out_range": (-1e308, 1e308)}, ValueError, "finite max - min"),
        (bi.equalize_hist, {"out_range": (0, 2**2000)}, ValueError, "out_range must be finite"),
    ],
)
def test_more_bad_arguments_are_named(func, kwargs, exc, match):
    img = bi.from_array(_float_with_nan_border(), chunks=16)
    with raise_if_dask_computes(), pytest.raises(exc, match=match):
        func(img, **kwargs)


def test_odd_exclusions_and_edges():
    a = _float_with_nan_border()
    ok = _valid(a)
    h = bi.histogram(bi.from_array(a, chunks=7), bins=3, exclude=[2**2000, np.nan, -1e300])
    for b in range(2):
        np.testing.assert_array_equal(
            h.isel(band=b).values, np.histogram(a[..., b][ok[..., b]], 3)[0]
        )
    with pytest.warns(bi.BigimgWarning, match="no valid pixels at band=0; band=1 inside bins"):
        h = bi.histogram(bi.from_array(a), bins=[50.0, 60.0])
    np.testing.assert_array_equal(h.values, [[0], [0]])
    with pytest.raises(ValueError, match="no valid pixels at band=0 inside bins"):
        bi.equalize_hist(bi.from_array(a), bins=[50.0, 60.0])  # a CDF needs a pixel
    many = np.linspace(0, 1, 5000)  # a long exclude list is one sorted lookup, not 5000 passes
    h = bi.histogram(bi.from_array(a, chunks=16), bins=4, exclude=many)
    assert int(h.sum()) == (ok & ~np.isin(a, many.astype("float32"))).sum()


def test_plot_histogram_overwrite_must_be_a_bool(tmp_path):
    h = bi.histogram(bi.from_array(_float_with_nan_border()), bins=4)
    (tmp_path / "h.png").write_bytes(b"keep")
    with pytest.raises(TypeError, match="overwrite must be a bool"):
        bi.plot_histogram(h, tmp_path / "h.png", overwrite="no")
    assert (tmp_path / "h.png").read_bytes() == b"keep"
    with pytest.raises(ValueError, match="at least one bin"):
        bi.plot_histogram(h.isel(bin=slice(0, 0)), tmp_path / "empty.png")


# ---------------------------------------------------------------- integer output (dtype=)
def _as_int(ref: np.ndarray, dtype: str) -> np.ndarray:
    return (skimage.util.img_as_ubyte if dtype == "uint8" else skimage.util.img_as_uint)(ref)


@pytest.mark.parametrize("dtype", ["uint8", "uint16"])
@pytest.mark.parametrize("src", ["float32", "float64", "uint8", "uint16", "int32"])
def test_integer_output_is_img_as_ubyte_of_the_float_result(dtype, src):
    """Every pixel: img_as_ubyte/img_as_uint of skimage's equalization; NaN -> nodata, exclude kept."""
    import skimage.util

    rng = np.random.default_rng(3)
    if src.startswith("float"):
        a = rng.gamma(2.0, 30.0, (37, 29, 2)).astype(src)
        a[:5] = np.nan
        a[-1, -3:] = 0
    else:
        a = rng.integers(0, 250, (37, 29, 2)).astype(src)
    img = bi.from_array(a, chunks={"y": 10, "x": 7})
    out = bi.equalize_hist(img, exclude=[0], dtype=dtype, nodata=7).values
    assert out.dtype == dtype
    floats = bi.equalize_hist(img, exclude=[0]).values
    for b in range(a.shape[-1]):
        band = a[..., b]
        ok = _valid(band, [0])
        ref = _as_int(
            np.where(ok, skimage.exposure.equalize_hist(band, nbins=256, mask=ok), 0), dtype
        )
        same = out[..., b][ok] == ref[ok]
        # skimage's float result differs from bigimg's by < 1e-6: a pixel may round the other way
        near = np.abs(out[..., b][ok].astype(int) - ref[ok].astype(int)) <= 1
        assert near.all() and same.mean() > 0.99
        np.testing.assert_array_equal(out[..., b][ok], _as_int(floats[..., b][ok], dtype))
        assert (out[..., b][np.isnan(band)] == 7).all()
        assert (out[..., b][band == 0] == 0).all()


def test_integer_output_refuses_before_any_compute():
    img = bi.from_array(_float_with_nan_border(), chunks=16)
    with raise_if_dask_computes():
        with pytest.raises(ValueError, match="nodata"):
            bi.equalize_hist(img, dtype="uint8")
        with pytest.raises(ValueError, match="nodata"):
            bi.equalize_hist(img, dtype="uint8", nodata=256)
        with pytest.raises(ValueError, match="nodata"):
            bi.equalize_hist(img, nodata=0)  # no dtype: a float result keeps NaN
        with pytest.raises(ValueError, match="dtype"):
            bi.equalize_hist(img, dtype="int8", nodata=0)
        with pytest.raises(ValueError, match="out_range"):
            bi.equalize_hist(img, dtype="uint8", nodata=0, out_range=(0, 255))
        with pytest.raises(ValueError, match="exclude"):
            bi.equalize_hist(img, dtype="uint8", nodata=0, exclude=[-1])
    ints = bi.from_array(_uint8_with_border(), chunks=16)  # no NaN possible: no nodata needed
    out = bi.equalize_hist(ints, dtype="uint16", exclude=[0, 255])
    assert out.dtype == np.uint16
    assert out.bigimg.equalize_hist(dtype="uint8", exclude=[0, 255]).dtype == np.uint8  # accessor


def test_integer_output_from_a_config(tmp_path):
    from bigimg.demo import synthetic_mosaic

    mosaic = synthetic_mosaic(128, chunks=64)
    bi.to_zarr(mosaic, tmp_path / "mosaic.zarr")
    (tmp_path / "eq.toml").write_text(
        '[input]\npath = "mosaic.zarr"\nnodata = 0\n\n'
        '[[steps]]\nop = "equalize_hist"\nexclude = [255]\ndtype = "uint8"\nnodata = 0\n\n'
        '[output]\npath = "out.zarr"\n'
    )
    pipe = load_config(tmp_path / "eq.toml")
    pipe.run()
    out = xr.open_zarr(pipe.output.path)["image"].transpose("y", "x", "band")
    assert out.dtype == np.uint8
    src = bi.open_image(tmp_path / "mosaic.zarr", nodata=0)
    ref = bi.equalize_hist(src, exclude=[255], dtype="uint8", nodata=0)
    np.testing.assert_array_equal(out.values, ref.values)
    assert (out.values[np.isnan(src.values)] == 0).all()
    (tmp_path / "bad.toml").write_text(
        (tmp_path / "eq.toml")
        .read_text()
        .replace("nodata = 0\n\n[output]", "\n[output]")
        .replace("out.zarr", "bad.zarr")
    )
    with pytest.raises(ValueError, match="nodata"):
        load_config(tmp_path / "bad.toml").run()
