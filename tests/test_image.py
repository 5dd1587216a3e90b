"""The image model: from_array / open_image round trips, nodata, chunks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

import bigimg as bi
from bigimg.image import per_dim
from tests.helpers import raise_if_dask_computes


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()  # (512, 512, 3) uint8, a real photograph


def test_from_array_dims_defaults():
    assert bi.from_array(np.zeros((4, 5))).dims == ("y", "x", "band")
    assert bi.from_array(np.zeros((4, 5, 3))).dims == ("y", "x", "band")
    assert bi.from_array(np.zeros((2, 4, 5, 3))).dims == ("image", "y", "x", "band")
    assert bi.from_array(np.zeros((4, 5)), dims=("x", "y")).dims == ("x", "y", "band")


def test_from_array_is_lazy_and_keeps_dtype(astronaut):
    with raise_if_dask_computes():
        img = bi.from_array(astronaut, chunks={"y": 100, "x": 100})
    assert img.dtype == np.uint8
    assert img.chunks == ((100,) * 5 + (12,), (100,) * 5 + (12,), (3,))
    np.testing.assert_array_equal(img.values, astronaut)


@pytest.mark.parametrize("chunks", [(2048, 2048), (64, 100), ((3, 5, 7, 2048 - 15), 1024)])
def test_a_2d_dask_array_gains_band_without_building_a_task_per_block(chunks):
    """xarray's expand_dims built 1M tasks in 20 s for a terabyte-sized 2-D read."""
    import dask.array as da

    camera = data.camera()[:, :, None].astype("float32")  # a real photograph, 512 x 512
    dask_2d = da.from_array(np.tile(camera[..., 0], (4, 4)), chunks=chunks)
    with raise_if_dask_computes():
        img = bi.from_array(dask_2d)
        huge = bi.from_array(da.zeros((2**20, 2**20), "float32", chunks=1024))  # 4 TiB
    assert img.dims == ("y", "x", "band") and img.chunks == (*dask_2d.chunks, (1,))
    assert not huge.data.dask.layers[huge.data.name].is_materialized()
    assert huge.chunks[2] == (1,) and huge.data.npartitions == 1024**2
    np.testing.assert_array_equal(img.values, np.tile(camera, (4, 4, 1)))


def test_chunks_auto_keeps_band_whole():
    img = bi.from_array(np.zeros((300, 200, 4), "float32"))
    assert img.chunks[2] == (4,)


def test_chunk_dict_leaves_other_dims_whole():
    img = bi.from_array(np.zeros((3, 40, 30, 2)), chunks={"y": 16})
    assert img.chunks == ((3,), (16, 16, 8), (30,), (2,))


@given(
    cy=st.integers(1, 40),
    cx=st.integers(1, 40),
    nodata=st.sampled_from([0, 7, 255]),
)
@settings(deadline=None)
def test_nodata_becomes_nan_any_chunking(cy, cx, nodata):
    rng = np.random.default_rng(cy * 100 + cx)
    arr = rng.integers(0, 256, (37, 29), dtype=np.uint8)
    arr[:3] = nodata
    img = bi.from_array(arr, chunks={"y": cy, "x": cx}, nodata=nodata)
    assert img.dtype == np.float32
    expected = np.where(arr == nodata, np.nan, arr.astype(np.float32))[..., None]
    np.testing.assert_array_equal(img.values, expected)


def test_nodata_on_float_keeps_dtype():
    arr = np.array([[1.0, -9999.0], [3.0, 4.0]])
    img = bi.from_array(arr, nodata=-9999)
    assert img.dtype == np.float64
    assert np.isnan(img.values[0, 1, 0]) and img.values[1, 1, 0] == 4.0


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".png", ".zarr"])
@pytest.mark.parametrize("chunks", ["auto", {"y": 64, "x": 96}, 100])
def test_open_image_round_trip(tmp_path, astronaut, suffix, chunks):
    path = tmp_path / f"img{suffix}"
    if suffix == ".npy":
        np.save(path, astronaut)
    elif suffix == ".tif":
        tifffile.imwrite(path, astronaut, tile=(128, 128))
    elif suffix == ".png":
        Image.fromarray(astronaut).save(path)
    else:
        bi.to_zarr(bi.from_array(astronaut, chunks={"y": 128, "x": 128}), path, progress=False)
    img = bi.open_image(path, chunks=chunks)
    assert img.dims == ("y", "x", "band")
    np.testing.assert_array_equal(img.values, astronaut)
    assert img.attrs["bigimg_source"] == str(path)


