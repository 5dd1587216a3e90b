"""Zarr output: provenance, completeness, overwrite refusal, resume, checksums."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

import bigimg as bi
from tests.helpers import slow_block

SLOW_WRITER = """
import sys
import dask
import bigimg as bi
from tests.test_io import _slow_image

with dask.config.set(scheduler="threads", num_workers=2):
    bi.to_zarr(_slow_image(), sys.argv[1], config=["slow"], progress=False)
"""


def _slow_image() -> xr.DataArray:
    """The killed writer's image; the resume computes the same (its fingerprint is the graph)."""
    arr = da.from_array(np.arange(64 * 64, dtype="float32").reshape(64, 64), chunks=8)
    slowed = arr.map_blocks(slow_block, dtype="float32", meta=np.empty((0, 0), "float32"))
    return bi.from_array(slowed)


def _expected() -> np.ndarray:
    return np.arange(64 * 64, dtype="float32").reshape(64, 64, 1)


def _chunk_files(store: Path) -> list[Path]:
    """Stored chunks: a ``*.partial`` file is a chunk whose write was killed, never a chunk."""
    files = (store / "image" / "c").rglob("*")
    return [p for p in files if p.is_file() and not p.name.endswith(".partial")]


def test_round_trip_with_coords_and_provenance(tmp_path):
    arr = np.random.default_rng(1).random((30, 20, 2)).astype("float32")
    arr[0, 0, 0] = np.nan
    img = bi.from_array(arr, chunks={"y": 7, "x": 9}).assign_coords(
        y=np.arange(30) * 10.0, x=np.arange(20) * -10.0, band=["red", "nir"]
    )
    img.attrs["units"] = "reflectance"
    res = bi.to_zarr(img, tmp_path / "o.zarr", config=[{"op": "x"}], source="s.tif", progress=False)
    assert res.chunks_written == 5 * 3 and res.chunks_skipped == 0
    ds = xr.open_zarr(tmp_path / "o.zarr")  # plain xarray reads it, by dim names
    assert list(ds.data_vars) == ["image"]
    assert ds["image"].dims == ("band", "y", "x")  # on disk in OME-NGFF order
    xr.testing.assert_identical(
        ds["image"].transpose(*img.dims).drop_attrs().compute(),
        img.rename("image").drop_attrs().compute(),
    )
    assert ds["image"].attrs["units"] == "reflectance"
    assert ds.attrs["bigimg_complete"] is True
    assert ds.attrs["bigimg_source"] == "s.tif"
    assert json.loads(ds.attrs["bigimg_config"]) == [{"op": "x"}]
    assert ds.attrs["bigimg_version"] == bi.__version__
    out = bi.open_zarr(tmp_path / "o.zarr")
    assert out.attrs["units"] == "reflectance" and out.attrs["bigimg_complete"] is True
    assert out.chunks == ((7, 7, 7, 7, 2), (9, 9, 2), (2,))


def test_irregular_chunks_are_regularised(tmp_path):
    img = bi.from_array(np.ones((10, 10)), chunks={"y": (3, 7), "x": 5})
    bi.to_zarr(img, tmp_path / "o.zarr", progress=False)
    info = bi.store_info(tmp_path / "o.zarr")  # on-disk order: (band, y, x)
    assert info["dims"] == ["band", "y", "x"] and info["chunks"] == [1, 7, 5]
    np.testing.assert_array_equal(bi.open_zarr(tmp_path / "o.zarr").values, img.values)


def test_dask_coordinate_written(tmp_path):
    img = bi.from_array(np.ones((8, 8)), chunks={"y": 4, "x": 4})
    img = img.assign_coords(weight=(("y", "x"), img.isel(band=0).data * 2))
    bi.to_zarr(img, tmp_path / "o.zarr", progress=False)
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "o.zarr")["weight"].values, 2.0)


def test_image_shaped_coordinate_reads_back_in_bigimg_order(tmp_path):
    """On disk (band, y, x) like the image; bi.open_zarr gives it back as (y, x, band)."""
    img = bi.from_array(np.arange(96.0).reshape(8, 6, 2), chunks={"y": 4, "x": 4})
    img = img.assign_coords(weight=(("y", "x", "band"), img.data * 2))
    bi.to_zarr(img, tmp_path / "o.zarr", progress=False)
    assert xr.open_zarr(tmp_path / "o.zarr")["weight"].dims == ("band", "y", "x")
    out = bi.open_zarr(tmp_path / "o.zarr")
    assert out.dims == out["weight"].dims == ("y", "x", "band")
    np.testing.assert_array_equal(out["weight"].values, img.values * 2)


