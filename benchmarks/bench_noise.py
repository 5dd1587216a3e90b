"""Benchmark bi.correlated_noise against numpy + fftconvolve and gstools (issue 5).

    python benchmarks/bench_noise.py            # 1024², 4096², 8192², gstools 1024², then 32768² to Zarr
    python benchmarks/bench_noise.py --quick    # 256², 1024², gstools 256², no big run
    python benchmarks/bench_noise.py --big-only # only the 32768² float32 (4 GiB) CLI run

Per size, the time per megapixel and the peak memory (RSS of this process and
its children above the baseline, sampled every 20 ms) of:

* ``bi.correlated_noise`` computed to memory and written to Zarr
  (``bi.to_zarr``), float32, dask's threaded scheduler with ``--threads``;
* the anchor: one in-memory numpy ``standard_normal`` (float64) over the
  padded domain + ``scipy.signal.fftconvolve(mode="valid")`` (1 core);
* ``gstools.SRF`` with a Gaussian covariance of the same correlation
  (``len_scale = sqrt(pi) * length_scale``), at the smallest size only.

Tools alternate within each round; each figure is the median of ``--repeat``
rounds after a warm-up. The big run is ``bigimg noise`` in a subprocess (an
embedded LocalCluster of 2 workers) with the peak RSS of its process tree.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
import numpy as np
import scipy.signal
from _common import PeakRSS

import bigimg as bi

LENGTH_SCALE = 20.0


def numpy_fftconvolve(n: int, ls: float, seed: int = 0) -> np.ndarray:
    r = int(4 * ls + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / ls) ** 2)
    kernel = np.outer(k, k)
    kernel /= np.sqrt(np.sum(kernel**2))
    white = np.random.default_rng(seed).standard_normal((n + 2 * r, n + 2 * r))
    return scipy.signal.fftconvolve(white, kernel, mode="valid")


def gstools_srf(n: int, ls: float, seed: int = 0) -> np.ndarray:
    import gstools as gs

    # gstools' Gaussian: exp(-pi/4 (r/len_scale)^2) = exp(-r^2/(4 ls^2))
    model = gs.Gaussian(dim=2, var=1.0, len_scale=math.sqrt(math.pi) * ls)
    srf = gs.SRF(model, seed=seed)
    return srf.structured([np.arange(n), np.arange(n)])


def bigimg_memory(n: int, ls: float) -> np.ndarray:
    return bi.correlated_noise((n, n), length_scale=ls, seed=1).values


def bigimg_zarr(n: int, ls: float, workdir: Path) -> None:
    path = workdir / f"noise-{n}.zarr"
    bi.to_zarr(
        bi.correlated_noise((n, n), length_scale=ls, seed=1), path, overwrite=True, progress=False
    )


def measure(func: Callable[[], Any]) -> tuple[float, float]:
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = func()
        seconds = time.perf_counter() - t0
    del out
    return seconds, mem.growth / 2**20


def bench_sizes(sizes: list[int], gstools_size: int, repeat: int, workdir: Path) -> None:
    ls = LENGTH_SCALE
    print(f"length_scale {ls:g}, float32 for bigimg, median of {repeat} after a warm-up")
    header = f"{'size':>6s} {'tool':38s} {'time s':>8s} {'ms/Mpx':>8s} {'peak MiB':>9s} {'speed vs numpy':>15s}"
    print(header)
    for n in sizes:
        tools: dict[str, Callable[[], Any]] = {
            "numpy + fftconvolve (in memory, 1 core)": lambda n=n: numpy_fftconvolve(n, ls),
            "bigimg to memory": lambda n=n: bigimg_memory(n, ls),
            "bigimg to Zarr": lambda n=n: bigimg_zarr(n, ls, workdir),
        }
        if n == gstools_size:
            tools["gstools.SRF Gaussian"] = lambda n=n: gstools_srf(n, ls)
        for label, f in tools.items():  # warm-up (gstools at a small size: it is slow)
            if label.startswith("gstools"):
                gstools_srf(64, ls)
            else:
                f()
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in tools}
        for i in range(repeat):
            for label, f in tools.items():
                if label.startswith("gstools") and i > 0 and samples[label][0][0] > 60:
                    continue  # one run is enough when it takes minutes
                samples[label].append(measure(f))
        times = {k: statistics.median(s for s, _ in runs) for k, runs in samples.items()}
        ref = times["numpy + fftconvolve (in memory, 1 core)"]
        for label, runs in samples.items():
            t, peak = times[label], max(m for _, m in runs)
            print(
                f"{n:6d} {label:38s} {t:8.3f} {t / (n * n / 1e6) * 1e3:8.2f} {peak:9.0f} {ref / t:14.2f}x"
            )
        if "gstools.SRF Gaussian" in times:
            g = times["gstools.SRF Gaussian"]
            print(
                f"{'':6s} bigimg vs gstools: {g / times['bigimg to memory']:.0f}x faster to memory, "
                f"{g / times['bigimg to Zarr']:.0f}x to Zarr (target >= 300x)"
            )
        shutil.rmtree(workdir / f"noise-{n}.zarr", ignore_errors=True)


def bench_big(n: int, workdir: Path, workers: int) -> None:
    """``bigimg noise`` in a subprocess; peak RSS of its whole process tree."""
    path = workdir / "big.zarr"
    cmd = [
        sys.executable, "-m", "bigimg", "noise", str(path), "--shape", f"{n}x{n}",
        "--length-scale", f"{LENGTH_SCALE:g}", "--seed", "1", "--quiet", "--workers", str(workers),
    ]  # fmt: skip
    print(f"\n{n}x{n} float32 ({n * n * 4 / 2**30:.1f} GiB) to Zarr: {' '.join(cmd[1:])}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with PeakRSS(interval=0.2, pid=proc.pid) as mem:
        out, err = proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bigimg noise failed ({proc.returncode}): {err.strip()}")
    info = bi.store_info(path)
    print(f"  {out.strip()}")
    print(
        f"  wall {seconds:.1f} s ({seconds / (n * n / 1e6) * 1e3:.2f} ms/Mpx incl. cluster start), "
        f"peak RSS of the process tree {mem.total_peak / 2**30:.2f} GiB (target < 2 GiB), "
        f"complete={info['complete']}, chunks {info['chunks_stored']}/{info['chunks_total']}"
    )
    shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes, no big run")
    p.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="sides (default 1024 4096 8192)"
    )
    p.add_argument(
        "--gstools-size", type=int, default=None, help="side for gstools (default: smallest)"
    )
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--big", type=int, default=32768, help="side of the big CLI run (0: skip)")
    p.add_argument("--big-only", action="store_true")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers of the big run")
    p.add_argument(
        "--workdir", default=None, help="folder for the Zarr outputs (default: a temp dir)"
    )
    args = p.parse_args()
    sizes = args.sizes or ([256, 1024] if args.quick else [1024, 4096, 8192])
    big = 0 if args.quick else args.big
    workdir = Path(tempfile.mkdtemp(prefix="bench-noise-", dir=args.workdir))
    dask.config.set(scheduler="threads", num_workers=args.threads)
    try:
        if not args.big_only:
            bench_sizes(sizes, args.gstools_size or min(sizes), args.repeat, workdir)
        if big:
            bench_big(big, workdir, args.workers)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
