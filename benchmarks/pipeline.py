"""End-to-end benchmark (issue #17): the demo pipeline against the copy floor and dask-image.

The same float32 mosaic with a NoData (NaN) border, stored in Zarr with chunks
2048 x 2048 x 3, goes Zarr -> Zarr three ways on one LocalCluster (2 workers x
1 thread, 3 GiB each), alternating, ``--repeat`` times after a warm-up:

* ``copy``: plain xarray ``open_zarr`` -> ``to_zarr`` with the same codec (the floor:
  read once, write once);
* ``dask-image``: what a user writes with dask-image: a NaN-aware Gaussian filter
  (sigma 2, normalized by the filtered valid mask), one ``nanmin``/``nanmax`` pass,
  one ``da.histogram`` pass per band, ``map_blocks(np.interp)`` -> ``to_zarr``;
* ``bigimg``: ``parse_config(...).run()`` of the demo steps (NaN-aware filter,
  equalize_hist);
* ``bigimg-unplanned`` (``--ways``): the same steps without the read plan
  (``Pipeline.build()`` then ``to_zarr``: the filter runs once per pass).

Prints, per size: the median s/GiB of each way, the ratios, each way's worker
peak RSS (sampled every 0.2 s with psutil), bytes spilled and worker restarts.
``--profile`` adds the task-stream breakdown of one bigimg run (seconds of
worker time per task prefix). ``--keep-memory`` starts the workers with glibc
keeping freed memory (``MALLOC_MMAP_MAX_=0``, a huge ``MALLOC_TRIM_THRESHOLD_``)
instead of distributed's default (return it at once): where touching fresh
memory is slow (a VM: 0.45 GB/s here), that shows how much of each way's time
is page faults; worker peaks are then the high-water mark of retained memory.

    python benchmarks/pipeline.py                      # 1 and 12 GiB, 3 repeats
    python benchmarks/pipeline.py --sizes 1 --profile  # the breakdown
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import xarray as xr
from _common import PeakRSS, copy_floor, zarr_encoding

import bigimg as bi
from bigimg.demo import synthetic_mosaic
from bigimg.pipeline import parse_config

GIB = 1024**3
BANDS = 3
CHUNK = 2048
SIGMA = 2.0
BINS = 256
STEPS = [
    {"op": "gaussian_filter", "sigma": {"y": SIGMA, "x": SIGMA}, "nan_policy": "omit"},
    {"op": "equalize_hist", "bins": BINS},
]


def dask_image_way(src: Path, out: Path) -> None:
    """A user's fifteen lines: dask-image filter, two statistics passes, interp, to_zarr."""
    from dask_image.ndfilters import gaussian_filter

    ds = xr.open_zarr(src, consolidated=False)
    a = ds["image"].data  # (band, y, x) on disk
    valid = ~da.isnan(a)
    sig = (0, SIGMA, SIGMA)
    num = gaussian_filter(da.where(valid, a, 0).astype("float32"), sig, mode="reflect")
    den = gaussian_filter(valid.astype("float32"), sig, mode="reflect")
    f = da.where(valid, num / den, np.nan)
    lo, hi = dask.compute(da.nanmin(f, axis=(1, 2)), da.nanmax(f, axis=(1, 2)))
    hists = [da.histogram(f[b], bins=BINS, range=(lo[b], hi[b]))[0] for b in range(a.shape[0])]
    counts = dask.compute(*hists)
    tables = []
    for b, c in enumerate(counts):
        edges = np.linspace(lo[b], hi[b], BINS + 1)
        cdf = np.cumsum(c) / c.sum()
        tables.append(((edges[:-1] + edges[1:]) / 2, cdf))

    def interp(block: np.ndarray, block_info=None) -> np.ndarray:
        b0 = block_info[0]["array-location"][0][0]
        res = np.empty(block.shape, np.float32)
        for i in range(block.shape[0]):
            xp, fp = tables[b0 + i]
            res[i] = np.interp(block[i], xp, fp)
        res[np.isnan(block)] = np.nan
        return res

    eq = f.map_blocks(interp, dtype=np.float32)
    xr.Dataset({"image": (ds["image"].dims, eq)}).to_zarr(
        out, mode="w", zarr_format=3, consolidated=False, encoding={"image": zarr_encoding()}
    )


def _pipeline(src: Path, out: Path):  # type: ignore[no-untyped-def]
    config = {
        "input": {"path": str(src), "chunks": {"y": CHUNK, "x": CHUNK}},
        "steps": STEPS,
        "output": {"path": str(out)},
    }
    return parse_config(config, base=out.parent)


def bigimg_way(src: Path, out: Path) -> None:
    _pipeline(src, out).run(overwrite=True, progress=False)


def unplanned_way(src: Path, out: Path) -> None:
    """bigimg's graph without the plan: every statistics pass filters the input again."""
    bi.to_zarr(_pipeline(src, out).build(), out, overwrite=True, progress=False)


