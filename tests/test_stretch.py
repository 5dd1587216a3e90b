"""bigimg.stretch.gaussian_stretch against scipy.stats.norm.cdf."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.stats
import skimage.data
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import bigimg as bi
from bigimg.stretch import _stretch_kernel, gaussian_stretch
from tests.helpers import raise_if_dask_computes


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def _image(seed=0, dtype="float32"):
    rng = np.random.default_rng(seed)
    a = rng.normal([10.0, -3.0, 100.0], [2.0, 0.5, 30.0], (40, 36, 3)).astype(dtype)
    a[:5] = np.nan
    a[20, 20, 1] = np.nan
    return a


def _reference(a, mean, std, n=1.0, lo=0.0, hi=1.0):
    return lo + (hi - lo) * scipy.stats.norm.cdf(a.astype(np.float64), loc=mean, scale=n * std)


def test_kernel_matches_norm_cdf():
    v = np.linspace(-5, 5, 101)
    got = _stretch_kernel(v, np.float64(0.5), np.float64(2.0), n=1.5, lo=-1, hi=3, dtype=np.float64)
    np.testing.assert_allclose(got, _reference(v, 0.5, 2.0, 1.5, -1, 3), rtol=1e-14)


def test_default_stats_are_per_band_nan_mean_std():
    a = _image()
    out = gaussian_stretch(bi.from_array(a, chunks=16), n=2.0, out_range=(-1.0, 1.0))
    mean, std = (
        np.nanmean(a.astype(np.float64), axis=(0, 1)),
        np.nanstd(a.astype(np.float64), axis=(0, 1)),
    )
    ref = _reference(a, mean, std, 2.0, -1.0, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(out.values), np.isnan(a))
    np.testing.assert_allclose(out.values, ref, rtol=1e-6, atol=1e-7)


def test_real_image_float64_and_given_sequences():
    a = skimage.data.astronaut().astype("float64")
    img = bi.from_array(a, chunks={"y": 200, "x": 300})
    out = gaussian_stretch(img, mean=[120.0, 100.0, 90.0], std=[60.0, 50.0, 40.0], n=1.5)
    assert out.dtype == np.float64
    ref = _reference(a, np.array([120.0, 100.0, 90.0]), np.array([60.0, 50.0, 40.0]), 1.5)
    np.testing.assert_allclose(out.values, ref, rtol=1e-14)


def test_scalar_and_dataarray_stats_and_int_input():
    a = skimage.data.camera()[:64, :80]
    img = bi.from_array(a, chunks=32)
    out = gaussian_stretch(img, mean=128.0, std=xr.DataArray([50.0], dims="band"))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.values[..., 0], _reference(a, 128.0, 50.0), rtol=1e-6, atol=1e-7)


def test_one_given_one_estimated():
    a = _image(1)
    out = gaussian_stretch(bi.from_array(a, chunks=16), mean=0.0)
    std = np.nanstd(a.astype(np.float64), axis=(0, 1))
    np.testing.assert_allclose(out.values, _reference(a, 0.0, std), rtol=1e-6, atol=1e-7)


def test_stack_stats_over_all_images():
    a = np.stack([_image(2), _image(3)])
    img = bi.from_array(a, chunks={"image": 1, "y": 16, "x": 16}).assign_coords(
        band=["r", "g", "b"]
    )
    out = gaussian_stretch(img)
    mean = np.nanmean(a.astype(np.float64), axis=(0, 1, 2))
    std = np.nanstd(a.astype(np.float64), axis=(0, 1, 2))
    np.testing.assert_allclose(out.values, _reference(a, mean, std), rtol=1e-6, atol=1e-7)
    assert out.dims == img.dims and list(out.band.values) == ["r", "g", "b"]


@settings(deadline=None)
@given(cy=st.integers(1, 40), cx=st.integers(1, 36))
def test_chunk_invariance(cy, cx):
    a = _image(4)
    whole = gaussian_stretch(bi.from_array(a, chunks={"y": -1, "x": -1})).values
    out = gaussian_stretch(bi.from_array(a, chunks={"y": cy, "x": cx})).values
    np.testing.assert_allclose(out, whole, rtol=1e-6, atol=1e-7)


def test_lazy_and_memory_bound_graph():
    img = bi.from_array(_image(), chunks=16).assign_attrs(units="dn")
    with raise_if_dask_computes():
        out = gaussian_stretch(img)
        out2 = img.bigimg.gaussian_stretch(
            mean=xr.DataArray(da.zeros(3, chunks=3), dims="band"), std=1.0
        )
    assert isinstance(out.data, da.Array) and out.chunks == img.chunks
    assert out.attrs == img.attrs and out2.dims == img.dims


def test_all_nan_band_raises_at_compute_naming_it():
    a = _image()
    a[..., 1] = np.nan
    img = bi.from_array(a, chunks=16).assign_coords(band=["r", "g", "b"])
    out = gaussian_stretch(img)  # lazy: cannot know yet
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="band 'g' has no valid"):
        out.compute()


def test_constant_band_raises_at_compute():
    a = _image()
    a[..., 2] = 4.0
    with pytest.raises(ValueError, match="band 2 has std 0.0"):
        gaussian_stretch(bi.from_array(a, chunks=16)).compute()


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(std=0.0), ValueError, "std must be > 0"),
        (dict(std=[1.0, -1.0, 2.0]), ValueError, "std must be > 0"),
        (dict(std=xr.DataArray([1.0, 0.0, 1.0], dims="band")), ValueError, "std must be > 0"),
        (dict(mean=np.nan), ValueError, "mean must be finite"),
        (dict(mean=[1.0, 2.0]), ValueError, "mean must have one value per band"),
        (dict(mean=xr.DataArray([1.0], dims="z")), ValueError, r"mean has dim\(s\) \['z'\]"),
        (dict(mean="a"), TypeError, "mean"),
        (dict(n=0), ValueError, "n must be"),
        (dict(n=-1.0), ValueError, "n must be"),
        (dict(n="2"), TypeError, "n must be"),
        (dict(out_range=(0, np.inf)), ValueError, "out_range"),
        (dict(out_range=1.0), TypeError, "out_range"),
    ],
)
def test_validation_before_compute(kwargs, exc, match):
    img = bi.from_array(_image(), chunks=16)
    with raise_if_dask_computes(), pytest.raises(exc, match=match):
        gaussian_stretch(img, **kwargs)


def test_on_local_cluster(client):
    a = _image(5)
    out = gaussian_stretch(bi.from_array(a, chunks=16)).compute()
    mean, std = (
        np.nanmean(a.astype(np.float64), axis=(0, 1)),
        np.nanstd(a.astype(np.float64), axis=(0, 1)),
    )
    np.testing.assert_allclose(out.values, _reference(a, mean, std), rtol=1e-6, atol=1e-7)


def test_pipeline_op_params():
    from bigimg.pipeline import ConfigError, parse_config

    cfg = {
        "input": {"path": "x.zarr"},
        "steps": [{"op": "gaussian_stretch", "mean": [1, 2, 3], "n": 2}],
        "output": {"path": "o.zarr"},
    }
    pipe = parse_config(cfg, base=__import__("pathlib").Path("."))
    assert dict(pipe.steps[0].params)["mean"] == [1.0, 2.0, 3.0]
    cfg["steps"][0]["bogus"] = 1
    with pytest.raises(ConfigError, match="bogus"):
        parse_config(cfg, base=__import__("pathlib").Path("."))


# ---------------------------------------------------------------- issue 14: non-finite values
@pytest.mark.parametrize("bad", [np.inf, -np.inf])
@pytest.mark.parametrize("chunks", [16, 7, {"y": -1, "x": -1}])
def test_infinite_value_raises_naming_band_and_fix(bad, chunks):
    """One inf made every pixel NaN under the label "no valid pixel": now a clear error."""
    a = _image()
    a[30, 12, 2] = bad
    img = bi.from_array(a, chunks=chunks).assign_coords(band=["r", "g", "b"])
    out = gaussian_stretch(img)  # lazy: cannot know yet
    with pytest.raises(ValueError, match=r"band 'b' holds 1 infinite value.*np\.isfinite"):
        out.compute()


def test_infinities_masked_as_advised_match_scipy():
    a = _image()
    a[30, 12, 2] = np.inf
    a[31, 3, 0] = -np.inf
    img = bi.from_array(a, chunks=16)
    out = gaussian_stretch(img.where(np.isfinite(img))).values
    clean = np.where(np.isfinite(a), a, np.nan).astype(np.float64)
    mean, std = np.nanmean(clean, axis=(0, 1)), np.nanstd(clean, axis=(0, 1))
    np.testing.assert_allclose(out, _reference(clean, mean, std), rtol=1e-6, atol=1e-7)


def test_infinities_with_given_stats_map_to_the_range_ends():
    a = _image()
    a[30, 12, 2], a[31, 3, 0] = np.inf, -np.inf
    out = gaussian_stretch(
        bi.from_array(a, chunks=16), mean=0.0, std=1.0, out_range=(-2.0, 5.0)
    ).values
    assert out[30, 12, 2] == 5.0 and out[31, 3, 0] == -2.0
    np.testing.assert_allclose(out, _reference(a, 0.0, 1.0, 1.0, -2.0, 5.0), rtol=1e-6, atol=1e-6)


def test_all_nan_band_message_is_about_nan_only():
    a = _image()
    a[..., 0] = np.nan
    img = bi.from_array(a, chunks=16)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="band 0 has no valid"):
        gaussian_stretch(img).compute()


def test_overflowing_moments_raise_naming_band():
    a = np.random.default_rng(0).random((20, 20, 2)) * 1e200
    img = bi.from_array(a, chunks=8)
    with pytest.warns(RuntimeWarning), pytest.raises(ValueError, match="band 0 .*too large"):
        gaussian_stretch(img).compute()


# ---------------------------------------------------------------- hostile pass (issue 14)
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        (dict(out_range="01"), TypeError, "out_range"),
        (dict(mean=["a", "b", "c"]), TypeError, "mean must hold numbers"),
        (dict(std=xr.DataArray([1.0, 2.0], dims="band")), ValueError, "std has 2 value"),
        (
            dict(mean=xr.DataArray([1.0, 2, 3], dims="band", coords={"band": ["r", "g", "x"]})),
            ValueError,
            "mean's 'band' labels",
        ),
        (dict(mean=xr.DataArray(["a", "b", "c"], dims="band")), TypeError, "mean must hold"),
    ],
)
def test_hostile_options_named_before_compute(kwargs, exc, match):
    img = bi.from_array(_image(), chunks=16).assign_coords(band=["r", "g", "b"])
    with raise_if_dask_computes(), pytest.raises(exc, match=match):
        gaussian_stretch(img, **kwargs)


def test_complex_image_refused():
    with pytest.raises(TypeError, match="img must hold real numbers.*complex"):
        gaussian_stretch(bi.from_array(_image().astype(complex), chunks=16))


def test_zero_dim_array_stats_are_scalars():
    a = _image()
    out = gaussian_stretch(bi.from_array(a, chunks=16), mean=np.array(1.0), std=np.array(2.0))
    np.testing.assert_allclose(out.values, _reference(a, 1.0, 2.0), rtol=1e-6, atol=1e-7)


def test_lazy_given_std_checked_when_computed():
    std = xr.DataArray(da.from_array(np.array([1.0, 0.0, 1.0])), dims="band")
    out = gaussian_stretch(bi.from_array(_image(), chunks=16), mean=0.0, std=std)
    with pytest.raises(ValueError, match="std must be > 0"):
        out.compute()


def test_tiny_std_saturates_without_warnings():
    import warnings

    a = _image()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = gaussian_stretch(bi.from_array(a, chunks=16), mean=0.0, std=1e-320).values
    np.testing.assert_array_equal(out, np.where(np.isnan(a), np.nan, (a > 0).astype("float32")))


def test_reversed_out_range_inverts():
    a = _image()
    img = bi.from_array(a, chunks=16)
    up = gaussian_stretch(img, mean=10.0, std=2.0).values
    down = gaussian_stretch(img, mean=10.0, std=2.0, out_range=(1.0, 0.0)).values
    np.testing.assert_allclose(up + down, np.where(np.isnan(a), np.nan, 1.0), atol=1e-6)
