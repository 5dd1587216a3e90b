"""Object storage for real: a moto S3 server on 127.0.0.1 (tests/s3server.py), real dask
scheduler and worker processes, the CLI in subprocesses, SIGKILL and resume.

Each test gets its own s3_bucket. Credentials reach the library through
``storage_options`` (Python and configs) or the standard ``AWS_*`` environment
(the CLI), and must never show up in a store's attrs or in any message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import bigimg as bi
from bigimg.errors import CorruptStoreError
from tests.helpers import assert_one_line_error, bigimg, free_port, start_dask, stop_dask
from tests.s3server import s3_bucket_fixture, s3_server_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.cluster


def _env(s3_bucket, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **s3_bucket.env, **extra}


def _image() -> np.ndarray:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(96, 80, 2)).astype("float32")
    data[:7, :9] = np.nan
    return data


def test_round_trip_through_real_worker_processes(s3_bucket, tmp_path):
    port = free_port()
    procs = start_dask(tmp_path, port, 2)
    try:
        url = s3_bucket.url("mosaic.zarr")
        data = _image()
        img = bi.from_array(data, chunks={"y": 32, "x": 32})
        with bi.Cluster(f"tcp://127.0.0.1:{port}"):
            res = bi.to_zarr(img, url, storage_options=s3_bucket.storage_options, progress=False)
            back = bi.open_zarr(url, storage_options=s3_bucket.storage_options)
            filtered = bi.gaussian_filter(back, {"y": 1.5, "x": 1.5})
            bi.to_zarr(
                filtered,
                s3_bucket.url("filtered.zarr"),
                storage_options=s3_bucket.storage_options,
                progress=False,
            )
            out = bi.open_zarr(
                s3_bucket.url("filtered.zarr"), storage_options=s3_bucket.storage_options
            ).values
    finally:
        stop_dask(procs)
    assert res.path == url and res.chunks_written == 3 * 3
    np.testing.assert_array_equal(back.values, data)
    np.testing.assert_allclose(out, bi.gaussian_filter(img, {"y": 1.5, "x": 1.5}).values)
    chunk_keys = [k for k in s3_bucket.keys("mosaic.zarr/image/c/")]
    assert len(chunk_keys) == 9
    attrs = json.loads(s3_bucket.get("mosaic.zarr/zarr.json"))
    assert s3_bucket.server.secret not in json.dumps(attrs)
    assert s3_bucket.server.key not in json.dumps(attrs)


def test_sharded_store_on_s3_has_one_object_per_shard(s3_bucket):
    opts = s3_bucket.storage_options
    img = bi.from_array(np.ones((128, 128), "float32"), chunks=16)
    bi.to_zarr(img, s3_bucket.url("sharded.zarr"), storage_options=opts, progress=False)
    plain = len(s3_bucket.keys("sharded.zarr/image/c/"))
    bi.to_zarr(
        img,
        s3_bucket.url("s.zarr"),
        storage_options=opts,
        shards={"y": 64, "x": 64},
        progress=False,
    )
    assert (plain, len(s3_bucket.keys("s.zarr/image/c/"))) == (64, 4)
    np.testing.assert_array_equal(
        bi.open_zarr(s3_bucket.url("s.zarr"), storage_options=opts).values, img.values
    )


def test_corrupt_object_is_named(s3_bucket):
    opts = s3_bucket.storage_options
    url = s3_bucket.url("c.zarr")
    bi.to_zarr(bi.from_array(_image(), chunks=32), url, storage_options=opts, progress=False)
    s3_bucket.corrupt("c.zarr/image/c/0/1/2")  # on disk: (band, y, x)
    with pytest.raises(CorruptStoreError, match=r"array 'image' chunk \(0, 1, 2\) cannot be read"):
        _ = bi.open_zarr(url, storage_options=opts).values


def test_remote_geotiff_and_zarr_inputs(s3_bucket, tmp_path):
    data = (np.arange(64 * 48, dtype="uint16").reshape(64, 48)) % 251
    tif = tmp_path / "geo.tif"
    with rasterio.open(
        tif,
        "w",
        driver="GTiff",
        height=64,
        width=48,
        count=1,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(500000, 4100000, 10, 10),
        tiled=True,
        blockxsize=16,
        blockysize=16,
    ) as dst:
        dst.write(data, 1)
    s3_bucket.put("in/geo.tif", tif.read_bytes())
    opts = s3_bucket.storage_options
    img = bi.open_image(s3_bucket.url("in/geo.tif"), storage_options=opts)
    np.testing.assert_array_equal(img.values[..., 0], data)
    assert img.rio.crs.to_epsg() == 32633
    local = bi.open_image(tif)  # GDAL reads the local copy: the same georeferencing
    for name in ("x", "y", "band"):
        np.testing.assert_array_equal(img[name].values, local[name].values)
    assert img.rio.transform() == local.rio.transform()
    bi.to_zarr(img, s3_bucket.url("from-tif.zarr"), storage_options=opts, progress=False)
    again = bi.open_image(s3_bucket.url("from-tif.zarr"), storage_options=opts, chunks=32)
    np.testing.assert_array_equal(again.values[..., 0], data)


def _config(tmp_path: Path, out: str) -> Path:
    cfg = tmp_path / "noise.toml"
    cfg.write_text(
        "[input]\nnoise = { shape = [2048, 1024], length_scale = 3, seed = 7 }\n"
        'chunks = 128\n\n[[steps]]\nop = "gaussian_filter"\nsigma = 1.0\n\n'
        f'[output]\npath = "{out}"\n'
    )
    return cfg


def test_cli_killed_mid_write_then_resume_is_bit_identical(s3_bucket, tmp_path):
    env = _env(s3_bucket)
    url = s3_bucket.url("run.zarr")
    cfg = _config(tmp_path, url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigimg", "run", str(cfg), "--workers", "1", "--quiet"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while len(s3_bucket.keys("run.zarr/image/c/")) < 8 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    stored = len(s3_bucket.keys("run.zarr/image/c/"))
    assert 8 <= stored < 128, "the run finished before it could be killed"
    # its writer lease is left (a killed writer cannot release it); the resume below takes
    # it over at once, as its writer, of this host, is gone (bigimg/io/lock.py)
    assert ".run.zarr.bigimg-lock" in s3_bucket.keys()
    info = bigimg("info", url, "--json", env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["complete"] is False
    resumed = bigimg("run", str(cfg), "--resume", "--workers", "1", "--quiet", env=env)
    assert resumed.returncode == 0, resumed.stderr
    written = int(resumed.stdout.split("(")[1].split(" chunks written")[0])
    skipped = int(resumed.stdout.split("written, ")[1].split(" already")[0])
    assert skipped >= stored and written + skipped == 128
    local = tmp_path / "local.zarr"
    ref = bigimg("run", str(_config(tmp_path, str(local))), "--workers", "1", "--quiet")
    assert ref.returncode == 0, ref.stderr
    opts = s3_bucket.storage_options
    np.testing.assert_array_equal(
        bi.open_zarr(url, storage_options=opts).values, bi.open_zarr(local).values
    )
    info = json.loads(bigimg("info", url, "--json", env=env).stdout)
    assert info["complete"] is True and info["bigimg_source"] == "noise"
    assert s3_bucket.server.secret not in json.dumps(info)


def test_config_storage_options_and_info_provenance(s3_bucket, tmp_path):
    opts = s3_bucket.storage_options
    bi.to_zarr(bi.from_array(_image(), chunks=32), s3_bucket.url("in.zarr"), storage_options=opts)
    cfg = tmp_path / "c.toml"
    table = (
        f'key = "{opts["key"]}"\nsecret = "{opts["secret"]}"\n'
        f'endpoint_url = "{opts["endpoint_url"]}"\n'
    )
    cfg.write_text(
        f'[input]\npath = "{s3_bucket.url("in.zarr")}"\n[input.storage_options]\n{table}\n'
        '[[steps]]\nop = "astype"\ndtype = "float64"\n\n'
        f'[output]\npath = "{s3_bucket.url("out.zarr")}"\nshards = {{ y = 64, x = 64 }}\n'
        f"[output.storage_options]\n{table}"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    run = bigimg("run", str(cfg), "--workers", "1", "--quiet", env=env)
    assert run.returncode == 0, run.stderr
    out = bi.open_zarr(s3_bucket.url("out.zarr"), storage_options=opts)
    np.testing.assert_array_equal(out.values, _image().astype("float64"))
    assert opts["secret"] not in json.dumps(dict(out.attrs), default=str)
    info = bigimg("info", s3_bucket.url("out.zarr"), env=_env(s3_bucket))
    assert info.returncode == 0 and "complete" in info.stdout
    assert opts["secret"] not in info.stdout + info.stderr
    again = bigimg("run", str(cfg), "--workers", "1", "--quiet", env=env)
    assert_one_line_error(again, "already exists")
    assert opts["secret"] not in again.stderr


@pytest.mark.parametrize("case", ["refused endpoint", "missing s3_bucket", "wrong secret"])
def test_unreachable_or_refused_storage_is_one_line_exit_2_fast(s3_bucket, case):
    env = _env(s3_bucket)
    url = s3_bucket.url("x.zarr")
    if case == "refused endpoint":
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"
    elif case == "missing s3_bucket":
        url = "s3://no-such-bucket-bigimg/x.zarr"
    else:
        env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    start = time.monotonic()
    proc = bigimg("noise", url, "--shape", "64x64", "--length-scale", "2", env=env, timeout=60)
    assert time.monotonic() - start < 30
    assert_one_line_error(proc, "")
    assert "wrong-secret" not in proc.stderr and s3_bucket.server.secret not in proc.stderr
    info = bigimg("info", url, env=env, timeout=60)
    assert_one_line_error(info, "")


def test_quicklook_and_info_hist_write_pngs_to_s3(s3_bucket, tmp_path):
    """#22 item 11: the URL reaches the object store intact (it was mangled to 's3:/bucket'),
    the PNG is put once, and an existing object is refused without --overwrite."""
    url = s3_bucket.url("img.zarr")
    img = bi.from_array(_image(), chunks={"y": 48, "x": 40})
    bi.to_zarr(img, url, storage_options=s3_bucket.storage_options, progress=False)
    env = _env(s3_bucket)
    q, h = s3_bucket.url("q.png"), s3_bucket.url("h.png")
    proc = bigimg("quicklook", url, q, "--max-size", "32", "--quiet", "--workers", "1", env=env)
    assert proc.returncode == 0, proc.stderr
    proc = bigimg("info", url, "--hist", h, "--exclude", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    for key in ("q.png", "h.png"):
        assert s3_bucket.get(key)[:8] == b"\x89PNG\r\n\x1a\n"
    again = bigimg("quicklook", url, q, "--max-size", "32", "--workers", "1", env=env)
    assert_one_line_error(again, "already exists")
    assert_one_line_error(bigimg("info", url, "--hist", h, env=env), "already exists")
    assert_one_line_error(
        bigimg("info", url, "--hist", s3_bucket.url("h.txt"), env=env), "must end in '.png'"
    )
    over = bigimg("info", url, "--hist", h, "--overwrite", env=env)
    assert over.returncode == 0, over.stderr
    assert sorted(k for k in s3_bucket.keys() if k.endswith(".png")) == ["h.png", "q.png"]
