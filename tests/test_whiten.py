"""ZCA whitening and per-image standardization against numpy and scikit-learn."""

from __future__ import annotations

import tomllib
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import bigimg as bi
from bigimg.pipeline import parse_config
from bigimg.whiten import (
    _chunk_moments,
    _merge_moments,
    _standardize_block,
    _whiten_block,
)
from tests.helpers import raise_if_dask_computes

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
SHAPE = (90, 4, 3, 2)  # image, y, x, band: 24 features


# ---------------------------------------------------------------- helpers
def correlated(shape, *, seed=0, scale=1.0, offset=0.0, dtype="float64"):
    """Samples with a random full-rank feature covariance (not diagonal)."""
    rng = np.random.default_rng(seed)
    n, f = shape[0], int(np.prod(shape[1:]))
    mix = rng.normal(size=(f, f)) + 2 * np.eye(f)
    x = rng.normal(size=(n, f)) @ mix * scale + offset + rng.uniform(-1, 1, f) * scale
    return x.reshape(shape).astype(dtype)


def numpy_zca(x2d, eps):
    """The float64 two-pass in-memory reference."""
    x = np.asarray(x2d, dtype=np.float64)
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (len(x) - 1)
    evals, evecs = np.linalg.eigh(cov)
    w = evecs @ np.diag(1 / np.sqrt(evals + eps)) @ evecs.T
    return mean, cov, evals[::-1], w


def model_cov(zca):
    return zca.components_.T @ np.diag(zca.explained_variance_) @ zca.components_


def symmetric(upper):
    """The symmetric matrix whose upper triangle ``upper`` holds (M2's lower one is garbage)."""
    return np.triu(upper) + np.triu(upper, 1).T


def rel(a, b):
    return np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max()


@pytest.fixture(scope="module")
def data():
    return correlated(SHAPE)


# ---------------------------------------------------------------- kernels
def test_chunk_moments_and_merge_match_numpy():
    x = correlated((50, 6, 1, 1), seed=3).reshape(50, 6)
    parts = [_chunk_moments(x[a:b]) for a, b in [(0, 7), (7, 8), (8, 50)]]
    n, mean, m2 = _merge_moments(parts)
    assert n == 50
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(symmetric(m2) / 49, np.cov(x, rowvar=False), rtol=1e-10)
    # float32 rows beyond one BLAS block (8192 rows) accumulate in float64
    big = correlated((20000, 6, 1, 1), seed=4, scale=30, offset=128).reshape(20000, 6)
    n3, mean3, m23 = _chunk_moments(big.astype(np.float32))
    ref = np.cov(big.astype(np.float32).astype(np.float64), rowvar=False)
    assert n3 == 20000 and rel(symmetric(m23) / 19999, ref) < 1e-6
    # an empty part (all NaN rows omitted) is neutral
    empty = _chunk_moments(np.full((3, 6), np.nan), nan_policy="omit")
    assert empty[0] == 0
    parts = [_chunk_moments(x[a:b]) for a, b in [(0, 7), (7, 8), (8, 50)]]  # merges consume them
    n2, mean2, m22 = _merge_moments([empty, *parts])
    assert n2 == 50 and np.allclose(mean2, mean) and np.allclose(m22, m2)
    # parts received read-only (as from another worker) are merged into a copy
    parts = [_chunk_moments(x[a:b]) for a, b in [(0, 7), (7, 8), (8, 50)]]
    for part in parts:
        part[2].flags.writeable = False
    first = parts[0][2].copy()
    n4, _, m24 = _merge_moments(parts)
    assert n4 == 50 and np.allclose(m24, m2) and np.array_equal(parts[0][2], first)


def test_whiten_block_matches_numpy_across_row_slices():
    # 20,000 rows: three BLAS slices of at most 8192 rows, centred in one scratch array
    x = correlated((20000, 6, 1, 1), seed=5, scale=30, offset=128).reshape(20000, 6)
    mean, _, _, w = numpy_zca(x, 1e-3)
    ref = (x - mean) @ w
    for dtype, tol in [(np.float32, 1e-5), (np.float64, 1e-12)]:
        got = _whiten_block(x.astype(dtype), mean.astype(dtype), w.astype(dtype))
        assert got.dtype == dtype and rel(got, ref) < tol
    nan_row = x[:3].copy()
    nan_row[1, 2] = np.nan
    got = _whiten_block(nan_row, mean, w)
    assert np.isnan(got[1]).all() and np.isfinite(got[[0, 2]]).all()


