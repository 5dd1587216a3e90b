"""bigimg.adapthist (CLAHE): against skimage.exposure.equalize_adapthist, per band.

The reference for images with NoData is :func:`_reference`, skimage's algorithm
written out with a mask of valid pixels (skimage has no mask): it is first checked
equal to skimage where every pixel is valid.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import skimage.data
import skimage.exposure
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage.exposure._adapthist import clip_histogram, map_histogram

import bigimg as bi
from bigimg.adapthist import MAX_TABLE_BYTES
from bigimg.kernels import adapthist as kernels
from bigimg.pipeline import OPS, load_config
from tests.helpers import assert_one_line_error, raise_if_dask_computes
from tests.helpers import bigimg as bigimg_cli
from tests.strategies import chunkings

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
ATOL = 1e-6  # float32 output against skimage's float64: 3e-8 seen


# ---------------------------------------------------------------- references
def _camera() -> np.ndarray:
    return skimage.data.camera()[::2, ::2]  # 256 x 256, real imagery, fast


def _skimage_bands(img: np.ndarray, **kwargs) -> np.ndarray:
    """skimage's CLAHE on each band of a ``(y, x, band)`` array."""
    return np.stack(
        [skimage.exposure.equalize_adapthist(img[..., b], **kwargs) for b in range(img.shape[-1])],
        axis=-1,
    )


