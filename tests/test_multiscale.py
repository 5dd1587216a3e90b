"""Pyramids (bigimg.io.pyramid) and NaN-aware block means (bigimg.resample)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data

import bigimg as bi
from bigimg.io import pyramid as multiscale
from bigimg.io.pyramid import open_level, pyramid_levels, write_pyramid
from bigimg.resample import coarsen_mean
from tests.helpers import raise_if_dask_computes
from tests.strategies import chunkings

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def block_nanmean(a: np.ndarray, fy: int, fx: int) -> np.ndarray:
    """Reference: pad (y, x, ...) with NaN to multiples of the factors, nanmean per block."""
    ny, nx = a.shape[:2]
    py, px = -ny % fy, -nx % fx
    a = np.pad(
        a.astype(np.float64),
        [(0, py), (0, px)] + [(0, 0)] * (a.ndim - 2),
        constant_values=np.nan,
    )
    blocks = a.reshape(a.shape[0] // fy, fy, a.shape[1] // fx, fx, *a.shape[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks -> NaN
        return np.nanmean(blocks, axis=(1, 3))


@pytest.fixture(scope="module")
def coffee_nan() -> np.ndarray:
    """A real photo (400 x 600 x 3) as float32 with a NoData corner and NoData pixels."""
    a = data.coffee().astype(np.float32)
    a[:37, :51] = np.nan
    a[::7, ::5, 1] = np.nan
    return a


# ---------------------------------------------------------------- coarsen_mean
@pytest.mark.parametrize(("fy", "fx"), [(2, 2), (3, 5), (7, 1)])
def test_coarsen_mean_matches_numpy(coffee_nan: np.ndarray, fy: int, fx: int) -> None:
    img = bi.from_array(coffee_nan, chunks={"y": 64, "x": 100})
    out = coarsen_mean(img, {"y": fy, "x": fx})
    assert out.dims == img.dims and out.dtype == np.float32
    np.testing.assert_allclose(out.values, block_nanmean(coffee_nan, fy, fx), rtol=1e-6)


def test_coarsen_mean_int_factor_is_y_and_x_only_and_dtypes() -> None:
    a = np.arange(5 * 6 * 2, dtype=np.uint16).reshape(5, 6, 2)
    out = coarsen_mean(bi.from_array(a), 2)
    assert out.shape == (3, 3, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out.values, block_nanmean(a, 2, 2))
    f64 = coarsen_mean(bi.from_array(a.astype(np.float64)), 2)
    assert f64.dtype == np.float64


def test_coarsen_mean_keeps_coords_attrs_and_stack_dims() -> None:
    a = np.random.default_rng(1).random((3, 8, 6, 2)).astype(np.float32)
    img = bi.from_array(a, chunks={"y": 4}).assign_coords(
        y=np.arange(8) * 10.0, x=np.arange(6) * 10.0, band=["r", "g"], image=[0, 1, 2]
    )
    img.attrs["units"] = "DN"
    out = coarsen_mean(img, 2)
    assert out.dims == ("image", "y", "x", "band") and out.shape == (3, 4, 3, 2)
    np.testing.assert_array_equal(out["y"], [5.0, 25.0, 45.0, 65.0])  # block centres
    assert list(out["band"].values) == ["r", "g"] and out.attrs["units"] == "DN"
    np.testing.assert_allclose(out.values[1], block_nanmean(a[1], 2, 2), rtol=1e-6)


@settings(deadline=None)
@given(
    chunks=chunkings((53, 47)),
    f=st.tuples(st.integers(1, 6), st.integers(1, 6)),
)
def test_coarsen_mean_chunk_invariance(
    chunks: tuple[tuple[int, ...], ...], f: tuple[int, int]
) -> None:
    (cy, cx), (fy, fx) = chunks, f
    a = np.random.default_rng(2).random((53, 47, 2)).astype(np.float32)
    a[a < 0.2] = np.nan
    ref = coarsen_mean(bi.from_array(a, chunks={"y": -1, "x": -1}), {"y": fy, "x": fx}).values
    out = coarsen_mean(bi.from_array(a, chunks={"y": cy, "x": cx}), {"y": fy, "x": fx})
    np.testing.assert_allclose(out.values, ref, rtol=1e-6)


def test_coarsen_mean_is_lazy_and_chunk_aligned() -> None:
    arr = da.random.random((1000, 900, 3), chunks=(250, 300, 3))
    with raise_if_dask_computes():
        out = coarsen_mean(bi.from_array(arr, chunks={"y": 250, "x": 300}), 3)
    # chunks are first aligned to whole blocks (250 -> 249 = 3 * round(250 / 3)), so each
    # output chunk is one input chunk's block means: regular chunks, no ragged slivers
    assert set(out.chunks[0][:-1]) == {83} and set(out.chunks[1][:-1]) == {100}
    assert out.shape == (334, 300, 3)


@pytest.mark.parametrize(
    ("factor", "err", "match"),
    [
        (0, ValueError, r"factor\['y'\] must be a positive integer, got 0"),
        (1.5, ValueError, r"factor\['y'\] must be a positive integer, got 1.5"),
        ({"z": 2}, ValueError, "factor names unknown dim"),
        ("2", TypeError, "factor must be a number or a dict"),
    ],
)
def test_coarsen_mean_validation(factor: object, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        coarsen_mean(bi.from_array(np.zeros((4, 4))), factor)  # type: ignore[arg-type]


def test_coarsen_mean_rejects_non_dataarray() -> None:
    with pytest.raises(TypeError, match="obj must be an xarray.DataArray"):
        coarsen_mean(np.zeros((4, 4)), 2)  # type: ignore[arg-type]


def test_accessor() -> None:
    img = bi.from_array(np.arange(16.0).reshape(4, 4))
    xr.testing.assert_identical(img.bigimg.coarsen_mean(2), coarsen_mean(img, 2))


# ---------------------------------------------------------------- pyramids
@pytest.fixture
def store(tmp_path: Path, coffee_nan: np.ndarray) -> Path:
    path = tmp_path / "coffee.zarr"
    bi.to_zarr(bi.from_array(coffee_nan, chunks={"y": 96, "x": 128}), path, progress=False)
    return path


def test_pyramid_levels_equal_block_means_of_the_previous_level(store: Path) -> None:
    paths = write_pyramid(store, max_size=64, progress=False)
    # 400 x 600 -> 200 x 300 -> 100 x 150 -> 50 x 75 -> 25 x 38 (fits 64)
    assert [p.relative_to(store).as_posix() for p in paths] == [f"levels/{k}" for k in (1, 2, 3, 4)]
    full = xr.open_zarr(store)["image"].transpose("y", "x", "band").values  # by dim names
    expected = full
    for k in range(1, 5):
        expected = block_nanmean(expected, 2, 2)
        level = open_level(store, k)
        assert level.dtype == np.float32 and level.dims == ("y", "x", "band")
        np.testing.assert_allclose(level.values, expected, rtol=1e-6)
        # memory stays bounded: levels keep the store's chunk size, capped by their shape
        assert level.chunks[0][0] == min(96, level.sizes["y"])
    assert max(open_level(store, 4).shape[:2]) <= 64 < max(open_level(store, 3).shape[:2])
    assert pyramid_levels(store) == [0, 1, 2, 3, 4]


def test_levels_open_with_plain_xarray_and_the_root_stays_complete(store: Path) -> None:
    write_pyramid(store, max_size=200, progress=False)
    level2 = open_level(store, 2)
    for ds in (xr.open_zarr(store / "levels" / "2"), xr.open_zarr(store, group="levels/2")):
        assert ds["image"].dims == ("band", "y", "x")  # on disk in OME-NGFF order
        xr.testing.assert_equal(
            ds["image"].transpose(*level2.dims), xr.DataArray(level2.values, dims=level2.dims)
        )
        assert ds.attrs["bigimg_complete"] is True
    root = xr.open_zarr(store)
    assert root.attrs["bigimg_complete"] is True and list(root.data_vars) == ["image"]
    assert bi.store_info(store)["complete"] is True
    xr.testing.assert_identical(bi.open_zarr(store), open_level(store, 0))


def test_ngff_multiscales_metadata(store: Path) -> None:
    write_pyramid(store, max_size=150, progress=False)
    ome = zarr.open_group(str(store), mode="r").attrs["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert ms["axes"] == [  # the on-disk order: channel before space
        {"name": "band", "type": "channel"},
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    assert [d["path"] for d in ms["datasets"]] == ["image", "levels/1/image", "levels/2/image"]
    for k, d in enumerate(ms["datasets"]):
        assert (
            zarr.open_array(str(store / d["path"]), mode="r").shape[1:]
            == open_level(store, k).shape[:2]
        )
        scale = d["coordinateTransformations"][0]
        assert scale == {"type": "scale", "scale": [1.0, 2.0**k, 2.0**k]}
    # level 2 pixel 0 averages level-0 pixels 0..3: its centre is at 1.5
    assert ms["datasets"][2]["coordinateTransformations"][1] == {
        "type": "translation",
        "translation": [0.0, 1.5, 1.5],
    }


def test_small_image_gets_a_single_level_and_rerun_is_idempotent(store: Path) -> None:
    assert write_pyramid(store, max_size=600, progress=False) == []
    assert pyramid_levels(store) == [0]
    write_pyramid(store, max_size=300, progress=False)
    chunks = sorted((store / "levels" / "1" / "image" / "c").rglob("*"))
    mtimes = [p.stat().st_mtime_ns for p in chunks]
    write_pyramid(store, max_size=300, progress=False)  # complete levels are not recomputed
    assert sorted((store / "levels" / "1" / "image" / "c").rglob("*")) == chunks
    assert [p.stat().st_mtime_ns for p in chunks] == mtimes
    assert pyramid_levels(store) == [0, 1]


def _fail_on_block(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
    if block_info is not None and block_info[0]["chunk-location"][:2] == (1, 0):
        raise RuntimeError("simulated crash")
    return block


def test_interrupted_pyramid_lists_only_complete_levels_and_resumes(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = multiscale.write

    def crash_on_level_2(obj, path, **kwargs):  # type: ignore[no-untyped-def]
        if Path(path).name == "2":
            obj = obj.copy(data=obj.data.map_blocks(_fail_on_block, dtype=obj.dtype))
        return real(obj, path, **kwargs)

    monkeypatch.setattr(multiscale, "write", crash_on_level_2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        write_pyramid(store, max_size=64, progress=False)
    assert pyramid_levels(store) == [0, 1]
    assert bi.store_info(store)["complete"] is True
    with pytest.raises(ValueError, match="has no complete level 2; it has levels \\[0, 1\\]"):
        open_level(store, 2)
    monkeypatch.setattr(multiscale, "write", real)
    write_pyramid(store, max_size=64, progress=False)
    assert pyramid_levels(store) == [0, 1, 2, 3, 4]
    expected = block_nanmean(block_nanmean(bi.open_zarr(store).values, 2, 2), 2, 2)
    np.testing.assert_allclose(open_level(store, 2).values, expected, rtol=1e-6)


def test_write_pyramid_on_the_cluster(client, store: Path) -> None:  # type: ignore[no-untyped-def]
    write_pyramid(store, max_size=100, progress=False)
    expected = block_nanmean(block_nanmean(bi.open_zarr(store).values, 2, 2), 2, 2)
    np.testing.assert_allclose(open_level(store, 2).values, expected, rtol=1e-6)


def test_write_pyramid_validation(tmp_path: Path, store: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such Zarr store"):
        write_pyramid(tmp_path / "missing.zarr")
    with pytest.raises(ValueError, match="max_size must be a positive int, got 0"):
        write_pyramid(store, max_size=0)
    with pytest.raises(TypeError, match="max_size must be a positive int, got 1.5"):
        write_pyramid(store, max_size=1.5)  # type: ignore[arg-type]
    incomplete = tmp_path / "incomplete.zarr"
    shutil.copytree(store, incomplete)
    group = zarr.open_group(str(incomplete), mode="r+", use_consolidated=False)
    group.attrs["bigimg_complete"] = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec
        zarr.consolidate_metadata(str(incomplete))
    with pytest.raises(ValueError, match="is incomplete"):
        write_pyramid(incomplete)
    assert not (incomplete / "levels").exists()


def test_open_level_validation(store: Path) -> None:
    with pytest.raises(TypeError, match="level must be an int, got '1'"):
        open_level(store, "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="level must be >= 0, got -1"):
        open_level(store, -1)
    with pytest.raises(ValueError, match="has no complete level 1; it has levels \\[0\\]"):
        open_level(store, 1)


def test_config(tmp_path: Path) -> None:
    from bigimg.demo import synthetic_mosaic
    from bigimg.pipeline import load_config

    mosaic = synthetic_mosaic(256, chunks=128)
    bi.to_zarr(mosaic, tmp_path / "mosaic.zarr", progress=False)
    shutil.copy(CONFIGS / "coarsen_mean.toml", tmp_path)
    load_config(tmp_path / "coarsen_mean.toml").run(progress=False)
    out = bi.open_zarr(tmp_path / "coarsened.zarr")
    raw = mosaic.values.astype(np.float32)
    raw[raw == 0] = np.nan
    np.testing.assert_allclose(out.values, block_nanmean(raw, 4, 4), rtol=1e-6)


# ---------------------------------------------------------------- issue 14: factors beyond the image
def test_coarsen_mean_factor_larger_than_the_image_is_one_block_like_xarray() -> None:
    """xarray's boundary="pad" accepts a window beyond the dim: one block of the whole dim.

    A factor of 10**9 must give that block without padding to 10**9 pixels.
    """
    a = np.arange(5 * 7 * 2, dtype=np.float32).reshape(5, 7, 2)
    a[0, :, 1] = np.nan
    img = bi.from_array(a, chunks={"y": 2, "x": 3})
    img = img.assign_coords(y=np.arange(5.0), x=np.arange(7.0) * 10)
    with raise_if_dask_computes():
        out = coarsen_mean(img, {"y": 10**9, "x": 3})
    assert out.shape == (1, 3, 2)
    expected = img.coarsen(y=8, x=3, boundary="pad").mean()  # any window > 5: one block
    xr.testing.assert_allclose(out, expected.astype(np.float32))
    whole = coarsen_mean(img, 10**12)
    assert whole.shape == (1, 1, 2)
    np.testing.assert_allclose(whole.values[0, 0], np.nanmean(a, axis=(0, 1)), rtol=1e-6)


def test_coarsen_mean_factor_beyond_one_dim_only() -> None:
    """A 1 x N image with factor 4: y keeps its single row (as xarray pads it)."""
    a = np.arange(10.0).reshape(1, 10)
    out = coarsen_mean(bi.from_array(a), 4)
    np.testing.assert_allclose(out.values[:, :, 0], block_nanmean(a, 4, 4))


# ---------------------------------------------------------------- issue 14: hostile pass
def test_coarsen_mean_refuses_averaging_label_coords() -> None:
    img = bi.from_array(np.ones((4, 4, 3))).assign_coords(band=["r", "g", "b"])
    assert list(coarsen_mean(img, 2).band.values) == ["r", "g", "b"]  # band untouched
    with raise_if_dask_computes(), pytest.raises(ValueError, match=r"factor\['band'\]=2 .*'band'"):
        coarsen_mean(img, {"band": 2})
    out = coarsen_mean(img.drop_vars("band"), {"band": 2})
    xr.testing.assert_allclose(
        out, img.drop_vars("band").coarsen(band=2, boundary="pad").mean().astype("float32")
    )


@pytest.mark.parametrize("dtype", ["complex128", "datetime64[s]", "<U1", "object"])
def test_coarsen_mean_refuses_non_real_data(dtype: str) -> None:
    img = xr.DataArray(np.zeros((4, 4)).astype(dtype), dims=("y", "x"))
    with pytest.raises(TypeError, match="obj must have a real numeric dtype"):
        coarsen_mean(img, 2)


def test_coarsen_mean_of_ragged_chunks_and_swapped_dims_matches_xarray() -> None:
    a = np.random.default_rng(1).random((7, 9)).astype(np.float32)
    a[2, 3] = np.nan
    img = xr.DataArray(a, dims=("x", "y"), coords={"x": np.arange(7.0), "y": np.arange(9.0)})
    img = img.chunk({"x": (1, 5, 1), "y": (2, 7)})
    out = coarsen_mean(img, {"x": 3, "y": 4})
    xr.testing.assert_allclose(out, img.coarsen(x=3, y=4, boundary="pad").mean())