# ---------------------------------------------------------------- ZCA vs numpy
@pytest.mark.parametrize("chunks", [{"image": 90}, {"image": 7}, {"image": 20, "y": 1, "x": 2}])
def test_fit_matches_numpy(data, chunks):
    eps = 1e-3
    stack = bi.from_array(data, chunks=chunks)
    zca = bi.ZCA(eps).fit(stack)
    mean, cov, evals, w = numpy_zca(data.reshape(SHAPE[0], -1), eps)
    np.testing.assert_allclose(zca.mean_, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(model_cov(zca), cov, rtol=1e-8, atol=1e-10 * np.abs(cov).max())
    np.testing.assert_allclose(zca.explained_variance_, evals, rtol=1e-8)
    np.testing.assert_allclose(zca.whitening_, w, rtol=1e-7, atol=1e-9 * np.abs(w).max())
    assert zca.n_samples_ == SHAPE[0]
    assert zca.feature_dims_ == ("y", "x", "band") and zca.feature_shape_ == (4, 3, 2)
    assert np.all(np.diff(zca.explained_variance_) <= 0)
    # rows of components_ are eigenvectors: C u = λ u
    np.testing.assert_allclose(
        cov @ zca.components_[0], evals[0] * zca.components_[0], rtol=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_fit_large_means_within_1e5_of_float64_two_pass(dtype):
    """0-255 data with a mean of ~128: one-pass chunked moments stay accurate."""
    rng = np.random.default_rng(7)
    f = 48
    x = rng.normal(size=(3000, f)) @ (rng.normal(size=(f, f)) / 5 + np.eye(f)) * 20 + 128
    x = np.clip(np.round(x), 0, 255).astype(dtype).reshape(3000, 4, 4, 3)
    zca = bi.ZCA().fit(bi.from_array(x, chunks={"image": 333}))
    mean, cov, evals, _ = numpy_zca(x.reshape(3000, -1), 1e-5)
    assert rel(zca.mean_, mean) < 1e-10
    assert rel(model_cov(zca), cov) < 1e-5
    assert rel(zca.explained_variance_, evals) < 1e-5
    assert zca.transform(bi.from_array(x)).dtype == np.float32


def test_matches_sklearn_pca_whiten(data):
    from sklearn.decomposition import PCA

    x2d = data.reshape(SHAPE[0], -1)
    pca = PCA(whiten=True).fit(x2d)
    zca = bi.ZCA(0.0).fit(bi.from_array(data, chunks={"image": 25}))
    np.testing.assert_allclose(zca.explained_variance_, pca.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(zca.mean_, pca.mean_, rtol=1e-10)
    # eigenvectors match up to sign
    signs = np.sign(np.sum(zca.components_ * pca.components_, axis=1))
    np.testing.assert_allclose(zca.components_ * signs[:, None], pca.components_, atol=1e-7)
    expected = pca.transform(x2d) @ pca.components_  # PCA whitening rotated back
    out = zca.transform(bi.from_array(data.astype("float64"))).values.reshape(SHAPE[0], -1)
    np.testing.assert_allclose(out, expected, rtol=1e-7, atol=1e-9)


def test_whitened_covariance_is_identity_and_inverse_round_trips(data):
    stack = bi.from_array(data.astype("float32"), chunks={"image": 16})
    zca = bi.ZCA(1e-8)
    white = zca.fit_transform(stack)
    assert white.dtype == np.float32 and white.dims == stack.dims
    flat = white.values.reshape(SHAPE[0], -1).astype(np.float64)
    np.testing.assert_allclose(flat.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(flat, rowvar=False), np.eye(flat.shape[1]), atol=2e-3)
    back = zca.inverse_transform(white)
    np.testing.assert_allclose(back.values, stack.values, atol=2e-3 * np.abs(data).max())


def test_float64_output_and_coords_attrs_survive(data):
    stack = bi.from_array(data, chunks={"image": 30}).assign_coords(
        image=np.arange(SHAPE[0]) * 10, band=["r", "g"]
    )
    stack.attrs["units"] = "counts"
    out = bi.ZCA().fit(stack).transform(stack)
    assert out.dtype == np.float64
    xr.testing.assert_identical(out.coords.to_dataset(), stack.coords.to_dataset())
    assert out.attrs == stack.attrs
    assert out.chunks[0] == stack.chunks[0]


def test_both_layouts_give_the_same_whitening(data):
    nhwc = bi.from_array(data, chunks={"image": 30})
    nchw = nhwc.transpose("image", "band", "y", "x")
    z_hwc = bi.ZCA(1e-3).fit(nhwc)
    z_chw = bi.ZCA(1e-3).fit(nchw)
    assert z_chw.feature_dims_ == ("band", "y", "x")
    # the same features, flattened in another order
    perm = np.arange(24).reshape(4, 3, 2).transpose(2, 0, 1).ravel()
    np.testing.assert_allclose(z_chw.mean_, z_hwc.mean_[perm], rtol=1e-12)
    np.testing.assert_allclose(
        z_chw.whitening_, z_hwc.whitening_[np.ix_(perm, perm)], rtol=1e-6, atol=1e-10
    )
    out_chw = z_hwc.transform(nchw)  # model fitted on the other layout
    assert out_chw.dims == ("image", "band", "y", "x")
    ref = z_hwc.transform(nhwc)
    np.testing.assert_allclose(
        out_chw.transpose(*nhwc.dims).values, ref.values, rtol=1e-6, atol=1e-9
    )
    np.testing.assert_allclose(z_chw.transform(nchw).values, out_chw.values, rtol=1e-6, atol=1e-9)


@settings(deadline=None)
@given(
    image_chunk=st.integers(1, 90),
    y_chunk=st.integers(1, 4),
    x_chunk=st.integers(1, 3),
    band_chunk=st.integers(1, 2),
)
def test_chunk_invariance(data, image_chunk, y_chunk, x_chunk, band_chunk):
    chunks = {"image": image_chunk, "y": y_chunk, "x": x_chunk, "band": band_chunk}
    stack = bi.from_array(data, chunks=chunks)
    zca = bi.ZCA(1e-3).fit(stack)
    mean, cov, _, w = numpy_zca(data.reshape(SHAPE[0], -1), 1e-3)
    assert rel(zca.mean_, mean) < 1e-10
    assert rel(model_cov(zca), cov) < 1e-10
    assert rel(zca.whitening_, w) < 1e-8
    out = zca.transform(stack).values.reshape(SHAPE[0], -1)
    expected = (data.reshape(SHAPE[0], -1) - mean) @ w
    assert rel(out, expected) < 1e-8


# ---------------------------------------------------------------- NaN
def test_nan_policy(data):
    bad = data.copy()
    bad[[3, 50], 1, 2, 0] = np.nan
    stack = bi.from_array(bad, chunks={"image": 20})
    with pytest.raises(ValueError, match=r"nan_policy='omit'.*") as info:
        bi.ZCA().fit(stack)
    assert "[3]" in str(info.value) or "[50]" in str(info.value)
    zca = bi.ZCA(1e-3, nan_policy="omit").fit(stack)
    keep = np.setdiff1d(np.arange(SHAPE[0]), [3, 50])
    mean, cov, _, w = numpy_zca(data[keep].reshape(len(keep), -1), 1e-3)
    assert zca.n_samples_ == len(keep)
    assert rel(zca.mean_, mean) < 1e-10 and rel(zca.whitening_, w) < 1e-8
    out = zca.transform(stack).values
    assert np.isnan(out[[3, 50]]).all() and not np.isnan(out[keep]).any()


# ---------------------------------------------------------------- laziness
def test_fit_is_one_compute_and_transforms_are_lazy(data):
    stack = bi.from_array(data, chunks={"image": 10, "y": 2})
    with raise_if_dask_computes(max_computes=1) as sched:
        zca = bi.ZCA().fit(stack)
    assert sched.total_computes == 1
    with raise_if_dask_computes():
        white = zca.transform(stack)
        back = zca.inverse_transform(white)
        std = bi.standardize(stack)
        std_chunked = bi.standardize(bi.from_array(data, chunks={"y": 2}))
    assert all(isinstance(o.data, da.Array) for o in (white, back, std, std_chunked))


# ---------------------------------------------------------------- save / load
def test_save_load_round_trip(tmp_path, data):
    stack = bi.from_array(data, chunks={"image": 45})
    zca = bi.ZCA(1e-4).fit(stack)
    path = tmp_path / "model.zca"  # written exactly here, no suffix added
    assert zca.save(path) == path and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zca"]
    with np.load(path, allow_pickle=False) as npz:  # no pickle inside
        assert set(npz.files) >= {"metadata", "mean", "whitening"}
    loaded = bi.ZCA.load(str(path))
    assert (loaded.eps, loaded.sample_dim, loaded.nan_policy) == (1e-4, "image", "raise")
    assert loaded.feature_dims_ == zca.feature_dims_ and loaded.feature_shape_ == (4, 3, 2)
    assert loaded.dtype_ == zca.dtype_ and loaded.n_samples_ == zca.n_samples_
    for name in ("mean_", "components_", "explained_variance_", "whitening_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(zca, name))
    np.testing.assert_array_equal(loaded.transform(stack).values, zca.transform(stack).values)
    np.testing.assert_allclose(
        loaded.inverse_transform(loaded.transform(stack)).values, data, atol=1e-8
    )


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        bi.ZCA.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a bigimg ZCA model"):
        bi.ZCA.load(tmp_path / "junk.npz")
    np.savez(tmp_path / "other.npz", metadata=np.array('{"format": "x"}'))
    with pytest.raises(ValueError, match="not a bigimg ZCA model"):
        bi.ZCA.load(tmp_path / "other.npz")


# ---------------------------------------------------------------- validation
def test_validation_errors_before_compute(data):
    with raise_if_dask_computes():
        too_many = bi.from_array(da.zeros((10, 128, 129, 1), chunks=(5, 128, 129, 1)))
        with pytest.raises(ValueError, match=r"16512 features.*at most 16384.*patches.*coarsen"):
            bi.ZCA().fit(too_many)
        with pytest.raises(ValueError, match="at least 2"):
            bi.ZCA().fit(bi.from_array(data[:1]))
        with pytest.raises(ValueError, match="sample_dim='time'"):
            bi.ZCA(sample_dim="time").fit(bi.from_array(data))
        with pytest.raises(ValueError, match="feature dims"):
            bi.ZCA().fit(xr.DataArray(np.zeros(5), dims="image"))
        with pytest.raises(TypeError, match="stack must be an xarray.DataArray"):
            bi.ZCA().fit(data)
        with pytest.raises(TypeError, match="real numbers"):
            bi.ZCA().fit(bi.from_array(data.astype(complex)))
        with pytest.raises(ValueError, match="not fitted"):
            bi.ZCA().transform(bi.from_array(data))
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        bi.ZCA(-1.0)
    with pytest.raises(TypeError, match="eps must be a number"):
        bi.ZCA("1")
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        bi.ZCA(nan_policy="propagate")
    with pytest.raises(TypeError, match="sample_dim must be a str"):
        bi.ZCA(sample_dim=0)
    with pytest.raises(ValueError, match="not fitted"):
        bi.ZCA().save("x.npz")


def test_transform_rejects_other_features(data):
    zca = bi.ZCA().fit(bi.from_array(data))
    with raise_if_dask_computes():
        with pytest.raises(
            ValueError, match=r"feature dims \{'y': 4, 'x': 2, 'band': 2\}.*fitted on"
        ):
            zca.transform(bi.from_array(data[:, :, :2]))
        with pytest.raises(ValueError, match="feature dims"):
            zca.transform(bi.from_array(data).rename(band="channel"))
        with pytest.raises(ValueError, match="sample_dim='image'"):
            zca.inverse_transform(bi.from_array(data[0]))


def test_singular_covariance_needs_eps():
    x = np.zeros((10, 2, 2, 1))
    x[:, 0, 0, 0] = np.arange(10)
    with pytest.raises(ValueError, match="singular.*eps > 0"):
        bi.ZCA(0.0).fit(bi.from_array(x))
    assert np.isfinite(bi.ZCA().fit(bi.from_array(x)).whitening_).all()


# ---------------------------------------------------------------- standardize
def tf_formula(img, axes):
    """tf.image.per_image_standardization, NaN-aware, in float64."""
    x = np.asarray(img, dtype=np.float64)
    n = np.sum(~np.isnan(x), axis=axes, keepdims=True)
    mean = np.nanmean(x, axis=axes, keepdims=True)
    std = np.nanstd(x, axis=axes, keepdims=True)  # population std (ddof=0)
    return (x - mean) / np.maximum(std, 1 / np.sqrt(n))


def test_standardize_float_with_nan_and_stack(data):
    x = data.astype("float32")
    x[2, 0, 0, 0] = np.nan
    out = bi.standardize(bi.from_array(x, chunks={"image": 7}))
    assert out.dtype == np.float32 and out.dims == ("image", "y", "x", "band")
    expected = tf_formula(x, (1, 2, 3))
    np.testing.assert_allclose(out.values, expected, rtol=1e-6, atol=1e-6)
    assert np.isnan(out.values[2, 0, 0, 0]) and np.isnan(out.values).sum() == 1
    flat = out.values.reshape(SHAPE[0], -1)
    np.testing.assert_allclose(np.nanmean(flat, axis=1), 0, atol=1e-6)
    np.testing.assert_allclose(np.nanstd(flat, axis=1), 1, atol=1e-5)


def test_standardize_uint8_constant_and_real_image():
    from skimage.data import astronaut

    img = astronaut()[:64, :80]  # uint8 (y, x, band)
    out = bi.standardize(bi.from_array(img, chunks={"y": 32, "x": 32}))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.values, tf_formula(img, (0, 1, 2)), rtol=1e-5, atol=1e-5)
    const = bi.standardize(bi.from_array(np.full((5, 6), 200, dtype=np.uint8)))
    np.testing.assert_array_equal(const.values, 0.0)
    per_band = bi.standardize(bi.from_array(img), dims=["y", "x"])
    np.testing.assert_allclose(per_band.values, tf_formula(img, (0, 1)), rtol=1e-5, atol=1e-5)
    all_nan = bi.standardize(bi.from_array(np.full((3, 3), np.nan)), dims="y")
    assert np.isnan(all_nan.values).all()


@settings(deadline=None)
@given(y_chunk=st.integers(1, 4), x_chunk=st.integers(1, 3), image_chunk=st.integers(1, 12))
def test_standardize_chunk_invariance(data, y_chunk, x_chunk, image_chunk):
    x = data[:12].copy()
    x[5, 1, 1, 1] = np.nan
    whole = bi.standardize(bi.from_array(x, chunks={"image": 12})).values
    chunks = {"image": image_chunk, "y": y_chunk, "x": x_chunk}
    out = bi.standardize(bi.from_array(x, chunks=chunks)).values
    np.testing.assert_allclose(out, whole, rtol=1e-6, atol=1e-6 * np.nanmax(np.abs(whole)))
    assert np.array_equal(np.isnan(out), np.isnan(whole))


def test_standardize_kernel_and_validation(data):
    block = np.array([[1.0, np.nan], [3.0, 5.0]])
    np.testing.assert_allclose(
        _standardize_block(block, (0, 1), np.dtype("float64")), tf_formula(block, (0, 1))
    )
    img = bi.from_array(data)
    with pytest.raises(ValueError, match=r"dims names dim\(s\) \['time'\]"):
        bi.standardize(img, dims=("y", "time"))
    with pytest.raises(ValueError, match="at least one dim"):
        bi.standardize(img, dims=())
    with pytest.raises(ValueError, match="must not repeat"):
        bi.standardize(img, dims=("y", "y"))
    with pytest.raises(TypeError, match="dims must be a str"):
        bi.standardize(img, dims=(1,))
    with pytest.raises(TypeError, match="obj must be an xarray.DataArray"):
        bi.standardize(data)


# ---------------------------------------------------------------- integration
def test_real_image_patches():
    """8x8 RGB patches of astronaut(): whitened patches are decorrelated."""
    from skimage.data import astronaut

    img = astronaut()[::2, ::2].astype(np.float32) / 255  # 256 x 256 x 3
    p = 8
    patches = img.reshape(256 // p, p, 256 // p, p, 3).transpose(0, 2, 1, 3, 4).reshape(-1, p, p, 3)
    stack = bi.from_array(patches, chunks={"image": 300})
    zca = bi.ZCA(1e-4).fit(stack)
    mean, cov, evals, w = numpy_zca(patches.reshape(len(patches), -1), 1e-4)
    assert rel(model_cov(zca), cov) < 1e-5
    assert rel(zca.whitening_, w) < 1e-3  # tiny eigenvalues amplify float32 rounding
    white = zca.transform(stack).values.reshape(len(patches), -1).astype(np.float64)
    expected = (patches.reshape(len(patches), -1) - mean) @ w
    assert rel(white, expected) < 1e-3
    wcov = np.cov(white, rowvar=False)
    reg = evals[::-1] / (evals[::-1] + 1e-4)  # eps shrinks the smallest components
    assert np.allclose(np.linalg.eigvalsh(wcov), np.sort(reg), atol=2e-3)


def test_on_local_cluster(client, data):
    stack = bi.from_array(data, chunks={"image": 20, "y": 2})
    zca = bi.ZCA(1e-3).fit(stack)
    mean, _, _, w = numpy_zca(data.reshape(SHAPE[0], -1), 1e-3)
    assert rel(zca.whitening_, w) < 1e-8
    out = zca.transform(stack).compute()
    assert rel(out.values.reshape(SHAPE[0], -1), (data.reshape(SHAPE[0], -1) - mean) @ w) < 1e-8
    with pytest.raises(ValueError, match="contain NaN"):
        bi.ZCA().fit(stack.where(stack.image != 33))
    std = bi.standardize(stack).compute()
    np.testing.assert_allclose(std.values, tf_formula(data, (1, 2, 3)), rtol=1e-6, atol=1e-6)


def test_accessor(data):
    stack = bi.from_array(data, chunks={"image": 30})
    zca = stack.bigimg.zca_fit(1e-3)
    assert isinstance(zca, bi.ZCA) and zca.is_fitted
    np.testing.assert_array_equal(
        stack.bigimg.standardize(dims=["y", "x"]).values,
        bi.standardize(stack, dims=["y", "x"]).values,
    )


def test_whiten_config(tmp_path):
    rng = np.random.default_rng(1)
    n = 600
    base = rng.normal(size=(n, 8, 8, 3)).cumsum(axis=1).cumsum(axis=2)  # correlated pixels
    arr = (base * 10 + 120).astype(np.float32)
    bi.to_zarr(bi.from_array(arr, chunks={"image": 100}), tmp_path / "cifar.zarr", progress=False)
    config = tomllib.loads((CONFIGS / "whiten.toml").read_text())
    pipe = parse_config(config, base=tmp_path)
    pipe.run(progress=False)
    out = bi.open_zarr(tmp_path / "cifar_white.zarr")
    assert out.dims == ("image", "y", "x", "band") and out.dtype == np.float32
    assert (tmp_path / "cifar_zca.npz").is_file()
    # reference: the standardize formula, then numpy ZCA with the config's eps
    std = tf_formula(arr, (1, 2, 3)).reshape(n, -1)
    mean, _, _, w = numpy_zca(std, 0.01)
    assert rel(out.values.reshape(n, -1), (std - mean) @ w) < 1e-4
    # the saved model re-applies through zca_transform
    again = parse_config(
        {
            "input": {"path": "cifar.zarr"},
            "steps": [{"op": "standardize"}, {"op": "zca_transform", "model": "cifar_zca.npz"}],
            "output": {"path": "again.zarr"},
        },
        base=tmp_path,
    ).build()
    np.testing.assert_allclose(again.values, out.values, rtol=1e-5, atol=1e-5)
    with pytest.raises(bi.ConfigError, match="nan_policy"):
        parse_config(
            {**config, "steps": [{"op": "zca_fit", "model": "m.npz", "nan_policy": "x"}]},
            base=tmp_path,
        )


# ---------------------------------------------------------------- issue 14: non-finite values
@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_fit_infinite_values_raise_naming_the_samples(data, value):
    bad = data.copy()
    bad[13, 1, 2, 0] = value
    bad[40, 0, 0, 1] = np.nan  # NaN too: the infinite values are reported first
    stack = bi.from_array(bad, chunks={"image": 5})
    with pytest.raises(ValueError, match=r"1 sample\(s\) along 'image' contain infinite.*\[13\]"):
        bi.ZCA().fit(stack)


def test_fit_omit_drops_infinite_samples_like_nan_and_transform_gives_nan(data):
    bad = data.copy()
    bad[13, 1, 2, 0] = np.inf
    bad[14, 0, 0, 0] = -np.inf
    bad[40, 0, 0, 1] = np.nan
    stack = bi.from_array(bad, chunks={"image": 7})
    zca = bi.ZCA(1e-3, nan_policy="omit").fit(stack)
    keep = np.setdiff1d(np.arange(SHAPE[0]), [13, 14, 40])
    mean, _, _, w = numpy_zca(data[keep].reshape(len(keep), -1), 1e-3)
    assert zca.n_samples_ == len(keep)
    assert rel(zca.mean_, mean) < 1e-10 and rel(zca.whitening_, w) < 1e-8
    for out in (zca.transform(stack).values, zca.inverse_transform(stack).values):
        assert np.isnan(out[[13, 14, 40]]).all() and np.isfinite(out[keep]).all()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # dask's inf - inf
def test_standardize_infinite_values_raise_naming_the_image(data):
    bad = data.copy()
    bad[13, 1, 2, 0] = np.inf
    for chunks in ({"image": 5}, {"image": 5, "y": 1}):  # map_blocks and tree reduction paths
        out = bi.standardize(bi.from_array(bad, chunks=chunks))  # lazy: no error yet
        with pytest.raises(ValueError, match=r"infinite values.*image at \{'image': 13\}"):
            out.compute()
        per_band = bi.standardize(bi.from_array(-bad, chunks=chunks), dims=("y", "x"))
        with pytest.raises(ValueError, match=r"\{'image': 13, 'band': 0\}.*where\(np.isfinite"):
            per_band.compute()
    with pytest.raises(ValueError, match=r"infinite values \(±inf\) in the image;"):
        bi.standardize(bi.from_array(bad[13])).compute()
    # the other images are fine once the infinite value is NoData
    ok = bi.standardize(bi.from_array(bad).where(np.isfinite(bad))).values
    np.testing.assert_allclose(ok[:13], tf_formula(data[:13], (1, 2, 3)), rtol=1e-6, atol=1e-6)
    assert np.isnan(ok[13, 1, 2, 0]) and np.isnan(ok).sum() == 1


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")  # dask's x * x
def test_standardize_overflowing_values_raise(data):
    huge = data * 1e300
    for chunks in ({"image": 5}, {"image": 5, "y": 1}):
        with pytest.raises(ValueError, match=r"too large for float64.*image at \{'image': \d+\}"):
            bi.standardize(bi.from_array(huge, chunks=chunks)).compute()


# ---------------------------------------------------------------- issue 14: save refuses existing
def test_save_refuses_an_existing_path_unless_overwrite(tmp_path, data):
    zca = bi.ZCA().fit(bi.from_array(data))
    path = tmp_path / "zarr.json"
    path.write_text('{"precious": true}')
    with pytest.raises(FileExistsError, match=r"path: .*zarr.json.*already exists.*overwrite"):
        zca.save(path)
    assert path.read_text() == '{"precious": true}'
    assert zca.save(path, overwrite=True) == path
    assert bi.ZCA.load(path).n_samples_ == SHAPE[0]
    with pytest.raises(IsADirectoryError, match="is a folder"):
        zca.save(tmp_path, overwrite=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        zca.save(tmp_path / "no" / "m.npz")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        zca.save(3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["zarr.json"]  # no temporary left


def test_zca_fit_op_overwrite_and_refuses_before_the_fit(tmp_path, data):
    import inspect

    from bigimg.pipeline.ops import zca_fit_op as _zca_fit_op

    assert inspect.signature(_zca_fit_op).parameters["overwrite"].default is False
    stack = bi.from_array(data, chunks={"image": 30})
    model = tmp_path / "config.toml"
    model.write_text("running config")
    kw = dict(eps=1e-3, sample_dim="image", nan_policy="raise", transform=False)
    with raise_if_dask_computes():  # refused before the expensive fit
        with pytest.raises(FileExistsError, match=r"model: .*config.toml.*already exists"):
            _zca_fit_op(stack, model=model, **kw)
        with pytest.raises(IsADirectoryError, match="model: "):
            _zca_fit_op(stack, model=tmp_path, overwrite=True, **kw)
    assert model.read_text() == "running config"
    assert _zca_fit_op(stack, model=model, overwrite=True, **kw) is stack
    assert bi.ZCA.load(model).feature_shape_ == (4, 3, 2)


# ---------------------------------------------------------------- issue 14: hostile model files
@pytest.fixture(scope="module")
def saved(tmp_path_factory, data):
    """``(metadata dict, arrays dict)`` of a model as :meth:`ZCA.save` writes it."""
    path = tmp_path_factory.mktemp("model") / "m.npz"
    bi.ZCA(1e-3).fit(bi.from_array(data[:, :2, :2, :1])).save(path)  # 4 features
    with np.load(path, allow_pickle=False) as npz:
        import json

        return json.loads(str(npz["metadata"])), {k: npz[k] for k in npz.files if k != "metadata"}


def write_model(path, meta, arrays, *, compressed=False):
    import json

    members = dict(arrays)
    if meta is not None:
        members["metadata"] = np.array(json.dumps(meta))
    with open(path, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **members)
    return path


def test_load_checks_each_header_against_the_metadata_before_reading(tmp_path, saved, monkeypatch):
    meta, arrays = saved
    read = []
    real = np.lib.format.read_array
    monkeypatch.setattr(
        np.lib.format, "read_array", lambda fh, **kw: read.append(1) or real(fh, **kw)
    )
    # metadata claims 16,384 features: the 4-feature arrays are refused unread
    path = write_model(tmp_path / "claim.npz", {**meta, "feature_shape": [16384, 1, 1]}, arrays)
    with pytest.raises(
        ValueError, match=r"'mean' array is float64 of shape \(4,\), expected .*16384"
    ):
        bi.ZCA.load(path)
    assert len(read) == 1  # the metadata only
    # a 2-GiB array declared by a few-kB file (a zip bomb) is refused unread
    big = {**arrays, "components": np.zeros((2048, 2048))}
    path = write_model(
        tmp_path / "bomb.npz", {**meta, "feature_shape": [2048, 1, 1]}, big, compressed=True
    )
    assert path.stat().st_size < 100_000
    read.clear()
    with pytest.raises(ValueError, match="compressed"):
        bi.ZCA.load(path)
    assert read == []
    # an .npy member shorter than its header says (a valid zip: CRCs match)
    import zipfile

    path = write_model(tmp_path / "short.npz", meta, arrays)
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["components.npy"] = members["components.npy"][:-8]
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    read.clear()
    with pytest.raises(ValueError, match="'components' array's size disagrees with its header"):
        bi.ZCA.load(path)
    assert len(read) == 2  # metadata and mean only


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"drop": "whitening"}, "it has no 'whitening' array"),
        ({"meta": None}, "it has no 'metadata' array"),
        ({"meta": [1, 2]}, "metadata is a JSON list, not an object"),
        ({"meta": 5}, "metadata is a JSON int"),
        ({"meta_key": ("feature_shape", "abc")}, "feature_shape must be 3 positive int"),
        ({"meta_key": ("feature_shape", [2, 2])}, "feature_shape must be 3 positive int"),
        ({"meta_key": ("feature_shape", [2, -2, -1])}, "feature_shape must be 3 positive int"),
        ({"meta_key": ("feature_dims", "yxb")}, "feature_dims must be a non-empty list"),
        ({"meta_key": ("feature_dims", ["image", "x", "band"])}, "hold sample_dim 'image'"),
        ({"meta_key": ("dtype", "O")}, "dtype must name a real numeric dtype, got 'O'"),
        ({"meta_key": ("dtype", "nonsense")}, "dtype must name a real numeric dtype"),
        ({"meta_key": ("dtype", 5)}, "dtype must name a real numeric dtype"),
        ({"meta_key": ("eps", "1")}, "metadata is invalid: eps must be a number"),
        ({"meta_key": ("eps", -1)}, "metadata is invalid: eps must be finite"),
        ({"meta_key": ("nan_policy", "x")}, "metadata is invalid: nan_policy"),
        ({"meta_key": ("sample_dim", 0)}, "metadata is invalid: sample_dim must be a str"),
        ({"meta_key": ("n_samples", "20")}, "n_samples must be an int >= 2"),
        ({"meta_key": ("format_version", 0)}, "format_version is 0; this bigimg reads .*1 only"),
        ({"meta_key": ("format_version", 2)}, "format_version is 2 .*upgrade bigimg"),
        ({"meta_key": ("format_version", True)}, "format_version is True"),
        ({"meta_key": ("format", "x")}, "metadata format is 'x'"),
        ({"meta_del": "eps"}, r"metadata lacks key\(s\) \['eps'\]"),
        ({"meta_del": "feature_dims"}, r"metadata lacks key\(s\) \['feature_dims'\]"),
        ({"array": ("mean", np.array([None] * 4, dtype=object))}, "'mean' array is object"),
        ({"array": ("mean", np.zeros(4, np.float32))}, "'mean' array is float32"),
        ({"array": ("whitening", np.full((4, 4), np.nan))}, "'whitening' holds NaN or ±inf"),
        ({"array": ("explained_variance", -np.ones(4))}, "explained_variance' holds negative"),
        ({"array": ("metadata", np.arange(3))}, "'metadata' array is int64 of shape"),
        ({"array": ("metadata", np.array("{not json"))}, "metadata is not JSON"),
        ({"array": ("metadata", np.array("x" * 70_000))}, "at most 65536 characters"),
    ],
)
def test_load_rejects_broken_models_naming_the_file(tmp_path, saved, change, match):
    meta, arrays = dict(saved[0]), dict(saved[1])
    if "drop" in change:
        del arrays[change["drop"]]
    if "meta" in change:
        meta = change["meta"]
    if "meta_key" in change:
        meta[change["meta_key"][0]] = change["meta_key"][1]
    if "meta_del" in change:
        del meta[change["meta_del"]]
    if "array" in change:
        name, value = change["array"]
        arrays[name] = value
        if name == "metadata":
            meta = None
    path = write_model(tmp_path / "bad.model", meta, arrays)
    with pytest.raises(ValueError, match=f"path: '{path}' is not a .*ZCA model.*{match}"):
        bi.ZCA.load(path)


def test_load_rejects_files_that_are_no_model(tmp_path, saved):
    good = write_model(tmp_path / "good.npz", *saved)
    assert bi.ZCA.load(good).feature_shape_ == (2, 2, 1)
    blob = good.read_bytes()
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "truncated").write_bytes(blob[: len(blob) // 2])
    corrupt = bytearray(blob)
    corrupt[400] ^= 0xFF
    (tmp_path / "corrupt").write_bytes(bytes(corrupt))
    for name in ("plain.npy", "empty", "truncated", "corrupt"):
        with pytest.raises(ValueError, match=f"'{tmp_path / name}' is not a bigimg ZCA model"):
            bi.ZCA.load(tmp_path / name)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        bi.ZCA.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such ZCA model file"):
        bi.ZCA.load(tmp_path / "missing")
    with pytest.raises(TypeError, match="path must be a str or os.PathLike"):
        bi.ZCA.load(None)


# ---------------------------------------------------------------- issue 14: hostile pass
def test_wide_integers_are_centred_exactly():
    """int32 around 1e9 (not exact in float32): fit and transform match float64 numpy."""
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(500, 2, 2, 1)) * 3 + 1e9).astype("int32")
    x[:, 1] += x[:, 0] - 1_000_000_000  # correlated features
    stack = bi.from_array(x, chunks={"image": 128})
    zca = bi.ZCA(1e-3).fit(stack)
    mean, cov, _, w = numpy_zca(x.reshape(500, -1), 1e-3)
    assert rel(zca.mean_, mean) < 1e-12 and rel(model_cov(zca), cov) < 1e-8  # was 1.0
    out = zca.transform(stack)
    assert out.dtype == np.float32
    assert rel(out.values.reshape(500, -1), (x.reshape(500, -1) - mean) @ w) < 1e-5


def test_huge_float32_values_fit_and_float64_overflow_raises():
    x = correlated((200, 2, 2, 1), seed=6, scale=1e18).astype("float32")  # float32 squares overflow
    zca = bi.ZCA().fit(bi.from_array(x, chunks={"image": 64}))
    _, cov, evals, _ = numpy_zca(x.reshape(200, -1), 0)
    assert np.isfinite(zca.whitening_).all()
    assert rel(model_cov(zca), cov) < 1e-6 and rel(zca.explained_variance_, evals) < 1e-6
    with pytest.raises(ValueError, match="too large for a float64 covariance"):
        bi.ZCA().fit(bi.from_array(x.astype("float64") * 1e150))


def test_eps0_numerically_singular_covariance_raises():
    # a feature that is the sum of two others: the smallest eigenvalue is +1.7e-16, not 0
    a = np.random.default_rng(0).normal(size=(50, 3))
    x = np.concatenate([a, a[:, :1] + a[:, 1:2]], axis=1).reshape(50, 4, 1, 1)
    with pytest.raises(ValueError, match=r"singular \(smallest eigenvalue .*linearly dependent"):
        bi.ZCA(0.0).fit(bi.from_array(x))
    assert np.isfinite(bi.ZCA(1e-6).fit(bi.from_array(x)).whitening_).all()


def test_more_features_than_samples_and_constant_features_match_numpy(data):
    few = data[:5].copy()  # 5 samples, 24 features: rank 4
    few[:, 0, 0, 0] = 7.0  # a constant feature
    zca = bi.ZCA(1e-2).fit(bi.from_array(few))
    mean, cov, _, w = numpy_zca(few.reshape(5, -1), 1e-2)
    assert rel(model_cov(zca), cov) < 1e-10 and rel(zca.whitening_, w) < 1e-8
    out = zca.transform(bi.from_array(few)).values
    np.testing.assert_allclose(out.reshape(5, -1), (few.reshape(5, -1) - mean) @ w, atol=1e-9)
    with pytest.raises(ValueError, match="singular"):
        bi.ZCA(0.0).fit(bi.from_array(few))
    with pytest.raises(ValueError, match="singular"):
        bi.ZCA(0.0).fit(bi.from_array(np.ones((10, 2, 2, 1))))


@pytest.mark.parametrize("dtype", ["float16", "bool", "uint16", "int64"])
def test_other_input_dtypes_match_numpy(data, dtype):
    x = (data * 100).astype(dtype) if dtype != "bool" else data > 0
    zca = bi.ZCA(1e-2).fit(bi.from_array(x, chunks={"image": 32}))
    mean, cov, _, w = numpy_zca(x.reshape(SHAPE[0], -1), 1e-2)
    assert rel(zca.mean_, mean) < 1e-7 and rel(model_cov(zca), cov) < 1e-5
    out = zca.transform(bi.from_array(x))
    assert out.dtype == np.float32 and zca.dtype_ == np.dtype(dtype)
    assert rel(out.values.reshape(SHAPE[0], -1), (x.reshape(SHAPE[0], -1) - mean) @ w) < 1e-4


def test_inverse_transform_matches_sklearn(data):
    from sklearn.decomposition import PCA

    x2d = data.reshape(SHAPE[0], -1)
    pca = PCA(whiten=True).fit(x2d)
    zca = bi.ZCA(0.0).fit(bi.from_array(data, chunks={"image": 25}))
    z = np.random.default_rng(3).normal(size=(SHAPE[0], x2d.shape[1]))  # whitened PCA scores
    white = bi.from_array((z @ pca.components_).reshape(SHAPE))  # ... rotated back: ZCA space
    back = zca.inverse_transform(white).values.reshape(SHAPE[0], -1)
    np.testing.assert_allclose(back, pca.inverse_transform(z), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(
        zca.inverse_transform(zca.transform(bi.from_array(data))).values, data, atol=1e-9
    )


def test_unknown_chunk_sizes_and_non_str_dims_are_refused(data):
    arr = da.from_array(data, chunks=(10, 4, 3, 2))
    unknown = xr.DataArray(arr[arr[:, 0, 0, 0] > -100], dims=("image", "y", "x", "band"))
    with raise_if_dask_computes():
        with pytest.raises(ValueError, match=r"stack has unknown chunk sizes along \['image'\]"):
            bi.ZCA().fit(unknown)
        with pytest.raises(ValueError, match=r"obj has unknown chunk sizes.*compute_chunk_sizes"):
            bi.standardize(unknown)
        int_dims = xr.DataArray(data, dims=("image", 1, 2, 3))
        with pytest.raises(TypeError, match="stack's dims must be str"):
            bi.ZCA().fit(int_dims)
        with pytest.raises(TypeError, match="dims must be a str or a sequence of str, got None"):
            bi.standardize(bi.from_array(data), dims=None)
        with pytest.raises(TypeError, match="dims must be a str or a sequence of str, got 5"):
            bi.standardize(bi.from_array(data), dims=5)


def test_omit_with_all_nan_chunks_and_sample_dim_last(data):
    bad = data.copy()
    bad[0] = np.nan  # the first chunk (one sample) is empty after omitting
    bad[89, 0, 0, 0] = np.nan
    stack = bi.from_array(bad, chunks={"image": 1}).transpose("y", "x", "band", "image")
    zca = bi.ZCA(1e-3, nan_policy="omit").fit(stack)
    mean, _, _, w = numpy_zca(data[1:89].reshape(88, -1), 1e-3)
    assert zca.n_samples_ == 88 and rel(zca.whitening_, w) < 1e-8
    out = zca.transform(stack)
    assert out.dims == ("y", "x", "band", "image")
    flat = out.transpose("image", ...).values.reshape(SHAPE[0], -1)
    assert np.isnan(flat[[0, 89]]).all()
    assert rel(flat[1:89], (data[1:89].reshape(88, -1) - mean) @ w) < 1e-8


def test_zca_transform_op_errors_name_the_model_key(tmp_path, saved):
    from bigimg.pipeline.ops import zca_transform_op as _zca_transform_op

    img = bi.from_array(np.zeros((3, 2, 2, 1)))
    with pytest.raises(FileNotFoundError, match="model: no such ZCA model file"):
        _zca_transform_op(img, model=tmp_path / "missing.npz", inverse=False)
    with pytest.raises(IsADirectoryError, match="model: .* is a folder"):
        _zca_transform_op(img, model=tmp_path, inverse=False)
    bad = write_model(tmp_path / "bad.npz", [1], saved[1])
    with pytest.raises(ValueError, match="model: .*bad.npz' is not a bigimg ZCA model"):
        _zca_transform_op(img, model=bad, inverse=True)
    good = write_model(tmp_path / "good.npz", *saved)
    out = _zca_transform_op(img, model=good, inverse=False)
    assert out.dims == img.dims and np.isfinite(out.values).all()
