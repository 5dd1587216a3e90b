"""The S3 test server (tests/s3server.py) works: real clients, real dask workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests import s3server
from tests.s3server import (  # noqa: F401  (the s3_server and s3_bucket fixtures)
    create_bucket,
    remove_bucket,
    s3_bucket_fixture,
    s3_server_fixture,
)

s3fs = pytest.importorskip("s3fs")
zarr = pytest.importorskip("zarr")


def _fsspec_store(bucket: s3server.S3Bucket, prefix: str) -> zarr.storage.FsspecStore:
    return zarr.storage.FsspecStore.from_url(
        bucket.url(prefix), storage_options=bucket.storage_options
    )


def _read_on_worker(store: zarr.storage.FsspecStore, path: str) -> tuple[float, int]:
    return float(zarr.open_array(store, path=path, mode="r")[:].sum()), os.getpid()


@pytest.mark.cluster
def test_zarr_round_trip_through_cluster_workers(s3_bucket, client):
    import dask.array as da
    import xarray as xr

    data = np.arange(256 * 192, dtype="float32").reshape(256, 192)
    ds = xr.Dataset({"v": (("y", "x"), da.from_array(data, chunks=64))})
    store = _fsspec_store(s3_bucket, "round.zarr")
    ds.to_zarr(store, mode="w", zarr_format=3, consolidated=False)

    keys = s3_bucket.keys("round.zarr/")
    assert "round.zarr/zarr.json" in keys
    assert len([k for k in keys if k.startswith("round.zarr/v/c/")]) == 4 * 3
    back = xr.open_zarr(store, consolidated=False)
    np.testing.assert_array_equal(back.v.values, data)
    # the store pickles to a worker process, which reads the server itself
    total, pid = client.submit(_read_on_worker, store.with_read_only(True), "v").result()
    assert total == float(data.sum())
    assert pid != os.getpid()


def test_each_test_gets_a_fresh_private_bucket(s3_server, s3_bucket):
    assert s3_bucket.keys() == []
    s3_bucket.put("a/one", b"1")
    other = create_bucket(s3_server)
    try:
        assert other.name != s3_bucket.name
        assert other.keys() == []
        other.put("a/two", b"2")
        assert s3_bucket.keys() == ["a/one"]
        assert s3_bucket.url("x.zarr") == f"s3://{s3_bucket.name}/x.zarr"
    finally:
        remove_bucket(other)
    assert other.name not in [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]


def test_credentials_are_checked(s3_bucket):
    s3_bucket.put("k", b"data")
    good = s3fs.S3FileSystem(**s3_bucket.storage_options, skip_instance_cache=True)
    assert good.cat(f"{s3_bucket.name}/k") == b"data"
    bad = s3fs.S3FileSystem(
        **{**s3_bucket.storage_options, "secret": "wrong"}, skip_instance_cache=True
    )
    with pytest.raises(PermissionError):
        bad.cat(f"{s3_bucket.name}/k")


def test_corrupt_and_delete_reach_zarr_checksums(s3_bucket):
    store = _fsspec_store(s3_bucket, "crc.zarr")
    arr = zarr.create_array(
        store,
        shape=(8, 8),
        chunks=(4, 4),
        dtype="float32",
        compressors=[zarr.codecs.ZstdCodec(), zarr.codecs.Crc32cCodec()],
        fill_value=-1,
    )
    arr[:] = 1
    chunk = "crc.zarr/c/0/1"
    before = s3_bucket.get(chunk)
    s3_bucket.corrupt(chunk, offset=3)
    after = s3_bucket.get(chunk)
    assert len(after) == len(before) and after != before
    with pytest.raises(ValueError, match="checksum"):
        arr[:]
    s3_bucket.delete(chunk)
    assert chunk not in s3_bucket.keys()
    assert arr[0, 7] == -1  # a missing chunk reads as the fill value


def test_env_points_a_subprocess_at_the_server(s3_bucket):
    s3_bucket.put("hello.txt", b"hi")
    code = "import s3fs, sys; sys.stdout.write(s3fs.S3FileSystem().cat(sys.argv[1]).decode())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run(
        [sys.executable, "-c", code, f"{s3_bucket.name}/hello.txt"],
        env={**env, **s3_bucket.env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout == "hi", out.stderr


def test_a_server_that_cannot_start_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(s3server, "_LAUNCHER", "import sys; print('no server'); sys.exit(3)")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="exited with code 3(.|\n)*no server"):
        s3server.start_s3_server(tmp_path)
    assert time.monotonic() - start < 10
