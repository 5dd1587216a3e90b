"""Benchmark: bi.equalize_hist vs skimage and a single-core numpy reference.

Run from the repository root::

    .venv/bin/python benchmarks/bench_histogram.py            # 8192 x 8192, as in issue 4
    .venv/bin/python benchmarks/bench_histogram.py --quick    # 1024 x 1024 smoke test

In memory, same run, same data (uint8 and float32, one band):

* ``skimage``: ``skimage.exposure.equalize_hist(img)`` (one core).
* ``numpy``: the fastest simple single-core recipe: for uint8 ``np.bincount`` +
  a CDF lookup table ``cdf[img]``; for float32 min/max + ``np.histogram`` +
  ``np.interp`` at bin centres (what skimage does, without its overhead).
* ``bigimg``: ``bi.equalize_hist`` on the same array wrapped in dask chunks
  (``name=False``: not hashing the input, which an image read from Zarr never
  pays), on dask's threaded scheduler with ``--workers`` threads, written
  into a preallocated array with ``da.store`` (no single-threaded concatenation).

Then ``bigimg stream``: the same op on a lazily generated image (never held
in memory) reduced to a sum, at the size and at twice the size, to show that
peak memory depends on the chunk size and not on the image size.

Times are the median of ``--repeat`` runs after a warm-up, tools alternating:
wall time, and CPU time (user + system) which is steadier on a shared machine;
peak memory is the highest RSS (process + children, sampled by a thread)
above the RSS before the run.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import psutil
import skimage.exposure
from _common import PeakRSS

import bigimg as bi


# ---------------------------------------------------------------- the tools
def numpy_reference(img: np.ndarray) -> np.ndarray:
    """Single-core in-memory equalization, the fastest simple numpy recipe."""
    if img.dtype == np.uint8:
        counts = np.bincount(img.ravel(), minlength=256)
        cdf = (np.cumsum(counts) / counts.sum()).astype(np.float32)
        return cdf[img]
    counts, edges = np.histogram(img, bins=256, range=(img.min(), img.max()))
    cdf = np.cumsum(counts) / counts.sum()
    return np.interp(img, (edges[:-1] + edges[1:]) / 2, cdf).astype(np.float32)


def skimage_tool(img: np.ndarray) -> np.ndarray:
    return skimage.exposure.equalize_hist(img)


def bigimg_tool(chunk: int, workers: int) -> Callable[[np.ndarray], np.ndarray]:
    def run(img: np.ndarray) -> np.ndarray:
        with dask.config.set(scheduler="threads", num_workers=workers):
            arr = da.from_array(img, chunks=chunk, name=False)
            out = bi.equalize_hist(bi.from_array(arr))
            target = np.empty(out.shape, dtype=out.dtype)
            da.store(out.data, target, lock=False)
        return target[..., 0]

    return run


def make_image(size: int, dtype: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = rng.normal(0.0, 1.0, size=(size, size)).astype(np.float32)
    if dtype == "uint8":
        return np.clip(120 + 40 * values, 0, 255).astype(np.uint8)
    return values


def lazy_image(size: int, chunk: int) -> Any:
    """A uint8 image generated chunk by chunk, never held whole in memory."""
    rng = da.random.default_rng(0)
    return bi.from_array(
        rng.integers(0, 256, size=(size, size), chunks=chunk, dtype=np.uint8), chunks=chunk
    )


# ---------------------------------------------------------------- measuring
def cpu_seconds() -> float:
    return time.process_time()  # user + system of every thread of this process


def measure(
    tools: dict[str, Callable[[np.ndarray], Any]], img: np.ndarray, repeat: int
) -> dict[str, tuple[float, float, int]]:
    """``{tool: (median wall s, median CPU s, peak RSS bytes)}``."""
    for tool in tools.values():  # warm-up (imports, caches, thread pools)
        tool(img[:256, :256])
    wall: dict[str, list[float]] = {name: [] for name in tools}
    cpu: dict[str, list[float]] = {name: [] for name in tools}
    peaks: dict[str, int] = dict.fromkeys(tools, 0)
    for _ in range(repeat):
        for name, tool in tools.items():  # alternate the tools
            gc.collect()
            with PeakRSS(interval=0.002) as mem:
                c0, t0 = cpu_seconds(), time.perf_counter()
                out = tool(img)
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(max(cpu_seconds() - c0, 1e-6))
            peaks[name] = max(peaks[name], mem.growth)
            del out
    return {
        name: (statistics.median(wall[name]), statistics.median(cpu[name]), peaks[name])
        for name in tools
    }


def measure_stream(size: int, chunk: int, workers: int, repeat: int) -> tuple[float, int]:
    times, peak = [], 0
    for _ in range(repeat):
        gc.collect()
        with (
            dask.config.set(scheduler="threads", num_workers=workers),
            PeakRSS(interval=0.002) as mem,
        ):
            t0 = time.perf_counter()
            out = bi.equalize_hist(lazy_image(size, chunk))
            out.data.sum(dtype=np.float64).compute()
            times.append(time.perf_counter() - t0)
        peak = max(peak, mem.growth)
    return statistics.median(times), peak


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1024 x 1024, one repeat: a smoke test")
    p.add_argument("--size", type=int, default=None, help="side of the square image (default 8192)")
    p.add_argument("--chunk", type=int, default=None, help="dask chunk side (default 2048)")
    p.add_argument("--workers", type=int, default=2, help="dask threads for bigimg (default 2)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per tool (default 3)")
    p.add_argument(
        "--dtypes", nargs="+", default=["uint8", "float32"], choices=["uint8", "float32"]
    )
    p.add_argument("--no-stream", action="store_true", help="skip the streaming rows")
    args = p.parse_args(argv)
    size = args.size or (1024 if args.quick else 8192)
    chunk = args.chunk or (256 if args.quick else 2048)
    repeat = args.repeat or (1 if args.quick else 3)
    mpx = size * size / 1e6
    print(f"equalize_hist, {size} x {size} ({mpx:.0f} Mpx), chunks {chunk}, bigimg on {args.workers} "
          f"threads, median of {repeat}; load average {psutil.getloadavg()[0]:.1f} on "
          f"{psutil.cpu_count()} CPUs")  # fmt: skip
    header = (
        f"{'dtype':8} {'tool':8} {'wall s':>7} {'Mpx/s':>7} {'cpu s':>7} {'peak MB':>8} "
        f"{'vs numpy':>9} {'vs skimage':>11} {'cpu vs numpy':>13}"
    )
    print(header)
    print("-" * len(header))
    for dtype in args.dtypes:
        img = make_image(size, dtype)
        tools = {
            "skimage": skimage_tool,
            "numpy": numpy_reference,
            "bigimg": bigimg_tool(chunk, args.workers),
        }
        res = measure(tools, img, repeat)
        diff = np.abs(tools["bigimg"](img) - numpy_reference(img)).max()
        for name, (t, c, peak) in res.items():
            print(
                f"{dtype:8} {name:8} {t:7.3f} {mpx / t:7.1f} {c:7.3f} {peak / 2**20:8.0f} "
                f"{res['numpy'][0] / t:8.2f}x {res['skimage'][0] / t:10.2f}x "
                f"{res['numpy'][1] / c:12.2f}x"
            )
        print(f"{dtype:8} (bigimg - numpy reference: max abs difference {diff:.1e})")
        del img
        gc.collect()
    if args.no_stream:
        return
    print()
    print(
        f"{'bigimg stream (uint8, lazy source, summed)':44} {'time s':>8} {'Mpx/s':>8} {'peak MB':>8}"
    )
    for s in (size, 2 * size):
        t, peak = measure_stream(s, chunk, args.workers, max(1, repeat - 1))
        print(f"{f'{s} x {s}':44} {t:8.3f} {s * s / 1e6 / t:8.1f} {peak / 2**20:8.0f}")


if __name__ == "__main__":
    main()
