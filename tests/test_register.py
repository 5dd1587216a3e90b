"""Registration and shift-and-add stacking: known shifts, skimage, chunking, NaN, errors."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.signal.windows import tukey
from skimage import data
from skimage.registration import phase_cross_correlation

import bigimg as bi
from bigimg.pipeline import parse_config
from bigimg.register import _deposit_block, _register_block
from tests.helpers import raise_if_dask_computes

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def fourier_shifted(scene: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Frames ``scene`` moved by ``shifts`` (periodic, exact sub-pixel)."""
    spec = np.fft.fft2(scene)
    return np.stack([np.fft.ifft2(ndimage.fourier_shift(spec, t)).real for t in shifts])


def make_scene(size: int = 128, sigma: float = 1.2, seed: int = 0) -> np.ndarray:
    scene = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(size, size)), sigma)
    return (scene - scene.mean()) / scene.std()


@pytest.fixture(scope="module")
def synthetic() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scene, true shifts applied to it, float32 noisy frames)."""
    rng = np.random.default_rng(1)
    scene = make_scene()
    true = rng.uniform(-1.5, 1.5, size=(10, 2))
    frames = fourier_shifted(scene, true) + rng.normal(scale=0.02, size=(10, *scene.shape))
    return scene, true, frames.astype("float32")


@pytest.fixture(scope="module")
def hubble() -> np.ndarray:
    img = data.hubble_deep_field()[200:328, 300:428].mean(axis=-1)  # a real sky crop
    return (img - img.mean()) / img.std()


def as_stack(frames: np.ndarray, **chunks: int) -> xr.DataArray:
    arr = frames if frames.ndim == 4 else frames[..., None]
    return bi.from_array(arr, chunks=chunks or {"image": 3})


def deposit_reference(frames: np.ndarray, shifts: np.ndarray, out_shape, method="bilinear"):
    """Weighted 2-D histogram, one pixel at a time with np.add.at (the slow, obvious way)."""
    nb = frames.shape[3]
    wv = np.zeros((*out_shape, nb))
    w = np.zeros((*out_shape, nb))
    yy, xx = np.indices(frames.shape[1:3])
    for frame, (sy, sx) in zip(frames, shifts, strict=True):
        if not np.isfinite([sy, sx]).all():
            continue
        py, px = (yy + sy).ravel(), (xx + sx).ravel()
        if method == "nearest":
            corners = [(np.floor(py + 0.5), np.floor(px + 0.5), np.ones(py.size))]
        else:
            y0, x0 = np.floor(py), np.floor(px)
            fy, fx = py - y0, px - x0
            corners = [
                (y0 + dy, x0 + dx, (fy if dy else 1 - fy) * (fx if dx else 1 - fx))
                for dy in (0, 1)
                for dx in (0, 1)
            ]
        for b in range(nb):
            v = frame[..., b].ravel().astype(np.float64)
            ok = np.isfinite(v)
            for cy, cx, c in corners:
                inside = ok & (cy >= 0) & (cy < out_shape[0]) & (cx >= 0) & (cx < out_shape[1])
                iy, ix = cy[inside].astype(int), cx[inside].astype(int)
                np.add.at(wv[..., b], (iy, ix), c[inside] * v[inside])
                np.add.at(w[..., b], (iy, ix), c[inside])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(w > 0, wv / np.where(w > 0, w, 1), np.nan), w


# ---------------------------------------------------------------- register
def test_register_recovers_known_shifts(synthetic):
    scene, true, frames = synthetic
    shifts = bi.register(as_stack(frames), reference=scene)
    assert shifts.dims == ("image", "axis")
    assert list(shifts["axis"].values) == ["y", "x"]
    assert shifts["error"].dims == ("image",)
    # skimage's convention: the shift that registers the moved frame is minus the move
    np.testing.assert_allclose(shifts.values, -true, atol=0.02)


def test_register_matches_skimage_frame_by_frame(synthetic):
    scene, _, frames = synthetic
    ref = scene.astype("float32")
    shifts = bi.register(as_stack(frames), reference=ref, upsample_factor=50)
    for i, frame in enumerate(frames):
        shift, error, _ = phase_cross_correlation(ref, frame, upsample_factor=50)
        np.testing.assert_allclose(shifts.values[i], shift, atol=1e-6)
        np.testing.assert_allclose(shifts["error"].values[i], error, rtol=1e-5, atol=1e-7)


def test_register_default_reference_is_the_nanmean_composite(synthetic):
    _, _, frames = synthetic
    frames = frames.copy()
    frames[2, :10] = np.nan  # the composite must be NaN-aware
    shifts = bi.register(as_stack(frames), upsample_factor=20)
    composite = (np.nansum(frames, axis=0, dtype=np.float64) / np.isfinite(frames).sum(0)).astype(
        "float32"
    )
    for i, frame in enumerate(frames):
        filled = np.where(np.isfinite(frame), frame, np.nanmean(frame, dtype=np.float64))
        shift, _, _ = phase_cross_correlation(
            composite, filled.astype("float32"), upsample_factor=20
        )
        np.testing.assert_allclose(shifts.values[i], shift, atol=1e-6)


def test_register_iterations_align_to_the_sharp_composite(synthetic):
    _, true, frames = synthetic
    shifts = bi.register(as_stack(frames), iterations=2)
    assert shifts.attrs["iterations"] == 2
    rel = shifts.values + true  # the reference's own offset is common to all images
    # 0.03, not 0.02: the reference is now estimated from the same 10 noisy frames
    np.testing.assert_allclose(rel - rel.mean(axis=0), 0, atol=0.03)


def test_register_real_image_and_window(hubble):
    rng = np.random.default_rng(3)
    true = rng.uniform(-2, 2, size=(6, 2))
    frames = fourier_shifted(hubble, true) + rng.normal(scale=0.02, size=(6, *hubble.shape))
    stack = as_stack(frames.astype("float32"))
    shifts = bi.register(stack, reference=hubble)
    np.testing.assert_allclose(shifts.values, -true, atol=0.02)
    cropped = bi.register(stack, reference=hubble, window={"y": 96, "x": 80})
    np.testing.assert_allclose(cropped.values, -true, atol=0.03)
    # the window is a central crop, mean-subtracted and Tukey-tapered
    sl = (slice(16, 112), slice(24, 104))
    taper = np.outer(tukey(96, 0.25), tukey(80, 0.25))

    def prep(a):
        a = a[sl].astype("float32")
        return ((a - a.mean(dtype=np.float64)) * taper).astype("float32")

    sk, _, _ = phase_cross_correlation(prep(hubble), prep(frames[0]), upsample_factor=100)
    np.testing.assert_allclose(cropped.values[0], sk, atol=1e-6)


def test_register_band_choice_and_coords(synthetic):
    scene, true, frames = synthetic
    multi = np.stack([frames, np.full_like(frames, np.nan)], axis=-1)  # band 1 is empty
    stack = as_stack(multi).assign_coords(
        image=np.arange(10) * 10, band=["r", "g"], time=("image", np.arange(10.0))
    )
    by_mean = bi.register(stack, reference=scene)  # nan-mean over band ignores the empty band
    by_band = bi.register(stack, reference=scene, band="r")
    np.testing.assert_array_equal(by_mean.values, by_band.values)
    np.testing.assert_allclose(by_band.values, -true, atol=0.02)
    np.testing.assert_array_equal(by_band["image"].values, np.arange(10) * 10)
    assert "time" in by_band.coords
    via_accessor = stack.bigimg.register(reference=xr.DataArray(scene, dims=("y", "x")), band="r")
    np.testing.assert_array_equal(via_accessor.values, by_band.values)


def test_register_nan_frame_warns_and_gives_nan(synthetic):
    scene, true, frames = synthetic
    frames = frames.copy()
    frames[4] = np.nan
    frames[:, :8] = np.nan  # NaN borders on every frame
    frames[:, :, -5:] = np.nan
    with pytest.warns(bi.BigimgWarning, match=r"\[4\]"):
        # without phase whitening: the filled NoData edges must not dominate the spectrum
        shifts = bi.register(as_stack(frames), reference=scene, normalization=None)
    assert np.isnan(shifts.values[4]).all()
    ok = np.arange(10) != 4
    np.testing.assert_allclose(shifts.values[ok], -true[ok], atol=0.05)
    with pytest.warns(bi.BigimgWarning, match=r"shift_and_add: 1 image\(s\) along 'image' \[4\]"):
        out = bi.shift_and_add(as_stack(frames), shifts)
    without = bi.shift_and_add(as_stack(frames[ok]), shifts.values[ok])
    np.testing.assert_array_equal(out.weight.values, without.weight.values)


def test_register_kernel_on_plain_arrays(synthetic):
    scene, true, frames = synthetic
    from scipy import fft

    out = _register_block(
        frames[:3, ..., None], fft.fftn(scene.astype("float32")), upsample_factor=100, window=None
    )
    assert out.shape == (3, 3)
    np.testing.assert_allclose(out[:, :2], -true[:3], atol=0.02)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ci=st.integers(1, 10),
    cy=st.integers(5, 64),
    cx=st.integers(5, 64),
)
def test_register_chunk_invariance(synthetic, ci, cy, cx):
    scene, _, frames = synthetic
    small = frames[:, :64, :64]
    expected = bi.register(as_stack(small, image=10), reference=scene[:64, :64], upsample_factor=20)
    got = bi.register(
        as_stack(small, image=ci, y=cy, x=cx), reference=scene[:64, :64], upsample_factor=20
    )
    np.testing.assert_array_equal(got.values, expected.values)


def test_register_computes_a_bounded_number_of_times(synthetic):
    scene, _, frames = synthetic
    with raise_if_dask_computes(max_computes=1):
        bi.register(as_stack(frames), reference=scene)
    with raise_if_dask_computes(max_computes=2):
        bi.register(as_stack(frames))


# ---------------------------------------------------------------- shift_and_add
@pytest.mark.parametrize("method", ["bilinear", "nearest"])
def test_shift_and_add_is_the_weighted_2d_histogram(method):
    rng = np.random.default_rng(5)
    frames = rng.normal(size=(5, 23, 19, 2)).astype("float32")
    frames[1, 3:7, 2:9, 0] = np.nan
    frames[3, :, :4, 1] = np.nan
    shifts = rng.uniform(-4, 4, size=(5, 2))
    shifts[2] = [1.0, -2.0]  # integer shifts: weight 0 corners must not leak
    out_shape = (30, 21)
    comp, weight = deposit_reference(frames, shifts, out_shape, method)
    stack = as_stack(frames, image=2, y=7, x=6)
    out = bi.shift_and_add(stack, shifts, method=method, out_shape=out_shape)
    assert out.composite.dims == ("y", "x", "band")
    assert out.composite.dtype == np.float32
    np.testing.assert_allclose(out.weight.values, weight, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out.composite.values, comp, rtol=1e-5, atol=1e-6)


def test_shift_and_add_fourier_matches_scipy_fourier_shift(synthetic):
    scene, _, _ = synthetic
    shift = np.array([0.3, -0.45])
    frame = scene.astype("float32")
    out = bi.shift_and_add(as_stack(frame[None]), [shift], method="fourier")
    expected = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(frame), shift)).real
    np.testing.assert_allclose(out.composite.values[..., 0], expected, atol=1e-5)
    np.testing.assert_allclose(out.weight.values, 1.0, atol=1e-6)
    # whole-pixel part: a plain offset of the sub-pixel-shifted frame
    out2 = bi.shift_and_add(as_stack(frame[None]), [shift + [2, -3]], method="fourier")
    np.testing.assert_allclose(out2.composite.values[2:, :-3, 0], expected[:-2, 3:], atol=1e-5)
    assert np.isnan(out2.composite.values[:2, :, 0]).all()


def test_shift_and_add_of_registered_stack_reproduces_the_scene(synthetic):
    scene, _, frames = synthetic
    stack = as_stack(frames)
    shifts = bi.register(stack, reference=scene)
    inner = (slice(4, -4), slice(4, -4))
    fourier = bi.shift_and_add(stack, shifts, method="fourier").composite.values[..., 0]
    # exact interpolation: residual = noise / sqrt(N) (0.0063) + 0.02-px registration error
    assert np.sqrt(np.mean((fourier[inner] - scene[inner]) ** 2)) < 0.03
    bilinear = bi.shift_and_add(stack, shifts).composite.values[..., 0]
    # cloud-in-cell smooths a sigma=1.2 px scene by up to a quarter pixel
    assert np.sqrt(np.mean((bilinear[inner] - scene[inner]) ** 2)) < 0.12


def test_shift_and_add_snr_grows_as_sqrt_n():
    rng = np.random.default_rng(7)
    scene = make_scene(96, seed=2)
    true = rng.uniform(-1.5, 1.5, size=(16, 2))
    noisy = fourier_shifted(scene, true) + rng.normal(scale=0.3, size=(16, 96, 96))
    inner = (slice(4, -4), slice(4, -4))
    rms = []
    for n in (4, 16):
        comp = bi.shift_and_add(as_stack(noisy[:n].astype("float32")), -true[:n], method="fourier")
        rms.append(np.sqrt(np.mean((comp.composite.values[..., 0][inner] - scene[inner]) ** 2)))
    assert 0.3 / 2 * 0.85 < rms[0] < 0.3 / 2 * 1.15
    assert 1.7 < rms[0] / rms[1] < 2.3  # sqrt(16 / 4) = 2


# slow (the fourier method on 7 frames, up to seconds a draw): 2/3 of the profile's examples
@settings(max_examples=settings().max_examples * 2 // 3, deadline=None)
@given(
    ci=st.integers(1, 7),
    cy=st.integers(2, 17),  # 2 < the bilinear halo + shift range: blocks cut every footprint
    cx=st.integers(2, 15),
    method=st.sampled_from(["bilinear", "nearest", "fourier"]),
)
def test_shift_and_add_chunk_invariance(ci, cy, cx, method):
    rng = np.random.default_rng(11)
    frames = rng.normal(size=(7, 17, 15, 2)).astype("float32")
    frames[2, 4:9, 3:5] = np.nan
    shifts = rng.uniform(-3, 3, size=(7, 2))
    whole = bi.shift_and_add(as_stack(frames, image=7), shifts, method=method)
    chunked = bi.shift_and_add(as_stack(frames, image=ci, y=cy, x=cx), shifts, method=method)
    np.testing.assert_allclose(chunked.composite.values, whole.composite.values, rtol=1e-6)
    np.testing.assert_allclose(chunked.weight.values, whole.weight.values, rtol=1e-6, atol=1e-12)


def test_shift_and_add_is_lazy_and_keeps_coords(synthetic):
    _, true, frames = synthetic
    stack = (
        as_stack(frames)
        .assign_coords(y=np.arange(128) * 0.5, band=["lum"], image=np.arange(10))
        .assign_attrs(units="adu")
    )
    with raise_if_dask_computes():
        out = bi.shift_and_add(stack, -true)
        out2 = stack.bigimg.shift_and_add(-true, method="nearest")
    assert isinstance(out, xr.Dataset)
    np.testing.assert_array_equal(out["y"].values, np.arange(128) * 0.5)
    assert list(out["band"].values) == ["lum"]
    assert "image" not in out.coords
    assert out.composite.attrs["units"] == "adu"
    assert out2.composite.chunks is not None


def test_shift_and_add_without_band_dim_and_float64():
    frames = np.random.default_rng(0).normal(size=(3, 8, 9))
    stack = xr.DataArray(frames, dims=("image", "y", "x")).chunk({"image": 1})
    out = bi.shift_and_add(stack, np.zeros((3, 2)))
    assert out.composite.dims == ("y", "x")
    assert out.composite.dtype == np.float64
    np.testing.assert_allclose(out.composite.values, frames.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out.weight.values, 3.0)


def test_deposit_kernel_on_plain_arrays():
    frame = np.arange(12.0).reshape(1, 3, 4, 1)
    out = _deposit_block(
        frame,
        shifts=np.array([[0.5, 0.0]]),
        origin=(0, 0),
        out_origin=(0, 0),
        out_size=(3, 4),
        method="bilinear",
    )
    np.testing.assert_allclose(out[0, :, :, 0, 1], [[0.5] * 4, [1.0] * 4, [1.0] * 4])
    np.testing.assert_allclose(
        out[0, 1, :, 0, 0], 0.5 * frame[0, 0, :, 0] + 0.5 * frame[0, 1, :, 0]
    )


def test_on_local_cluster(client, synthetic):
    scene, true, frames = synthetic
    stack = as_stack(frames, image=5, y=64)
    shifts = bi.register(stack, reference=scene)
    np.testing.assert_allclose(shifts.values, -true, atol=0.02)
    out = bi.shift_and_add(stack, shifts).compute()
    local = bi.shift_and_add(as_stack(frames), shifts.values)
    with_threads = local.compute(scheduler="threads")
    np.testing.assert_allclose(out.composite.values, with_threads.composite.values, rtol=1e-6)


# ---------------------------------------------------------------- errors
def test_errors(synthetic):
    scene, _, frames = synthetic
    stack = as_stack(frames)
    with pytest.raises(ValueError, match="shifts has 3 rows"):
        bi.shift_and_add(stack, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="shifts must have shape"):
        bi.shift_and_add(stack, np.zeros((10, 3)))
    with pytest.raises(TypeError, match="shifts must be"):
        bi.shift_and_add(stack, [["a", "b"]] * 10)
    with pytest.raises(ValueError, match="method must be one of"):
        bi.shift_and_add(stack, np.zeros((10, 2)), method="cubic")
    with pytest.raises(ValueError, match="out_shape"):
        bi.shift_and_add(stack, np.zeros((10, 2)), out_shape=(0, 5))
    with pytest.raises(ValueError, match="missing dim.*'frame'"):
        bi.register(stack, dim="frame")
    with pytest.raises(ValueError, match="missing dim"):
        bi.shift_and_add(stack.isel(image=0), np.zeros((1, 2)))
    with pytest.raises(TypeError, match="stack must be an xarray.DataArray"):
        bi.register(frames)
    with pytest.raises(ValueError, match="upsample_factor must be"):
        bi.register(stack, upsample_factor=0.5)
    with pytest.raises(TypeError, match="upsample_factor must be a number"):
        bi.register(stack, upsample_factor="10")
    with pytest.raises(ValueError, match="normalization must be"):
        bi.register(stack, normalization="amplitude")
    with pytest.raises(ValueError, match="iterations"):
        bi.register(stack, iterations=0)
    with pytest.raises(ValueError, match="window"):
        bi.register(stack, window={"band": 3})
    with pytest.raises(ValueError, match="window"):
        bi.register(stack, window=2.5)
    with pytest.raises(ValueError, match="reference has shape"):
        bi.register(stack, reference=scene[:10])
    with pytest.raises(TypeError, match="reference must be"):
        bi.register(stack, reference=[1, 2])
    with pytest.raises(ValueError, match="band"):
        bi.register(stack, band=3)
    with pytest.raises(ValueError, match="reference has no valid"):
        bi.register(stack, reference=np.full(scene.shape, np.nan))


# ---------------------------------------------------------------- pipeline
def test_stack_config(tmp_path, synthetic):
    scene, true, frames = synthetic
    bi.to_zarr(as_stack(frames).chunk({"image": 3}), tmp_path / "stack.zarr", progress=False)
    config = tomllib.loads((CONFIGS / "stack.toml").read_text())
    pipeline = parse_config(config, base=tmp_path)
    pipeline.run(progress=False)
    out = xr.open_zarr(tmp_path / "composite.zarr")
    assert out.attrs["bigimg_complete"]
    comp = out["image"]  # stored band-first (OME-NGFF); by dim name it is the composite
    assert set(comp.dims) == {"y", "x", "band"}
    assert set(comp["weight"].dims) == {"y", "x", "band"}
    comp = comp.transpose("y", "x", "band")
    shifts = np.array(comp.attrs["bigimg_shifts"])
    assert shifts.shape == (10, 2)
    rel = shifts + true
    np.testing.assert_allclose(rel - rel.mean(axis=0), 0, atol=0.03)
    expected = bi.shift_and_add(as_stack(frames), shifts)
    np.testing.assert_allclose(comp.values, expected.composite.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(comp["weight"].values, expected.weight.values, rtol=1e-5)


@pytest.mark.parametrize("normalization", ["phase", None])
@pytest.mark.parametrize("upsample_factor", [1, 10, 100, 1000])
def test_phase_correlation_kernel_matches_skimage_on_noisy_pairs(normalization, upsample_factor):
    """The two-stage peak search finds skimage's peak (float32 ties aside at 1/1000 px)."""
    from scipy import fft

    from bigimg.register import _phase_correlation

    rng = np.random.default_rng(upsample_factor)
    for trial in range(6):
        scene = make_scene(96, sigma=rng.uniform(0.8, 3.0), seed=trial)
        moved = fourier_shifted(scene, rng.uniform(-6, 6, size=(1, 2)))[0]
        moved = moved + rng.uniform(0, 0.5) * scene.std() * rng.normal(size=moved.shape)
        ref_f, mov_f = fft.fftn(scene.astype("float32")), fft.fftn(moved.astype("float32"))
        expected, error, _ = phase_cross_correlation(
            ref_f, mov_f, upsample_factor=upsample_factor, space="fourier",
            normalization=normalization,
        )  # fmt: skip
        dy, dx, err = _phase_correlation(
            ref_f, float(np.vdot(ref_f, ref_f).real), mov_f,
            upsample_factor=upsample_factor, normalization=normalization,
        )  # fmt: skip
        tol = 2.5 / upsample_factor if upsample_factor >= 1000 else 1e-6
        np.testing.assert_allclose([dy, dx], expected, atol=tol)
        np.testing.assert_allclose(err, error, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------- all-zero images (issue 14)
@pytest.mark.parametrize("chunks", [{"image": 1}, {"image": 4, "y": 7, "x": 20}, {"image": 10}])
def test_register_blank_frame_against_its_composite(synthetic, chunks):
    """A blank (all-zero) frame: shift 0, error NaN and a warning, like skimage; no crash."""
    _, true, frames = synthetic
    frames = frames[:, :48, :48].copy()
    frames[3] = 0.0
    with pytest.warns(bi.BigimgWarning, match=r"1 image\(s\) along 'image' \[3\].*all zeros"):
        shifts = bi.register(as_stack(frames, **chunks), upsample_factor=1)
    composite = frames.mean(axis=0)
    with pytest.warns(UserWarning, match="Could not determine RMS error"):
        sk_shift, sk_error, _ = phase_cross_correlation(composite, frames[3], upsample_factor=1)
    np.testing.assert_array_equal(shifts.values[3], sk_shift)
    assert np.isnan(sk_error) and np.isnan(shifts["error"].values[3])
    ok = np.arange(10) != 3
    assert np.isfinite(shifts["error"].values[ok]).all()
    for i in np.flatnonzero(ok)[:3]:  # the other frames are unaffected
        shift, error, _ = phase_cross_correlation(composite, frames[i], upsample_factor=1)
        np.testing.assert_allclose(shifts.values[i], shift, atol=1e-6)
    with pytest.warns(bi.BigimgWarning, match=r"\[3\]"):  # the default upsampling too
        fine = bi.register(as_stack(frames, **chunks))
    np.testing.assert_array_equal(fine.values[3], [0.0, 0.0])


@pytest.mark.parametrize("chunks", [{"image": 1}, {"image": 3, "y": 9}])
def test_register_all_zero_reference(synthetic, chunks):
    _, _, frames = synthetic
    with pytest.warns(bi.BigimgWarning, match=r"10 image\(s\).*all zeros"):
        shifts = bi.register(as_stack(frames, **chunks), reference=np.zeros(frames.shape[1:]))
    np.testing.assert_array_equal(shifts.values, 0.0)
    assert np.isnan(shifts["error"].values).all()


def test_register_constant_frame_inside_a_window(synthetic):
    """A constant frame is all zeros once the window mean-subtracts it."""
    scene, _, frames = synthetic
    frames = frames.copy()
    frames[5] = 2.5
    with pytest.warns(bi.BigimgWarning, match=r"\[5\].*inside the window"):
        shifts = bi.register(as_stack(frames), reference=scene, window=64)
    np.testing.assert_array_equal(shifts.values[5], 0.0)
    assert np.isnan(shifts["error"].values[5])


def test_phase_correlation_kernel_on_zero_spectra():
    from scipy import fft

    from bigimg.register import _phase_correlation

    rng = np.random.default_rng(0)
    a, z = rng.random((16, 16)), np.zeros((16, 16))
    for ref, mov in [(a, z), (z, a), (z, z)]:
        rf, mf = fft.fftn(ref), fft.fftn(mov)
        for normalization in ("phase", None):
            with pytest.warns(UserWarning, match="Could not determine RMS error"):
                shift, error, _ = phase_cross_correlation(
                    rf, mf, space="fourier", normalization=normalization
                )
            got = _phase_correlation(
                rf, float(np.vdot(rf, rf).real), mf, upsample_factor=1, normalization=normalization
            )
            np.testing.assert_array_equal(got[:2], shift)
            assert np.isnan(got[2]) and np.isnan(error)


# ---------------------------------------------------------------- hostile pass (issue 14)
@pytest.mark.parametrize("chunks", [{"image": 1}, {"image": 4, "y": 50, "x": 31}])
def test_register_float32_values_near_the_max_do_not_overflow(synthetic, chunks):
    """float32 frames near 3e38 overflow a float32 FFT: they are registered in float64."""
    scene, true, frames = synthetic
    scale = np.float32(2e38) / np.abs(frames).max()
    big, ref = (frames * scale).astype("float32"), (scene * scale).astype("float32")
    assert np.isfinite(big).all() and np.isfinite(ref).all()
    shifts = bi.register(as_stack(big, **chunks), reference=ref)
    np.testing.assert_allclose(shifts.values, -true, atol=0.02)
    for i in range(3):
        expected, _, _ = phase_cross_correlation(
            ref.astype(np.float64), big[i].astype(np.float64), upsample_factor=100
        )
        np.testing.assert_allclose(shifts.values[i], expected, atol=1e-6)
    assert np.isfinite(shifts["error"].values).all()


def test_register_refuses_absurd_parameters_before_computing(synthetic):
    scene, _, frames = synthetic
    stack = as_stack(frames)
    bad = [
        ({"upsample_factor": 1e9}, ValueError, r"upsample_factor must be .*\[1, 1e\+06\]"),
        ({"iterations": 10**9}, ValueError, r"iterations must be an int in \[1, 100\]"),
        ({"band": True}, TypeError, "band must be a band label or index"),
        ({"reference": scene.astype("complex64")}, TypeError, "reference must hold real numbers"),
        ({"reference": scene > 0}, TypeError, "reference must hold real numbers"),
        ({"dim": "band"}, ValueError, "dim must name the stack's image dim"),
    ]
    for kwargs, exc, match in bad:
        with raise_if_dask_computes(), pytest.raises(exc, match=match):
            bi.register(stack, **kwargs)


@pytest.mark.parametrize("method", ["bilinear", "nearest", "fourier"])
@pytest.mark.parametrize("chunks", [{"image": 1}, {"image": 3, "y": 5, "x": 7}])
def test_shift_and_add_far_shifts_land_nowhere(method, chunks):
    """Shifts far beyond the grid (up to 1e300) drop the image, with no int overflow."""
    rng = np.random.default_rng(5)
    frames = rng.random((4, 12, 10)).astype("float32")
    shifts = np.array([[0.0, 0.0], [1e20, 0.0], [0.0, -1e300], [0.5, -0.25]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value encountered in cast"
        got = bi.shift_and_add(as_stack(frames, **chunks), shifts, method=method).compute()
    kept = [0, 3]
    expected = bi.shift_and_add(as_stack(frames[kept]), shifts[kept], method=method).compute()
    np.testing.assert_allclose(got.weight.values, expected.weight.values, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        got.composite.values, expected.composite.values, rtol=1e-6, atol=1e-6
    )


def test_shift_and_add_refuses_bad_input_before_building_the_graph(synthetic):
    _, _, frames = synthetic
    stack = as_stack(frames, image=5, y=8, x=8)
    zeros = np.zeros((10, 2))
    bad = [
        ({"out_shape": (10**9, 10**9)}, ValueError, "output blocks, more than the 1000000"),
        ({"out_shape": (20000, 20000), "method": "fourier"}, ValueError, "GiB of partial sums"),
        ({"out_shape": (True, True)}, ValueError, "out_shape must be two positive ints"),
        ({"shifts": zeros.astype(complex)}, TypeError, "shifts must be an .* real numbers"),
        ({"dim": "y"}, ValueError, "dim must name the stack's image dim"),
    ]
    for kwargs, exc, match in bad:
        args = {"shifts": zeros, **kwargs}
        with raise_if_dask_computes(), pytest.raises(exc, match=match):
            bi.shift_and_add(stack, **args)
    out = bi.shift_and_add(stack, zeros, out_shape=np.array([130, 140]))  # a numpy pair is fine
    assert out.composite.shape == (130, 140, 1)
