"""The storage layer on any store: memory:// URLs (fast, in process), file:// and sharding.

Everything here goes through zarr's store API, so what holds for
``memory://`` holds for object storage; tests/test_s3.py repeats the
guarantees on a real S3 server with real dask worker processes.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import xarray as xr
import zarr

import bigimg as bi
from bigimg.errors import CorruptStoreError
from bigimg.files import overlaps
from bigimg.io.location import Location


@pytest.fixture
def url() -> str:
    """A fresh memory:// prefix per test (fsspec's memory filesystem is per process)."""
    return f"memory://bigimg-tests/{uuid.uuid4().hex}/out.zarr"


@pytest.fixture
def img() -> xr.DataArray:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(64, 48, 2)).astype("float32")
    data[:5] = np.nan
    return bi.from_array(data, chunks={"y": 16, "x": 16})


def _keys(url: str) -> list[str]:
    return sorted(Location.of(url).keys())


def test_round_trip_on_memory_url_with_provenance(url, img):
    res = bi.to_zarr(img, url, progress=False)
    assert res.path == url and res.chunks_written == 4 * 3
    out = bi.open_zarr(url)
    np.testing.assert_array_equal(out.values, img.values)
    info = bi.store_info(url)
    assert info["complete"] is True and info["damaged"] is None
    assert (info["chunks_stored"], info["chunks_total"]) == (12, 12)
    # plain xarray reads it through zarr's own store layer too
    store = zarr.storage.FsspecStore.from_url(url)
    on_disk = xr.open_zarr(store)["image"].transpose("y", "x", "band")  # stored band-first
    np.testing.assert_array_equal(on_disk.values, img.values)


def test_existing_store_refused_replaced_and_resumed(url, img):
    bi.to_zarr(img, url, progress=False)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        bi.to_zarr(img, url, progress=False)
    again = bi.to_zarr(img, url, resume=True, progress=False)
    assert again.chunks_written == 0  # complete: nothing recomputed
    replaced = bi.to_zarr(img * 2, url, overwrite=True, progress=False)
    assert replaced.chunks_written == 12
    np.testing.assert_array_equal(bi.open_zarr(url).values, img.values * 2)


def test_resume_writes_only_missing_chunks(url, img):
    bi.to_zarr(img, url, progress=False)
    loc = Location.of(url)
    from zarr.core.sync import sync

    store = loc.zarr_store()
    for key in ("image/c/0/0/0", "image/c/0/3/2"):  # on disk: (band, y, x)
        sync(store.delete(key))
    group = zarr.open_group(store, mode="r+", use_consolidated=False)
    group.attrs["bigimg_complete"] = False  # as a killed write leaves it
    res = bi.to_zarr(img, url, resume=True, progress=False)
    assert (res.chunks_written, res.chunks_skipped) == (2, 10)
    np.testing.assert_array_equal(bi.open_zarr(url).values, img.values)


def test_missing_object_in_complete_store_is_named(url, img):
    bi.to_zarr(img, url, progress=False)
    from zarr.core.sync import sync

    sync(Location.of(url).zarr_store().delete("image/c/0/1/1"))  # (band, y, x)
    assert "1 of 12 chunks missing" in bi.store_info(url)["damaged"]
    with pytest.raises(CorruptStoreError, match=r"chunk \(0, 1, 1\) is missing"):
        _ = bi.open_zarr(url).values


def test_corrupt_object_is_named(url, img):
    bi.to_zarr(img, url, progress=False)
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    store = Location.of(url).zarr_store()
    key = "image/c/0/2/1"  # on disk: (band, y, x)
    raw = bytearray(sync(store.get(key, default_buffer_prototype())).to_bytes())
    raw[len(raw) // 2] ^= 0xFF
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(bytes(raw))))
    with pytest.raises(CorruptStoreError, match=r"array 'image' chunk \(0, 2, 1\) cannot be read"):
        _ = bi.open_zarr(url).values


def test_sharded_store_one_object_per_shard_checksums_per_chunk(url, img):
    res = bi.to_zarr(img, url, shards={"y": 32, "x": 32}, progress=False)
    assert res.chunks_written == 2 * 2  # one task per shard
    chunk_keys = [k for k in _keys(url) if k.startswith("image/c/")]
    assert len(chunk_keys) == 4
    arr = zarr.open_array(zarr.storage.FsspecStore.from_url(url), path="image", mode="r")
    assert arr.shards == (2, 32, 32) and arr.chunks == (2, 16, 16)  # band-first on disk
    np.testing.assert_array_equal(bi.open_zarr(url).values, img.values)
    info = bi.store_info(url)
    assert info["shards"] == [2, 32, 32] and info["chunks_total"] == 4
    # resume at shard granularity
    from zarr.core.sync import sync

    store = Location.of(url).zarr_store()
    sync(store.delete("image/c/0/1/0"))
    zarr.open_group(store, mode="r+", use_consolidated=False).attrs["bigimg_complete"] = False
    again = bi.to_zarr(img, url, shards={"y": 32, "x": 32}, resume=True, progress=False)
    assert (again.chunks_written, again.chunks_skipped) == (1, 3)
    np.testing.assert_array_equal(bi.open_zarr(url).values, img.values)