def test_open_tiff_is_tiled_and_lazy(tmp_path):
    arr = (np.arange(512 * 384) % 65535 + 1).astype(np.uint16).reshape(512, 384)
    arr[:50] = 0
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, arr, tile=(64, 64), bigtiff=True)
    with raise_if_dask_computes():
        img = bi.open_image(path, chunks={"y": 128, "x": 128}, nodata=0)
    assert img.dtype == np.float32
    got = img.isel(y=slice(40, 300)).values[..., 0]
    np.testing.assert_array_equal(got, np.where(arr == 0, np.nan, arr)[40:300].astype("float32"))


def test_open_jpeg(tmp_path):
    arr = data.camera()
    path = tmp_path / "cam.jpg"
    Image.fromarray(arr).save(path, quality=95)
    img = bi.open_image(path)
    assert img.shape == (*arr.shape, 1)
    assert np.abs(img.values[..., 0].astype(float) - arr).mean() < 3  # lossy


def test_open_plain_zarr_array(tmp_path):
    import zarr

    arr = np.random.default_rng(0).random((20, 30)).astype("float32")
    z = zarr.create_array(
        str(tmp_path / "plain.zarr"), shape=arr.shape, chunks=(10, 10), dtype="float32"
    )
    z[:] = arr
    np.testing.assert_array_equal(bi.open_image(tmp_path / "plain.zarr").values[..., 0], arr)


def graph_has(img, word):
    return any(word in name for name in img.data.__dask_graph__().layers)


@pytest.mark.parametrize(
    "chunks, direct",
    [
        ({"y": 20, "x": 30}, True),  # whole store chunks: each task reads its region
        (20, True),
        ({"y": 15}, False),  # would split store chunks: they are read once, then rechunked
        ({"y": 5, "x": 5}, False),
    ],
)
@pytest.mark.parametrize("kind", ["plain-2d", "plain-stack", "bigimg"])
def test_open_zarr_reads_whole_store_chunks_directly(tmp_path, kind, chunks, direct):
    import zarr

    rng = np.random.default_rng(1)
    path = tmp_path / "s.zarr"
    if kind == "bigimg":
        arr = rng.random((40, 30, 2)).astype("float32")
        bi.to_zarr(bi.from_array(arr, chunks={"y": 10, "x": 10}), path, progress=False)
    else:
        arr = rng.random((40, 30) if kind == "plain-2d" else (3, 40, 30, 2)).astype("float32")
        store_chunks = (10, 10) if arr.ndim == 2 else (1, 10, 10, 2)
        z = zarr.create_array(str(path), shape=arr.shape, chunks=store_chunks, dtype="float32")
        z[:] = arr
    with raise_if_dask_computes():
        img = bi.open_image(path, chunks=chunks, nodata=-1.0)
    want = bi.from_array(arr, chunks=chunks)  # the chunks the user asked for
    assert img.dims == want.dims and img.chunks == want.chunks
    assert graph_has(img, "rechunk") != direct
    np.testing.assert_array_equal(img.values, want.values)
    assert img.attrs["bigimg_source"] == str(path)


@pytest.mark.parametrize("chunks, direct", [({"y": 32, "x": 48}, True), ({"y": 24}, False)])
def test_open_tiff_reads_whole_tiles_directly(tmp_path, chunks, direct):
    arr = np.random.default_rng(2).integers(0, 65535, (64, 48), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "t.tif", arr, tile=(16, 16))
    img = bi.open_image(tmp_path / "t.tif", chunks=chunks)
    assert img.chunks == bi.from_array(arr, chunks=chunks).chunks
    assert graph_has(img, "rechunk") != direct
    np.testing.assert_array_equal(img.values[..., 0], arr)


