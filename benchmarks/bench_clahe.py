"""Benchmark (issue #24): bi.equalize_adapthist against scikit-image and the copy floor.

Run from the repository root::

    .venv/bin/python benchmarks/bench_clahe.py             # 4096² in memory, 1 GiB on the cluster
    .venv/bin/python benchmarks/bench_clahe.py --quick     # 1024² and 0.05 GiB smoke run

Two parts, each printing ratios measured in the same run:

* **in memory**: one uint8 band of the demo mosaic (``--size`` px square, the
  largest scikit-image handles comfortably: it makes several float64 and int64
  copies of the image), ``skimage.exposure.equalize_adapthist`` (one core)
  against ``bi.equalize_adapthist`` on the same array in 1024² chunks on dask's
  threaded scheduler (2 threads), kernel 1/8 of the image (skimage's default),
  and the largest difference between the two.
* **out of core**: a float32 3-band mosaic with a NaN border (``--gib``) in
  Zarr (2048² chunks), on a LocalCluster of 2 workers x 1 thread, 3 GiB each:
  the copy floor (plain ``xr.open_zarr(src).to_zarr(dst)``, same codec) and
  ``bigimg run`` of one ``equalize_adapthist`` step (256 px regions), Zarr to
  Zarr, alternating, ``--repeat`` times after a warm-up. Each way's worker peak
  RSS is sampled every 0.2 s with psutil.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import dask
import numpy as np
import skimage.exposure
from _common import PeakRSS, copy_floor

import bigimg as bi
from bigimg.demo import synthetic_mosaic
from bigimg.pipeline import parse_config

GIB = 1024**3
CHUNK = 2048
KERNEL = 256


def in_memory(size: int, repeat: int) -> None:
    band = synthetic_mosaic(size, bands=1, chunks=1024).values[..., 0]
    kernel = (size // 8, size // 8)
    img = bi.from_array(band, chunks=1024)
    bi.equalize_adapthist(bi.from_array(band[:256, :256]), kernel_size=32).compute()  # compile
    sk, ours = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ref = skimage.exposure.equalize_adapthist(band, kernel_size=kernel)
        sk.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=2):
            out = bi.equalize_adapthist(img, kernel_size=kernel[0]).values[..., 0]
        ours.append(time.perf_counter() - t0)
    s, o = statistics.median(sk), statistics.median(ours)
    print(f"in memory, {size}² uint8, kernel {kernel[0]}, median of {repeat}:")
    print(
        f"  skimage {s:.2f} s (1 core), bigimg {o:.2f} s (2 threads): {s / o:.2f}x skimage's speed"
    )
    print(f"  max |bigimg - skimage| = {float(np.abs(out - ref).max()):.2e}")


def clahe(src: Path, out: Path) -> None:
    config = {
        "input": {"path": str(src), "chunks": {"y": CHUNK, "x": CHUNK}},
        "steps": [{"op": "equalize_adapthist", "kernel_size": KERNEL}],
        "output": {"path": str(out)},
    }
    parse_config(config, base=out.parent).run(overwrite=True, progress=False)


def make_mosaic(gib: float, workdir: Path) -> tuple[Path, float]:
    side = int(math.sqrt(gib * GIB / (3 * 4)))
    side -= side % 128
    src = workdir / f"mosaic-{side}.zarr"
    if not src.exists():
        bi.to_zarr(synthetic_mosaic(side, bands=3, chunks=CHUNK, dtype="float32"), src)
    return src, side * side * 3 * 4 / GIB


def out_of_core(gib: float, repeat: int, workdir: Path) -> None:
    ways = {"copy": copy_floor, "bigimg": clahe}
    with bi.Cluster(n_workers=2, threads_per_worker=1, memory_limit="3GiB") as client:
        pids = set(client.run(os.getpid).values())
        src, size = make_mosaic(gib, workdir)
        small, _ = make_mosaic(0.02, workdir)
        for name, way in ways.items():  # warm-up: imports, numba's cache, worker pools
            way(small, workdir / f"warm-{name}.zarr")
        times: dict[str, list[float]] = {w: [] for w in ways}
        peaks = dict.fromkeys(ways, 0)
        for _ in range(repeat):
            for name, way in ways.items():
                out = workdir / f"out-{name}.zarr"
                with PeakRSS(interval=0.2) as rss:
                    t0 = time.perf_counter()
                    way(src, out)
                    times[name].append(time.perf_counter() - t0)
                peaks[name] = max(peaks[name], max(rss.peak.get(p, 0) for p in pids))
                shutil.rmtree(out, ignore_errors=True)
                print(f"  {size:.2f} GiB {name}: {times[name][-1]:.1f} s", flush=True)
        restarts = len(set(client.run(os.getpid).values()) ^ pids) // 2
    med = {w: statistics.median(t) / size for w, t in times.items()}
    print(f"out of core, {size:.2f} GiB float32 x 3 bands, {CHUNK}² chunks, {KERNEL} px regions,")
    print(f"median of {repeat}; LocalCluster 2 workers x 1 thread, 3 GiB:")
    print("| way | s/GiB | vs copy | worker peak MiB |\n|---|---|---|---|")
    for w, s in med.items():
        print(f"| {w} | {s:.1f} | {s / med['copy']:.2f} | {peaks[w] / 2**20:.0f} |")
    print(
        f"bigimg / copy floor: {med['bigimg'] / med['copy']:.2f}x the time, "
        f"{peaks['bigimg'] / max(peaks['copy'], 1):.2f}x the worker peak; worker restarts {restarts}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=4096, help="in-memory image side, px")
    ap.add_argument("--gib", type=float, default=1.0, help="out-of-core image size, GiB")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1024² and 0.05 GiB")
    ap.add_argument("--workdir", type=Path, default=None, help="kept for reuse when given")
    args = ap.parse_args()
    if args.quick:
        args.size, args.gib = 1024, 0.05
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bigimg-clahe-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        in_memory(args.size, args.repeat)
        out_of_core(args.gib, args.repeat, workdir)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
