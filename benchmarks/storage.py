"""Zarr I/O on object storage and local disk: bigimg against plain xarray, same codec and chunks.

Starts moto's S3 server on 127.0.0.1 (tests/s3server.py) and, on one
LocalCluster, alternates for each way and each store kind:

* write: ``bi.to_zarr`` against ``xarray.Dataset.to_zarr`` (same codec: Blosc
  zstd 3 + CRC32C, same chunks, consolidated metadata);
* read back: ``bi.open_zarr(...).compute()`` against ``xr.open_zarr(...).compute()``;

then writes 512² chunks with and without shards and reports the object
count and the write time. Prints s/GiB, the ratios (xarray time / bigimg
time: > 1 means bigimg is faster) and the medians of ``--repeat`` runs.

    python benchmarks/storage.py            # 1 GiB float32
    python benchmarks/storage.py --quick    # 64 MiB smoke run
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask.array as da
import xarray as xr
import zarr
from distributed import Client, LocalCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bigimg as bi  # noqa: E402
from tests.s3server import create_bucket, start_s3_server  # noqa: E402


def _image(side: int, chunk: int) -> xr.DataArray:
    data = da.random.default_rng(0).standard_normal((side, side), chunks=chunk, dtype="float32")
    return bi.from_array(data)


def _xr_write(img: xr.DataArray, store, chunk: int) -> None:
    from zarr.codecs import BloscCodec, Crc32cCodec

    enc = {
        "image": {
            "chunks": (chunk, chunk, 1),
            "compressors": [BloscCodec(cname="zstd", clevel=3), Crc32cCodec()],
        }
    }
    img.to_dataset(name="image").to_zarr(
        store, mode="w", zarr_format=3, consolidated=True, encoding=enc
    )


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _round(img, chunk, xr_store, bi_url, kw, times) -> None:
    """One alternation: xarray write, bigimg write, xarray read, bigimg read."""
    times["xr write"].append(_timed(lambda: _xr_write(img, xr_store, chunk)))
    times["bi write"].append(_timed(lambda: bi.to_zarr(img, bi_url, progress=False, **kw)))
    times["xr read"].append(_timed(lambda: xr.open_zarr(xr_store)["image"].compute()))
    times["bi read"].append(_timed(lambda: bi.open_zarr(bi_url, **kw).compute()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB instead of 1 GiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    side = 4096 if args.quick else 16384  # float32: 64 MiB or 1 GiB
    chunk = 2048
    gib = side * side * 4 / 2**30
    tmp = Path(tempfile.mkdtemp(prefix="bigimg-storage-"))
    server = start_s3_server(tmp / "s3")
    bucket = create_bucket(server)
    opts = bucket.storage_options
    img = _image(side, chunk)
    rows = []
    with (
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit="3GiB",
        ) as cluster,
        Client(cluster),
    ):
        for kind in ("s3", "local"):
            times: dict[str, list[float]] = {
                k: [] for k in ("bi write", "xr write", "bi read", "xr read")
            }
            for i in range(args.repeat):
                if kind == "s3":
                    bi_url, xr_url = bucket.url(f"bi{i}.zarr"), bucket.url(f"xr{i}.zarr")
                    xr_store = zarr.storage.FsspecStore.from_url(xr_url, storage_options=opts)
                    kw = {"storage_options": opts}
                else:
                    bi_url, xr_url = str(tmp / f"bi{i}.zarr"), str(tmp / f"xr{i}.zarr")
                    xr_store, kw = xr_url, {}
                _round(img, chunk, xr_store, bi_url, kw, times)
                if kind == "local":
                    shutil.rmtree(bi_url)
                    shutil.rmtree(xr_url)
                else:
                    bucket.clear()
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append((kind, med))
        # object counts with 512^2 chunks, with and without 4096^2 shards, on S3
        small = img.chunk({"y": 512, "x": 512})
        t_plain = _timed(
            lambda: bi.to_zarr(small, bucket.url("c512.zarr"), storage_options=opts, progress=False)
        )
        n_plain = len(bucket.keys("c512.zarr/"))
        t_shard = _timed(
            lambda: bi.to_zarr(
                small,
                bucket.url("s512.zarr"),
                storage_options=opts,
                shards={"y": 4096, "x": 4096},
                progress=False,
            )
        )
        n_shard = len(bucket.keys("s512.zarr/"))
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\n{gib:.2f} GiB float32, {chunk}² chunks, {args.workers} workers x 1 thread, "
        f"median of {args.repeat} (s/GiB; ratio = xarray / bigimg)"
    )
    print(
        f"{'store':6} {'bigimg write':>13} {'xarray write':>13} {'ratio':>6} {'bigimg read':>12} {'xarray read':>12} {'ratio':>6}"
    )
    for kind, m in rows:
        print(
            f"{kind:6} {m['bi write'] / gib:13.2f} {m['xr write'] / gib:13.2f} {m['xr write'] / m['bi write']:6.2f} "
            f"{m['bi read'] / gib:12.2f} {m['xr read'] / gib:12.2f} {m['xr read'] / m['bi read']:6.2f}"
        )
    print(
        f"\n512² chunks on S3: {n_plain} objects in {t_plain:.1f} s without shards; "
        f"{n_shard} objects in {t_shard:.1f} s with 4096² shards"
    )


if __name__ == "__main__":
    main()