def test_open_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        bi.open_image(tmp_path / "nope.tif")
    (tmp_path / "a.xyz").write_text("x")
    with pytest.raises(ValueError, match="unknown image format"):
        bi.open_image(tmp_path / "a.xyz")
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="not a Zarr store"):
        bi.open_image(tmp_path / "folder")
    np.save(tmp_path / "one.npy", np.zeros(5))
    with pytest.raises(ValueError, match="2-D, 3-D or 4-D"):
        bi.open_image(tmp_path / "one.npy")


@pytest.mark.parametrize(
    ("chunks", "err", "match"),
    [
        ({"z": 4}, ValueError, "unknown dim"),
        ({"y": 0}, ValueError, r"chunks\['y'\]"),
        ("big", ValueError, "chunks must be"),
        (3.5, TypeError, "chunks must be"),
    ],
)
def test_bad_chunks(chunks, err, match):
    with pytest.raises(err, match=match):
        bi.from_array(np.zeros((4, 4)), chunks=chunks)


def test_bad_ndim_and_dims():
    with pytest.raises(ValueError, match="ndim=5"):
        bi.from_array(np.zeros((1, 1, 1, 1, 1)))
    with pytest.raises(ValueError, match="dims"):
        bi.from_array(np.zeros((2, 2)), dims=("y", "x", "band"))
    with pytest.raises(TypeError, match="nodata"):
        bi.from_array(np.zeros((2, 2)), nodata="zero")


def test_per_dim_scalar_never_touches_band_or_image():
    img = xr.DataArray(np.zeros((2, 4, 5, 3)), dims=("image", "y", "x", "band"))
    assert per_dim(img, 1.5, "sigma") == (0.0, 1.5, 1.5, 0.0)
    assert per_dim(img, {"image": 1}, "sigma") == (1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"sigma names unknown dim\(s\) \['z'\].*'image', 'y'"):
        per_dim(img, {"z": 1}, "sigma")
    with pytest.raises(ValueError, match=r"sigma\['y'\] must be finite and >= 0"):
        per_dim(img, {"y": -1}, "sigma")
    with pytest.raises(ValueError, match="finite"):
        per_dim(img, float("nan"), "sigma")
    with pytest.raises(TypeError, match="sigma must be a number"):
        per_dim(img, "2", "sigma")


def test_geotiff_crs_and_transform_survive_to_zarr(tmp_path):
    rasterio = pytest.importorskip("rasterio")  # the optional `geo` extra
    from rasterio.transform import from_origin

    arr = np.random.default_rng(0).integers(1, 255, (3, 64, 80), dtype="uint8")
    transform = from_origin(500000, 4000000, 10, 10)
    with rasterio.open(
        tmp_path / "g.tif",
        "w",
        driver="GTiff",
        height=64,
        width=80,
        count=3,
        dtype="uint8",
        crs="EPSG:32633",
        transform=transform,
        tiled=True,
        blockxsize=32,
        blockysize=32,
    ) as f:
        f.write(arr)
    img = bi.open_image(tmp_path / "g.tif", nodata=0, chunks={"y": 32, "x": 32})
    assert img.dims == ("y", "x", "band")
    np.testing.assert_array_equal(img.values, np.moveaxis(arr, 0, -1).astype("float32"))
    np.testing.assert_allclose(img.x.values[:2], [500005.0, 500015.0])  # pixel centres
    bi.to_zarr(bi.gaussian_filter(img, 1.0), tmp_path / "o.zarr", progress=False)
    out = xr.open_zarr(tmp_path / "o.zarr")["image"]
    assert out.rio.crs.to_epsg() == 32633
    assert out.rio.transform() == transform
