"""Defects found by the issue-22 hostile pass (the Python API as a notebook user chains it).

Each test goes through the path the user took and failed before its fix.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import xarray as xr
import zarr

import bigimg as bi


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _field(shape=(40, 30), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_zarr_group_holding_one_plain_array_opens_and_filters(tmp_path):
    """``zarr.open_group(...).create_array(...)`` (no dim names) was called a damaged store."""
    data = _field()
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    arr = group.create_array("data", shape=data.shape, chunks=(16, 16), dtype="float32")
    arr[:] = data
    img = bi.open_image(tmp_path / "g.zarr")
    assert img.dims == ("y", "x", "band") and img.shape == (40, 30, 1)
    out = bi.gaussian_filter(img, 1.0).values[..., 0]
    np.testing.assert_allclose(out, ndi.gaussian_filter(data.astype(float), 1.0), atol=1e-5)


def test_zarr_group_with_two_plain_arrays_is_refused_by_name(tmp_path):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    for name in ("a", "b"):
        group.create_array(name, shape=(8, 8), dtype="float32")
    with pytest.raises(ValueError, match="exactly one 2-4 dimensional array"):
        bi.open_image(tmp_path / "g.zarr")


def test_unknown_chunk_sizes_are_refused_naming_the_argument():
    """Boolean indexing leaves NaN sizes: the filter failed with 'cannot convert float NaN'."""
    d = da.from_array(_field(), chunks=8)
    d = d[d[:, 0] > -10]
    with pytest.raises(ValueError, match=r"arr has unknown chunk sizes .*compute_chunk_sizes"):
        bi.from_array(d)
    img = xr.DataArray(d, dims=("y", "x"))
    for op in (lambda x: bi.gaussian_filter(x, 1), bi.coarsen_mean, bi.histogram):
        with pytest.raises(ValueError, match=r"unknown chunk sizes along \['y'\]"):
            op(img)
    fixed = bi.from_array(d.compute_chunk_sizes())
    assert bi.gaussian_filter(fixed, 1).shape == (40, 30, 1)


def test_paletted_png_reads_its_colours(tmp_path):
    """A 'P' PNG was read as palette indices (0, 1, 2, ...), not as the image's colours."""
    import PIL.Image

    idx = np.random.default_rng(0).integers(0, 4, (20, 16), dtype="uint8")
    im = PIL.Image.fromarray(idx, "P")
    im.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    im.save(tmp_path / "p.png")
    img = bi.open_image(tmp_path / "p.png")
    assert img.shape == (20, 16, 3)
    np.testing.assert_array_equal(img.values, np.asarray(im.convert("RGB")))
    im.save(tmp_path / "t.png", transparency=0)
    assert bi.open_image(tmp_path / "t.png").sizes["band"] == 4  # alpha kept


def test_tiff_at_a_memory_url_opens(tmp_path):
    """tifffile's store of a writable file object (memory://) was refused by zarr in mode 'r'."""
    import fsspec
    import tifffile

    data = _field()
    tifffile.imwrite(tmp_path / "a.tif", data, tile=(16, 16))
    fsspec.filesystem("memory").put(str(tmp_path / "a.tif"), "/hostile/a.tif")
    try:
        img = bi.open_image("memory://hostile/a.tif")
        np.testing.assert_array_equal(img.values[..., 0], data)
    finally:
        fsspec.filesystem("memory").rm("/hostile", recursive=True)


def test_standardize_default_dims_on_a_plain_2d_dataarray():
    """The default dims ("y", "x", "band") named a band a plain 2-D DataArray lacks."""
    data = _field()
    out = bi.standardize(xr.DataArray(data, dims=("y", "x"))).values
    ref = (data - data.mean(dtype=np.float64)) / data.std(dtype=np.float64)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="band"):  # named explicitly, it is still checked
        bi.standardize(xr.DataArray(data, dims=("y", "x")), dims=("y", "band"))