def _reference(band, valid, kernel_size, clip_limit=0.01, nbins=256):
    """skimage's CLAHE of a 2-D integer-valued band, counting only the ``valid`` pixels.

    Written out from skimage's steps: grey levels from the valid range, the image
    padded with ``reflect`` (the mask too), one clipped histogram per region over its
    valid pixels (``n`` = their count, in place of the region's area), a region with
    none taking the map of a flat histogram, then skimage's interpolation in float32
    and its final rescale over the valid pixels. Invalid pixels keep their value.
    """
    ky, kx = kernel_size
    v = band.astype(np.float64)
    lo, hi = v[valid].min(), v[valid].max()
    size = 1 + 16384 // nbins
    q = np.zeros(band.shape, dtype=np.int64)
    q[valid] = np.round((v[valid] - lo) / (hi - lo) * 16383.0)
    b = q // size
    pads = [
        (k // 2, (k - s % k) % k + math.ceil(k / 2))
        for k, s in zip((ky, kx), band.shape, strict=True)
    ]
    bp, vp = np.pad(b, pads, mode="reflect"), np.pad(valid, pads, mode="reflect")
    ny, nx = -(-band.shape[0] // ky), -(-band.shape[1] // kx)
    levels = np.clip(16384 - np.arange(nbins) * size, 0, size)
    flat = map_histogram(levels.astype(np.int64), 0, 16383, 16384)
    maps = np.empty((ny, nx, nbins), dtype=np.int64)
    for ry in range(ny):
        for rx in range(nx):
            sl = np.s_[ky // 2 + ry * ky : ky // 2 + (ry + 1) * ky,
                       kx // 2 + rx * kx : kx // 2 + (rx + 1) * kx]  # fmt: skip
            vals = bp[sl][vp[sl]]
            n = vals.size
            if n == 0:
                maps[ry, rx] = flat
                continue
            hist = np.bincount(vals, minlength=nbins)
            clim = int(np.clip(clip_limit * n, 1, None)) if clip_limit > 0 else n
            maps[ry, rx] = map_histogram(clip_histogram(hist, clim), 0, 16383, n)
    jy, ty = np.divmod(np.arange(band.shape[0]) + ky // 2, ky)
    jx, tx = np.divmod(np.arange(band.shape[1]) + kx // 2, kx)
    cy, cx = (ty / ky)[:, None], (tx / kx)[None, :]
    r = np.zeros(band.shape, dtype=np.float32)
    for ey in (0, 1):
        for ex in (0, 1):
            ry = np.clip(jy - 1 + ey, 0, ny - 1)[:, None]
            rx = np.clip(jx - 1 + ex, 0, nx - 1)[None, :]
            w = (cx if ex else 1 - cx) * (cy if ey else 1 - cy)
            r += (maps[ry, rx, b] * w).astype(np.float32)
    r = r.astype(np.uint16).astype(np.float64)
    out = (r - r[valid].min()) / (r[valid].max() - r[valid].min())
    out[~valid] = band[~valid]
    return out


def _assert_reference(out: np.ndarray, img: np.ndarray, valid: np.ndarray, kernel_size, **kw):
    for b in range(img.shape[-1]):
        ref = _reference(img[..., b], valid[..., b], kernel_size, **kw)
        ok = valid[..., b]
        np.testing.assert_allclose(out[..., b][ok], ref[ok], rtol=0, atol=ATOL)
        np.testing.assert_array_equal(out[..., b][~ok], img[..., b][~ok].astype(out.dtype))


# ---------------------------------------------------------------- kernels
@pytest.mark.parametrize("seed", range(6))
def test_clip_histogram_kernel_is_skimages(seed):
    rng = np.random.default_rng(seed)
    nbins = int(rng.integers(2, 300))
    hist = rng.geometric(rng.uniform(0.01, 0.5), size=nbins).astype(np.int64) - 1
    hist[rng.integers(0, nbins, size=3)] += rng.integers(0, 5000, size=3)
    for clim in {1, 2, int(hist.max()) // 3 + 1, int(hist.mean()) + 1}:
        ours = kernels.clip_histogram(hist.copy(), np.int64(clim))
        np.testing.assert_array_equal(ours, clip_histogram(hist.copy(), clim))


def test_region_maps_kernel_is_skimages_clip_and_map():
    rng = np.random.default_rng(3)
    counts = rng.poisson(rng.uniform(0, 30, size=(2, 3, 1, 64))).astype(np.int64)
    counts[1, 2, 0] = 0  # an empty region: the flat map
    maps = kernels.region_maps(counts, 0.05)
    assert maps.dtype == np.uint16
    for idx in np.ndindex(counts.shape[:-1]):
        n = int(counts[idx].sum())
        if n == 0:
            levels = np.clip(16384 - np.arange(64) * 257, 0, 257)
            ref = map_histogram(levels, 0, 16383, 16384)
        else:
            ref = map_histogram(
                clip_histogram(counts[idx].copy(), int(max(0.05 * n, 1))), 0, 16383, n
            )
        np.testing.assert_array_equal(maps[idx], ref)
    assert (np.diff(kernels.identity_map(256).astype(int)) >= 0).all()


def test_the_reference_is_skimage_when_every_pixel_is_valid():
    cam = _camera()
    for ks in [(32, 32), (40, 27)]:
        ref = _reference(cam, np.ones(cam.shape, bool), ks)
        np.testing.assert_allclose(
            ref, skimage.exposure.equalize_adapthist(cam, kernel_size=ks), atol=0
        )


# ---------------------------------------------------------------- against skimage
@pytest.mark.parametrize(
    ("name", "kernel_size", "chunks", "kwargs"),
    [
        ("camera", 32, 100, {}),  # size a multiple of the kernel
        ("camera", {"y": 40, "x": 27}, 64, {"clip_limit": 0.03, "nbins": 128}),  # padding rule
        ("camera", None, 256, {"clip_limit": 0.0}),  # default kernel, no clipping
        ("moon", {"y": 64, "x": 50}, {"y": 70, "x": 33}, {}),
        ("astronaut", 48, {"y": 90, "x": 128, "band": 2}, {"nbins": 64}),
    ],
)
def test_agrees_with_skimage_per_band(name, kernel_size, chunks, kwargs):
    img = getattr(skimage.data, name)()[::2, ::2]
    img = img if img.ndim == 3 else img[..., None]
    out = bi.equalize_adapthist(
        bi.from_array(img, chunks=chunks), kernel_size=kernel_size, **kwargs
    )
    assert out.dtype == np.float32 and out.dims == ("y", "x", "band")
    if isinstance(kernel_size, dict):
        kernel_size = (kernel_size["y"], kernel_size["x"])
    ref = _skimage_bands(img, kernel_size=kernel_size, **kwargs)
    np.testing.assert_allclose(out.values, ref, rtol=0, atol=ATOL)


def test_uint16_and_floats_in_unit_range_agree_with_skimage():
    cam = _camera()
    u16 = (cam.astype(np.uint16) * 200 + 17)[..., None]
    out = bi.equalize_adapthist(bi.from_array(u16, chunks=70), kernel_size=30).values
    np.testing.assert_allclose(out, _skimage_bands(u16, kernel_size=30), rtol=0, atol=ATOL)
    for dt in (np.float32, np.float64):
        f = (cam / 255.0 * 0.7 + 0.2).astype(dt)[..., None]  # skimage quantizes it to 16 bits
        out = bi.equalize_adapthist(bi.from_array(f, chunks=90), kernel_size=(25))
        assert out.dtype == (np.float64 if dt == np.float64 else np.float32)
        np.testing.assert_allclose(out.values, _skimage_bands(f, kernel_size=25), rtol=0, atol=ATOL)


def test_floats_outside_the_unit_range_use_their_own_range():
    """skimage refuses them; the same values scaled keep skimage's result on the original."""
    cam = _camera()[..., None]
    f = cam.astype(np.float64) * 3.5 - 100.0
    out = bi.equalize_adapthist(bi.from_array(f, chunks=128), kernel_size=32)
    np.testing.assert_allclose(out.values, _skimage_bands(cam, kernel_size=32), rtol=0, atol=ATOL)


# ---------------------------------------------------------------- NoData
def test_nan_border_against_skimage_with_the_nan_pixels_excluded():
    cam = _camera().astype(np.float32)
    a = np.stack([cam, cam[::-1]], axis=-1)
    a[:37] = np.nan  # whole regions and parts of regions
    a[:, -21:, 1] = np.nan
    a[100:130, 50:60, 0] = np.nan
    valid = ~np.isnan(a)
    out = bi.equalize_adapthist(bi.from_array(a, chunks=77), kernel_size={"y": 30, "x": 32})
    assert np.isnan(out.values[~valid]).all()
    # a float32 band outside [0, 1] is rescaled from its range, as the integer-valued reference
    _assert_reference(out.values, a, valid, (30, 32))


def test_excluded_values_are_not_counted_and_keep_their_value():
    cam = _camera().copy()
    cam[:20, :] = 0
    cam[200:, 100:] = 255
    valid = (cam != 0) & (cam != 255)
    out = bi.equalize_adapthist(bi.from_array(cam, chunks=60), kernel_size=32, exclude=[0, 255])
    _assert_reference(out.values, cam[..., None], valid[..., None], (32, 32))
    nan = np.where(valid, cam, np.nan).astype(np.float32)
    same = bi.equalize_adapthist(bi.from_array(nan, chunks=60), kernel_size=32).values
    np.testing.assert_array_equal(out.values[valid], same[valid])


def test_a_region_without_valid_pixels_takes_the_identity_map():
    cam = _camera().astype(np.float64)
    cam[:64, :64] = np.nan  # four whole 32 x 32 regions
    out = bi.equalize_adapthist(bi.from_array(cam, chunks=50), kernel_size=32, nbins=32).values
    valid = ~np.isnan(cam)
    _assert_reference(out, cam[..., None], valid[..., None], (32, 32), nbins=32)
    assert out.dtype == np.float64


# ---------------------------------------------------------------- chunking, laziness, cluster
@settings(deadline=None, max_examples=20)
@given(data=st.data())
def test_any_chunking_gives_the_same_bits(data):
    rng = np.random.default_rng(0)
    a = (np.add.outer(np.arange(45), np.arange(38))[..., None] * [1.0, -0.5]).astype(np.float32)
    a += rng.normal(0, 4, a.shape).astype(np.float32)
    a[:4, :, 0] = np.nan
    a[:, 30:, 1] = np.nan
    whole = bi.equalize_adapthist(
        bi.from_array(a, chunks=-1), kernel_size={"y": 13, "x": 16}
    ).values
    chunks = data.draw(chunkings({"y": 45, "x": 38, "band": 2}))
    out = bi.equalize_adapthist(bi.from_array(a, chunks=chunks), kernel_size={"y": 13, "x": 16})
    np.testing.assert_array_equal(out.values, whole)


def test_lazy_after_its_statistics_passes_and_a_stack():
    cam = _camera()
    stack = np.stack([cam[None], cam[::-1][None]]).transpose(0, 2, 3, 1)[
        ..., None, :
    ]  # image, y, x, band
    stack = np.concatenate([stack, 255 - stack], axis=-1)[:, :, :, 0]
    img = bi.from_array(stack, dims=("image", "y", "x", "band"), chunks={"y": 100, "x": 128})
    img = img.assign_coords(band=["a", "b"]).assign_attrs(units="dn")
    with raise_if_dask_computes(max_computes=2) as sched:
        out = img.bigimg.equalize_adapthist(kernel_size=64)
    assert sched.total_computes == 2  # uint8: region counts of every value (range too), extremes
    with raise_if_dask_computes(max_computes=3) as sched:
        img.astype(np.float32).bigimg.equalize_adapthist(kernel_size=64)
    assert sched.total_computes == 3  # range, region maps, extremes; the result is lazy
    assert out.dims == img.dims and out.chunks == img.chunks and out.attrs == {"units": "dn"}
    assert list(out["band"].values) == ["a", "b"]
    for i in range(2):
        ref = _skimage_bands(stack[i], kernel_size=64)
        np.testing.assert_allclose(out.values[i], ref, rtol=0, atol=ATOL)


def test_on_local_cluster(client):
    img = skimage.data.astronaut()[::4, ::4]
    out = bi.equalize_adapthist(bi.from_array(img, chunks=50), kernel_size=24).compute()
    np.testing.assert_allclose(out.values, _skimage_bands(img, kernel_size=24), rtol=0, atol=ATOL)


def test_import_bigimg_does_not_import_numba():
    code = "import sys, bigimg; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"dims": ("y", "z")}, ValueError, r"dims names unknown dim\(s\) \['z'\]"),
        ({"dims": ("y", "y")}, ValueError, "two distinct dims"),
        ({"dims": "y"}, TypeError, "dims must be a pair"),
        ({"kernel_size": 0}, ValueError, r"kernel_size\['y'\] must be between 1 and .* 40, got 0"),
        ({"kernel_size": {"x": 31}}, ValueError, r"kernel_size\['x'\] must be between 1 and .* 30"),
        ({"kernel_size": {"z": 3}}, ValueError, r"kernel_size names dim\(s\) \['z'\]"),
        ({"kernel_size": 2.5}, TypeError, "kernel_size must be None, an int or a dict"),
        ({"kernel_size": {"y": 4.0}}, TypeError, r"kernel_size\['y'\] must be an int"),
        ({"clip_limit": -0.1}, ValueError, r"clip_limit must be in \[0, 1\]"),
        ({"clip_limit": 1.5}, ValueError, r"clip_limit must be in \[0, 1\]"),
        ({"clip_limit": float("nan")}, ValueError, r"clip_limit must be in \[0, 1\]"),
        ({"clip_limit": "0.1"}, TypeError, "clip_limit must be a number"),
        ({"nbins": 1}, ValueError, r"nbins must be between 2 and 16384 \(grey levels\), got 1"),
        ({"nbins": 2.0}, TypeError, "nbins must be an int"),
        ({"exclude": "0"}, TypeError, "exclude must be a number or a sequence"),
    ],
)
def test_bad_arguments_fail_before_any_compute(kwargs, exc, match):
    img = bi.from_array(np.zeros((40, 30), dtype=np.float32), chunks=10)
    with raise_if_dask_computes(), pytest.raises(exc, match=match):
        bi.equalize_adapthist(img, **kwargs)


def test_bad_images():
    with raise_if_dask_computes(), pytest.raises(TypeError, match="must be an xarray.DataArray"):
        bi.equalize_adapthist(np.zeros((8, 8)))
    with raise_if_dask_computes(), pytest.raises(TypeError, match="integer or floating dtype"):
        bi.equalize_adapthist(xr.DataArray(np.zeros((8, 8), dtype=bool), dims=("y", "x")))
    nan = bi.from_array(np.full((16, 16), np.nan, dtype=np.float32), chunks=8)
    with raise_if_dask_computes(max_computes=1), pytest.raises(ValueError, match="no valid pixels"):
        bi.equalize_adapthist(nan)  # known after the range pass only
    zeros = bi.from_array(np.zeros((16, 16, 2), dtype=np.uint8), chunks=8)
    with raise_if_dask_computes(max_computes=1), pytest.raises(ValueError, match="no valid pixels"):
        bi.equalize_adapthist(zeros, exclude=0)  # 8-bit: known after the counting pass
    inf = bi.from_array(np.array([[0.0, np.inf], [1.0, 2.0]]))
    with raise_if_dask_computes(max_computes=1), pytest.raises(ValueError, match="not finite"):
        bi.equalize_adapthist(inf, kernel_size=1)


def test_a_region_table_too_large_is_refused_before_any_compute():
    """bands x regions x nbins x 8 bytes <= 1 GiB: 2**19 regions of 256 bins for one band."""
    assert MAX_TABLE_BYTES == 2**30

    def lazy(y, x, bands=1):
        data = da.zeros((y, x, bands), dtype=np.uint8, chunks=(8192, 8192, 1))
        return xr.DataArray(data, dims=("y", "x", "band"))

    msg = r"1 band\(s\) x 3125 x 3125 regions x nbins=256 x 8 bytes = 18.63 GiB"
    with raise_if_dask_computes(), pytest.raises(ValueError, match=msg):
        bi.equalize_adapthist(lazy(100_000, 100_000), kernel_size=32)
    # exactly 1 GiB (512 x 1024 regions) is accepted: it goes on to its first pass
    with raise_if_dask_computes(), pytest.raises(RuntimeError, match="Too many computes"):
        bi.equalize_adapthist(lazy(512 * 32, 1024 * 32), kernel_size=32)
    with raise_if_dask_computes(), pytest.raises(ValueError, match=r"2 band\(s\) x 512 x 1024"):
        bi.equalize_adapthist(lazy(512 * 32, 1024 * 32, bands=2), kernel_size=32)
    with raise_if_dask_computes(), pytest.raises(ValueError, match="x nbins=512 x 8 bytes = 2.00"):
        bi.equalize_adapthist(lazy(512 * 32, 1024 * 32), kernel_size=32, nbins=512)


# ---------------------------------------------------------------- pipeline
def test_clahe_config_runs_on_the_demo_mosaic(tmp_path):
    from bigimg.demo import synthetic_mosaic

    mosaic = synthetic_mosaic(256, chunks=96)
    bi.to_zarr(mosaic, tmp_path / "mosaic.zarr")
    shutil.copy(CONFIGS / "clahe.toml", tmp_path / "clahe.toml")
    pipe = load_config(tmp_path / "clahe.toml")
    assert [s.op for s in pipe.steps] == ["equalize_adapthist"]
    assert OPS["equalize_adapthist"].computes
    pipe.run()
    stored = xr.open_zarr(pipe.output.path)
    out = stored["image"].transpose("y", "x", "band")
    assert stored.attrs["bigimg_complete"] and out.dtype == np.float32
    a = mosaic.values.astype(np.float32)
    a[a == 0] = np.nan  # nodata = 0
    _assert_reference(out.values, a, ~np.isnan(a), (32, 32))


def test_planned_after_a_filter_equals_the_calls_one_after_the_other(tmp_path):
    """The planner writes the filtered input to a scratch store and runs the passes on it."""
    cam = _camera().astype(np.float32)
    cam[:, :30] = np.nan
    img = bi.from_array(cam, chunks=100)
    steps = [
        {"op": "gaussian_filter", "sigma": 1.0},
        {"op": "equalize_adapthist", "kernel_size": {"y": 40, "x": 50}, "clip_limit": 0.02},
    ]
    pipe = bi.plan(img, steps)
    assert pipe.scratch_steps() == [1]
    pipe.to_zarr(tmp_path / "out.zarr")
    out = bi.open_zarr(tmp_path / "out.zarr")
    direct = bi.equalize_adapthist(
        bi.gaussian_filter(img, 1.0), kernel_size={"y": 40, "x": 50}, clip_limit=0.02
    )
    np.testing.assert_array_equal(out.values, direct.values)


def test_cli_refuses_a_bad_kernel_size_in_one_line(tmp_path):
    bi.to_zarr(bi.from_array(_camera(), chunks=128), tmp_path / "mosaic.zarr")
    cfg = (
        (CONFIGS / "clahe.toml").read_text().replace("nbins = 256", "nbins = 256\nkernel_size = 0")
    )
    (tmp_path / "bad.toml").write_text(cfg)
    proc = bigimg_cli("run", str(tmp_path / "bad.toml"), "--workers", "1", "--quiet")
    assert_one_line_error(proc, "kernel_size['y'] must be between 1 and the image's 'y' size 256")
    assert not (tmp_path / "clahe.zarr").exists()


def test_dims_order_and_numpy_backed_input():
    """``dims`` names the region axes in order: ("x", "y") is skimage on the transposed band."""
    cam = _camera()[:, :200]
    img = xr.DataArray(np.stack([cam, cam[::-1]]), dims=("band", "y", "x"))  # numpy-backed
    out = bi.equalize_adapthist(img, kernel_size={"y": 30, "x": 40}, dims=("x", "y"))
    assert out.dims == ("band", "y", "x") and out.chunks is not None
    for b in range(2):
        ref = skimage.exposure.equalize_adapthist(img.values[b].T, kernel_size=(40, 30)).T
        np.testing.assert_allclose(out.values[b], ref, rtol=0, atol=ATOL)