def test_sharded_local_store_matches_unsharded(tmp_path, img):
    bi.to_zarr(img, tmp_path / "a.zarr", progress=False)
    bi.to_zarr(img, tmp_path / "b.zarr", shards={"y": 64}, progress=False)
    np.testing.assert_array_equal(
        bi.open_zarr(tmp_path / "a.zarr").values, bi.open_zarr(tmp_path / "b.zarr").values
    )
    assert len(list((tmp_path / "b.zarr" / "image" / "c").rglob("*"))) < len(
        list((tmp_path / "a.zarr" / "image" / "c").rglob("*"))
    )


@pytest.mark.parametrize(
    ("shards", "match"),
    [
        ({"z": 32}, r"shards names unknown dim\(s\) \['z'\]"),
        ({"y": 24}, r"shards\['y'\]=24 must be a multiple of the chunk size 16"),
        ({"y": 0}, r"shards\['y'\] must be a positive int"),
        ([32, 32], "shards must be a dict"),
    ],
)
def test_bad_shards_refused_before_any_write(url, img, shards, match):
    with pytest.raises((ValueError, TypeError), match=match):
        bi.to_zarr(img, url, shards=shards, progress=False)
    assert _keys(url) == []


def test_file_url_is_the_local_path(tmp_path, img):
    res = bi.to_zarr(img, f"file://{tmp_path}/f.zarr", progress=False)
    assert res.path == tmp_path / "f.zarr"
    np.testing.assert_array_equal(bi.open_zarr(tmp_path / "f.zarr").values, img.values)


def test_open_image_reads_a_foreign_zarr_from_a_url(url):
    data = np.arange(48.0).reshape(6, 8)
    xr.DataArray(data, dims=("y", "x")).to_dataset(name="elevation").to_zarr(
        zarr.storage.FsspecStore.from_url(url), zarr_format=3
    )
    img = bi.open_image(url)
    assert img.dims == ("y", "x", "band")
    np.testing.assert_array_equal(img.values[..., 0], data)
    with pytest.raises(ValueError, match="overlaps the input"):
        bi.to_zarr(img, url + "/inner", progress=False)


def test_pyramid_on_a_url(url, img):
    bi.to_zarr(img, url, pyramid=True, progress=False)
    assert bi.store_info(url)["levels"] == []  # 64 px fits the default 1024
    big = bi.from_array(np.ones((96, 80), "float32"), chunks=32)
    url2 = url.replace("out.zarr", "big.zarr")
    bi.write_pyramid(bi.to_zarr(big, url2, progress=False).path, max_size=30)
    assert bi.store_info(url2)["levels"] == [1, 2]
    assert bi.open_level(url2, 2).shape == (24, 20, 1)


def test_urls_and_storage_options_never_leak_credentials(url, img):
    loc = Location.of("s3://bucket/x.zarr", {"key": "AKIA-SECRET", "secret": "s3cr3t"})
    assert "SECRET" not in repr(loc) and "s3cr3t" not in str(loc)
    assert str(Location.of("https://user:pw@host/x.zarr")) == "https://host/x.zarr"
    with pytest.raises(ValueError, match="storage_options apply to URLs"):
        Location.of("/tmp/x.zarr", {"anon": True})
    res = bi.to_zarr(img, url, progress=False, storage_options={"skip_instance_cache": False})
    attrs = dict(bi.open_zarr(res.path).attrs)
    assert "skip_instance_cache" not in str(attrs)


def test_overlap_checks_understand_urls():
    assert overlaps("s3://b/in.zarr", "s3://b/in.zarr/levels/1")
    assert not overlaps("s3://b/in.zarr", "s3://b/in.zarr2")
    assert not overlaps("s3://b/x.zarr", "gs://b/x.zarr")
    assert not overlaps("s3://b/x.zarr", "/b/x.zarr")


def test_read_only_and_missing_urls_are_clear_errors(img):
    with pytest.raises(ValueError, match="read-only"):
        bi.to_zarr(img, "https://example.invalid/x.zarr", progress=False)
    with pytest.raises(FileNotFoundError, match="no such Zarr store"):
        bi.open_zarr(f"memory://bigimg-tests/{uuid.uuid4().hex}/none.zarr")
    with pytest.raises(FileNotFoundError, match="no such file or Zarr store"):
        bi.open_image(f"memory://bigimg-tests/{uuid.uuid4().hex}/none.tif")