def test_refuses_overwrite_and_bad_paths(tmp_path):
    img = bi.from_array(np.ones((4, 4)))
    store = tmp_path / "o.zarr"
    bi.to_zarr(img, store, progress=False)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    with pytest.raises(FileExistsError, match="already exists.*overwrite"):
        bi.to_zarr(img * 2, store, progress=False)
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == before
    bi.to_zarr(img * 2, store, overwrite=True, progress=False)
    assert float(bi.open_zarr(store).max()) == 2.0
    (tmp_path / "file.zarr").write_text("not a store")
    with pytest.raises(ValueError, match="is a file, not a Zarr store"):
        bi.to_zarr(img, tmp_path / "file.zarr", overwrite=True, progress=False)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="non-empty folder that is not a Zarr store"):
        bi.to_zarr(img, tmp_path / "docs", overwrite=True, progress=False)
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "precious"
    with pytest.raises(FileNotFoundError, match="parent folder"):
        bi.to_zarr(img, tmp_path / "missing" / "o.zarr", progress=False)
    with pytest.raises(ValueError, match="exclusive"):
        bi.to_zarr(img, store, overwrite=True, resume=True)
    with pytest.raises(TypeError, match="DataArray"):
        bi.to_zarr(np.ones(3), store)


def test_open_zarr_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such Zarr store"):
        bi.open_zarr(tmp_path / "nope.zarr")
    (tmp_path / "f.zarr").write_text("x")
    with pytest.raises(ValueError, match="not a Zarr store"):
        bi.open_zarr(tmp_path / "f.zarr")
    xr.Dataset({"other": ("y", np.arange(3))}).to_zarr(
        tmp_path / "x.zarr", zarr_format=3, consolidated=True
    )
    with pytest.raises(ValueError, match="no 'image' variable"):
        bi.open_zarr(tmp_path / "x.zarr")


def _interrupted_store(tmp_path: Path, min_chunks: int = 6) -> Path:
    store = tmp_path / "slow.zarr"
    root = Path(__file__).parent.parent  # where `tests` imports from
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(store)], cwd=root)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if store.exists() and len(_chunk_files(store)) >= min_chunks:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the writer never wrote chunks")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return store


def test_killed_write_is_incomplete_and_resumes_identically(tmp_path):
    store = _interrupted_store(tmp_path)
    stored = len(_chunk_files(store))
    assert 0 < stored < 64
    info = bi.store_info(store)
    assert info["complete"] is False and info["chunks_stored"] == stored
    with pytest.raises(ValueError, match="incomplete"):
        bi.open_zarr(store)
    partial = bi.open_zarr(store, allow_incomplete=True)
    assert np.isnan(partial.values).any()
    # a write killed mid-chunk leaves only a *.partial temp file: never a chunk
    leftover = store / "image" / "c" / "7" / "7.1234.partial"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"\x00" * 10)
    img = _slow_image()
    with pytest.raises(FileExistsError):
        bi.to_zarr(img, store, config=["slow"], progress=False)
    other = bi.from_array(np.arange(64 * 64, dtype="float32").reshape(64, 64), chunks=8)
    with pytest.raises(ValueError, match="another computation"):  # same values, not the same graph
        bi.to_zarr(other, store, config=["slow"], resume=True, progress=False)
    res = bi.to_zarr(img, store, config=["slow"], resume=True, progress=False)
    assert res.chunks_skipped == stored and res.chunks_written == 64 - stored
    assert not leftover.exists()
    out = bi.open_zarr(store)
    np.testing.assert_array_equal(out.values, _expected())
    # identical bytes to an uninterrupted run
    clean = tmp_path / "clean.zarr"
    bi.to_zarr(img, clean, config=["slow"], progress=False)
    for f in _chunk_files(clean):
        assert (store / f.relative_to(clean)).read_bytes() == f.read_bytes()
    again = bi.to_zarr(img, store, config=["slow"], resume=True, progress=False)
    assert again.chunks_written == 0  # complete: nothing to do


