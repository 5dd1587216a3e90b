"""Benchmark: bi.quicklook and bi.write_pyramid vs the in-memory numpy recipe.

Run from the repository root::

    .venv/bin/python benchmarks/bench_quicklook.py            # 8192 x 8192 x 3 float32 (805 MB)
    .venv/bin/python benchmarks/bench_quicklook.py --quick    # 1024 x 1024 x 3 smoke test

The input is the demo mosaic as float32 with a NaN (NoData) border, stored as
Zarr (chunks 1024). Same run, same store, dask's threaded scheduler with
``--workers`` threads:

* ``numpy``: what a notebook does when the image fits in memory: read the
  whole store, ``np.nanpercentile`` (2, 98) per band, NaN-aware block means
  by reshaping, stretch. The anchor for time *and* memory.
* ``quicklook``: ``bi.quicklook(bi.open_zarr(store), max_size=1024)``: two
  out-of-core passes (preview + range, then the histograms).
* ``quicklook L``: the same from the pyramid level ``bigimg quicklook`` picks.
* ``pyramid numpy``: every 2x level down to 1024 px by reshaping in memory.
* ``write_pyramid``: the levels written into the store (read level 0 once).

Times are the median of ``--repeat`` runs after a warm-up, tools alternating.
Peak memory is the highest RSS of this process during the run above its RSS
before it (sampled every 20 ms; freed heap returned to the OS first).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import math
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS  # noqa: E402  (RSS per process of the tree)

import bigimg as bi  # noqa: E402
from bigimg.demo import synthetic_mosaic  # noqa: E402
from bigimg.io.pyramid import best_level, open_level, write_pyramid  # noqa: E402

MAX_SIZE = 1024  # preview side, and the pyramid's coarsest level (--quick: 256)


# ---------------------------------------------------------------- the tools
def numpy_quicklook(store: Path) -> np.ndarray:
    a = bi.open_zarr(store).values
    f = math.ceil(max(a.shape[:2]) / MAX_SIZE)
    out = _block_nanmean(a, f)
    for b in range(a.shape[2]):
        p0, p1 = np.nanpercentile(a[:, :, b], [2, 98])
        out[:, :, b] = np.clip((out[:, :, b] - p0) / (p1 - p0), 0, 1)
    return out


def numpy_pyramid(store: Path) -> list[np.ndarray]:
    levels = [bi.open_zarr(store).values]
    while max(levels[-1].shape[:2]) > MAX_SIZE:
        levels.append(_block_nanmean(levels[-1], 2))
    return levels[1:]


def _block_nanmean(a: np.ndarray, f: int) -> np.ndarray:
    ny, nx = a.shape[:2]
    a = np.pad(a, [(0, -ny % f), (0, -nx % f), (0, 0)], constant_values=np.nan)
    blocks = a.reshape(a.shape[0] // f, f, a.shape[1] // f, f, a.shape[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3)).astype(np.float32)


def bigimg_quicklook(store: Path) -> np.ndarray:
    return bi.quicklook(bi.open_zarr(store), max_size=MAX_SIZE).values


def bigimg_quicklook_level(store: Path) -> np.ndarray:
    return bi.quicklook(open_level(store, best_level(store, MAX_SIZE)), max_size=MAX_SIZE).values


def bigimg_pyramid(store: Path) -> None:
    shutil.rmtree(store / "levels", ignore_errors=True)
    write_pyramid(store, max_size=MAX_SIZE, progress=False)


# ---------------------------------------------------------------- measuring
def _release_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc), so peaks compare."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def timed(func: Callable[[Path], Any], store: Path) -> tuple[float, int, Any]:
    _release_memory()
    base = psutil.Process().memory_info().rss
    with PeakRSS(interval=0.02) as mem:
        t0 = time.perf_counter()
        out = func(store)
        wall = time.perf_counter() - t0
    return wall, max(mem.peak.values()) - base, out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1024 x 1024 x 3, one repeat")
    p.add_argument("--size", type=int, default=None, help="side of the mosaic (default 8192)")
    p.add_argument("--workers", type=int, default=2, help="dask threads (default 2)")
    p.add_argument("--repeat", type=int, default=None, help="timed runs per tool (default 3)")
    args = p.parse_args(argv)
    global MAX_SIZE
    MAX_SIZE = 256 if args.quick else MAX_SIZE
    size = args.size or (1024 if args.quick else 8192)
    repeat = args.repeat or (1 if args.quick else 3)
    workdir = Path(tempfile.mkdtemp(prefix="bench_quicklook_"))
    try:
        store = workdir / "mosaic.zarr"
        small = workdir / "warmup.zarr"
        with dask.config.set(scheduler="threads", num_workers=args.workers):
            bi.to_zarr(synthetic_mosaic(size, chunks=1024, dtype="float32"), store, progress=False)
            bi.to_zarr(synthetic_mosaic(256, chunks=128, dtype="float32"), small, progress=False)
            write_pyramid(store, max_size=MAX_SIZE, progress=False)  # for "quicklook L"
            level = best_level(store, MAX_SIZE)
            groups = {
                "quicklook": {
                    "numpy": numpy_quicklook,
                    "quicklook": bigimg_quicklook,
                    f"quicklook L{level}": bigimg_quicklook_level,
                },
                "pyramid": {"pyramid numpy": numpy_pyramid, "write_pyramid": bigimg_pyramid},
            }
            nbytes = size * size * 3 * 4
            print(
                f"{size} x {size} x 3 float32 ({nbytes / 1e6:.0f} MB), chunks 1024, "
                f"{args.workers} dask threads, median of {repeat}; load average "
                f"{psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs"
            )
            header = f"{'tool':16} {'wall s':>7} {'MB/s':>7} {'peak MB':>8} {'time vs numpy':>14} {'mem vs numpy':>13}"
            print(header)
            print("-" * len(header))
            for tools in groups.values():
                for func in tools.values():  # warm-up
                    func(small)
                walls: dict[str, list[float]] = {name: [] for name in tools}
                peaks: dict[str, int] = dict.fromkeys(tools, 0)
                outputs: dict[str, Any] = {}
                for _ in range(repeat):
                    for name, func in tools.items():  # alternate the tools
                        wall, peak, outputs[name] = timed(func, store)
                        walls[name].append(wall)
                        peaks[name] = max(peaks[name], peak)
                anchor = next(iter(tools))
                t_ref = statistics.median(walls[anchor])
                for name in tools:
                    t = statistics.median(walls[name])
                    print(
                        f"{name:16} {t:7.2f} {nbytes / 1e6 / t:7.0f} {peaks[name] / 1e6:8.0f} "
                        f"{t / t_ref:14.2f} {peaks[name] / max(peaks[anchor], 1):13.2f}"
                    )
                if "quicklook" in outputs:
                    diff = np.nanmax(np.abs(outputs["quicklook"] - outputs["numpy"]))
                    print(f"  quicklook vs numpy: max |difference| {diff:.4f} (of 1)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