WAYS: dict[str, Callable[[Path, Path], None]] = {
    "copy": copy_floor,
    "dask-image": dask_image_way,
    "bigimg": bigimg_way,
    "bigimg-unplanned": unplanned_way,
}


def _spilled(dask_worker) -> int:  # runs on each worker
    total = getattr(dask_worker.data, "spilled_total", None)
    return int(getattr(total, "disk", 0) or 0)


def make_mosaic(gib: float, workdir: Path) -> tuple[Path, float]:
    side = int(math.sqrt(gib * GIB / (BANDS * 4)))
    side -= side % 128
    src = workdir / f"mosaic-{side}.zarr"
    if not src.exists():
        bi.to_zarr(synthetic_mosaic(side, bands=BANDS, chunks=CHUNK, dtype="float32"), src)
    return src, side * side * BANDS * 4 / GIB


def profile(client, src: Path, workdir: Path) -> None:
    """Worker seconds per task prefix in one bigimg run (the dashboard's task stream)."""
    from distributed import get_task_stream

    with get_task_stream(client) as ts:
        t0 = time.perf_counter()
        bigimg_way(src, workdir / "profile.zarr")
        wall = time.perf_counter() - t0
    per: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for t in ts.data:
        prefix = t["key"][0] if isinstance(t["key"], tuple) else t["key"]
        prefix = str(prefix).rsplit("-", 1)[0]
        for s in t["startstops"]:
            if s["action"] == "compute":
                per[prefix] += s["stop"] - s["start"]
        count[prefix] += 1
    total = sum(per.values())
    print(f"\nprofile of one bigimg run: wall {wall:.1f} s, worker compute {total:.1f} s")
    print("| task prefix | tasks | worker s | share |\n|---|---|---|---|")
    for k, v in sorted(per.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {count[k]} | {v:.1f} | {v / total:.0%} |")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 12], help="sizes in GiB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--ways", nargs="+", default=["copy", "dask-image", "bigimg"], choices=list(WAYS)
    )
    ap.add_argument("--workdir", type=Path, default=None, help="kept for reuse when given")
    ap.add_argument("--profile", action="store_true", help="task-stream breakdown of bigimg")
    ap.add_argument("--keep-memory", action="store_true", help="workers keep freed memory")
    args = ap.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bigimg-pipeline-"))
    workdir.mkdir(parents=True, exist_ok=True)
    table = []
    if args.keep_memory:
        keep = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(10**11)}
        dask.config.set({"distributed.nanny.pre-spawn-environ": keep})
    with bi.Cluster(n_workers=2, threads_per_worker=1, memory_limit="3GiB") as client:
        pids = set(client.run(os.getpid).values())
        for gib in args.sizes:
            src, size = make_mosaic(gib, workdir)
            small, _ = make_mosaic(0.05, workdir)
            for way in args.ways:  # warm-up: imports, worker pools, first-touch memory
                WAYS[way](small, workdir / f"warm-{way}.zarr")
            times: dict[str, list[float]] = defaultdict(list)
            peaks: dict[str, int] = defaultdict(int)
            for _ in range(args.repeat):
                for way in args.ways:
                    out = workdir / f"out-{way}.zarr"
                    with PeakRSS(interval=0.2) as rss:
                        t0 = time.perf_counter()
                        WAYS[way](src, out)
                        times[way].append(time.perf_counter() - t0)
                    worker_peak = max((rss.peak.get(p, 0) for p in pids), default=0)
                    peaks[way] = max(peaks[way], worker_peak)
                    shutil.rmtree(out, ignore_errors=True)
                    print(f"{size:.2f} GiB {way}: {times[way][-1]:.1f} s", flush=True)
            med = {w: statistics.median(t) / size for w, t in times.items()}
            if args.profile:
                profile(client, src, workdir)
            table.append((size, med, peaks))
        spilled = sum(client.run(_spilled).values())
        restarts = len(set(client.run(os.getpid).values()) ^ pids) // 2
    print(f"\nmedian of {args.repeat} alternating runs; LocalCluster 2 workers x 1 thread, 3 GiB")
    print("| GiB | way | s/GiB | vs bigimg | worker peak MiB |\n|---|---|---|---|---|")
    for size, med, peaks in table:
        for way, s in med.items():
            ratio = s / med["bigimg"] if "bigimg" in med else float("nan")
            print(f"| {size:.2f} | {way} | {s:.1f} | {ratio:.2f} | {peaks[way] / 2**20:.0f} |")
        if {"copy", "bigimg", "dask-image"} <= set(med):
            print(
                f"bigimg / copy floor = {med['bigimg'] / med['copy']:.2f}x (target <= 2); "
                f"dask-image / bigimg = {med['dask-image'] / med['bigimg']:.2f}x (target >= 3)"
            )
    print(f"spilled {spilled / 2**20:.0f} MiB, worker restarts {restarts}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