def test_resume_checks_shape(tmp_path):
    """A config's fingerprint (which names no shape) matched: the arrays are checked too."""
    store = _interrupted_store(tmp_path, min_chunks=2)
    img = bi.from_array(np.zeros((64, 32), "float32"), chunks=8)
    config_fp = {"steps": "the same config"}
    zarr.open_group(str(store), mode="r+").attrs["bigimg_fingerprint"] = config_fp
    with pytest.raises(ValueError, match="shape, chunks, dtype"):
        bi.to_zarr(img, store, fingerprint=config_fp, resume=True, progress=False)


def test_resume_without_store_writes_fresh(tmp_path):
    img = bi.from_array(np.ones((4, 4)))
    assert bi.to_zarr(img, tmp_path / "n.zarr", resume=True, progress=False).chunks_written == 1


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_chunk_is_detected(tmp_path, damage):
    img = bi.from_array(np.random.default_rng(0).random((16, 16)), chunks=8)
    store = tmp_path / "o.zarr"
    bi.to_zarr(img, store, progress=False)
    chunk = store / "image" / "c" / "0" / "1" / "0"  # keys in on-disk order: band, y, x
    raw = bytearray(chunk.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    else:
        raw = raw[: len(raw) // 2]
    chunk.write_bytes(bytes(raw))
    for chunks in [None, {"y": 16, "x": 16}]:  # one task per store chunk, or one for all
        with pytest.raises(
            bi.CorruptStoreError, match=r"array .image. chunk \(0, 1, 0\) cannot be read"
        ):
            bi.open_zarr(store, chunks=chunks).values  # noqa: B018


def test_store_info_counts(tmp_path):
    img = bi.from_array(np.ones((10, 10)), chunks=4)
    bi.to_zarr(
        img, tmp_path / "o.zarr", config=[{"op": "astype", "dtype": "float32"}], progress=False
    )
    info = bi.store_info(tmp_path / "o.zarr")
    assert info["dims"] == ["band", "y", "x"] and info["shape"] == [1, 10, 10]  # on disk
    assert info["chunks_stored"] == info["chunks_total"] == 9
    assert info["complete"] is True


def test_write_on_local_cluster(tmp_path, client):
    rng = np.random.default_rng(3)
    arr = rng.random((50, 40, 3)).astype("float32")
    img = bi.from_array(arr, chunks={"y": 16, "x": 16})
    res = bi.to_zarr(img, tmp_path / "c.zarr", progress=False)
    assert res.chunks_written == 4 * 3
    np.testing.assert_array_equal(bi.open_zarr(tmp_path / "c.zarr").values, arr)
    assert os.path.exists(tmp_path / "c.zarr" / "zarr.json")


def test_pyramid_levels_through_to_zarr(tmp_path):
    arr = np.random.default_rng(5).random((2100, 1300)).astype("float32")
    arr[:100] = np.nan
    img = bi.from_array(arr, chunks=512)
    bi.to_zarr(img, tmp_path / "p.zarr", pyramid=True, progress=False)
    level1 = bi.open_zarr(tmp_path / "p.zarr", level=1)
    expected = np.nanmean(arr[:2100, :1300].reshape(1050, 2, 650, 2), axis=(1, 3))
    np.testing.assert_allclose(level1.values[..., 0], expected, rtol=1e-6)
    assert bi.open_zarr(tmp_path / "p.zarr", level=2).shape == (525, 325, 1)


def test_stack_round_trip_keeps_image_labels(tmp_path):
    """A stack's variable shares its name with the `image` dim; it still reads back."""
    arr = np.random.default_rng(2).random((4, 8, 6, 2)).astype("float32")
    stack = bi.from_array(arr, chunks={"image": 2}).assign_coords(image=["a", "b", "c", "d"])
    bi.to_zarr(stack, tmp_path / "s.zarr", progress=False)
    out = bi.open_zarr(tmp_path / "s.zarr")
    xr.testing.assert_identical(
        out.drop_attrs().compute(), stack.rename("image").drop_attrs().compute()
    )
    on_disk = xr.open_zarr(tmp_path / "s.zarr")["image"]
    assert on_disk.dims == ("image", "band", "y", "x")
    np.testing.assert_array_equal(on_disk.transpose(*stack.dims).values, arr)
    assert bi.open_image(tmp_path / "s.zarr").dims == ("image", "y", "x", "band")
