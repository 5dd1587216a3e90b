"""Benchmark: bi.ZCA fit / transform against numpy and scikit-learn, same run.

A synthetic CIFAR-shaped float32 dataset (N x 32 x 32 x 3, 0-255 values with
correlated pixels) is written to Zarr chunk by chunk, then:

* fit: ``bi.ZCA().fit`` reading the Zarr store, vs an in-memory numpy fit of
  the same array (mean, centring, ``Xc.T @ Xc``, ``eigh``, ``W``) and vs
  ``sklearn.decomposition.PCA(whiten=True)`` with its default solver and with
  ``svd_solver="covariance_eigh"`` (the anchors get the array already in
  memory; bigimg reads the store). Runs alternate; medians of ``--repeats``
  runs after a warm-up.
* transform on one core (one BLAS thread, dask's synchronous scheduler):
  ``ZCA.transform(...).compute()`` and ``da.store`` of it into an array vs
  the plain ``(X - mean) @ W`` GEMM; and the per-chunk kernel alone.
* ``--big``: fit on 500,000 samples (5.9 GiB of float32) in a fresh process,
  with its peak RSS (target < 2 GiB).

Usage::

    python benchmarks/bench_whiten.py --quick        # smoke test, ~1 min
    python benchmarks/bench_whiten.py                 # 50,000 samples
    python benchmarks/bench_whiten.py --big           # + 500,000-sample fit
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import PeakRSS

SHAPE = (32, 32, 3)
GEN_CHUNK = 1000


# ---------------------------------------------------------------- helpers
def make_store(path: Path, n: int, shape: tuple[int, ...] = SHAPE, *, seed: int = 0) -> Path:
    """Write an (n, *shape) float32 bare Zarr array chunk by chunk (reused if present)."""
    import zarr
    from scipy.ndimage import uniform_filter

    if (path / "zarr.json").exists():
        arr = zarr.open_array(str(path), mode="r")
        if arr.shape == (n, *shape) and arr.attrs.get("complete"):
            return path
    arr = zarr.create_array(
        str(path), shape=(n, *shape), chunks=(GEN_CHUNK, *shape), dtype="float32", overwrite=True
    )
    mix = np.array([[1.0, 0.6, 0.3], [0.5, 1.0, 0.5], [0.3, 0.6, 1.0]])
    for i, start in enumerate(range(0, n, GEN_CHUNK)):
        rng = np.random.default_rng([seed, i])
        stop = min(n, start + GEN_CHUNK)
        noise = rng.normal(size=(stop - start, *shape))
        smooth = uniform_filter(noise, size=(1, 5, 5, 1), mode="wrap") * 5 + 0.3 * noise
        block = smooth @ mix.T * 25 + 120 + rng.normal(size=(stop - start, 1, 1, 3)) * 20
        arr[start:stop] = np.clip(block, 0, 255).astype(np.float32)
    arr.attrs["complete"] = True
    return path


def timed(func: Callable[[], Any]) -> tuple[float, int, Any]:
    """(seconds, peak RSS above the start, result)."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = func()
        seconds = time.perf_counter() - t0
    return seconds, mem.growth, out


def numpy_fit(x: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What a numpy user writes: float32 mean, centring, Xcᵀ Xc, eigh, W."""
    mean = x.mean(axis=0)
    xc = x - mean
    cov = xc.T @ xc / (len(x) - 1)
    evals, evecs = np.linalg.eigh(cov)
    w = (evecs / np.sqrt(evals + eps)) @ evecs.T
    return mean, w, evals[::-1]


def bigimg_fit(path: Path, chunk: int) -> Any:
    import bigimg as bi

    stack = bi.open_image(path, chunks={"image": chunk})
    return bi.ZCA().fit(stack)


def fmt_mem(nbytes: float) -> str:
    return f"{nbytes / 2**20:8.0f} MiB"


# ---------------------------------------------------------------- parts
def bench_fit(path: Path, n: int, repeats: int, chunk: int, sklearn_default: bool) -> Any:
    import zarr
    from sklearn.decomposition import PCA

    import bigimg as bi

    x = zarr.open_array(str(path), mode="r")[:].reshape(n, -1)
    methods: dict[str, Callable[[], Any]] = {
        "bigimg ZCA.fit (reads Zarr)": lambda: bigimg_fit(path, chunk),
        "numpy in-memory fit": lambda: numpy_fit(x),
        "sklearn PCA covariance_eigh": lambda: PCA(whiten=True, svd_solver="covariance_eigh").fit(
            x
        ),
    }
    if sklearn_default:
        methods["sklearn PCA default solver"] = lambda: PCA(whiten=True).fit(x)
    m = min(n, 4000)
    print(f"warm-up on {m} samples ...", flush=True)
    numpy_fit(x[:m])
    bi.ZCA().fit(bi.open_image(path, chunks={"image": chunk}).isel(image=slice(0, m)))
    times: dict[str, list[float]] = {k: [] for k in methods}
    mems: dict[str, list[int]] = {k: [] for k in methods}
    results: dict[str, Any] = {}
    for r in range(repeats):
        for name, func in methods.items():
            if name == "sklearn PCA default solver" and r > 0 and times[name][0] > 60:
                continue  # one run is enough for the slow anchor
            sec, mem, results[name] = timed(func)
            times[name].append(sec)
            mems[name].append(mem)
            print(f"  run {r}: {name:32s} {sec:7.2f} s", flush=True)
    zca = results["bigimg ZCA.fit (reads Zarr)"]
    ref = numpy_fit(x.astype(np.float64))  # accuracy anchor: float64 in memory
    ev_err = np.abs(zca.explained_variance_ - ref[2]).max() / ref[2].max()
    base = statistics.median(times["numpy in-memory fit"])
    print(
        f"\nfit, {x.shape[0]} x {x.shape[1]} features float32 ({x.nbytes / 2**20:.0f} MiB), median of runs"
    )
    print(f"{'method':34s} {'seconds':>8s} {'runs':>5s} {'peak RSS +':>13s} {'vs numpy':>9s}")
    for name in methods:
        med = statistics.median(times[name])
        print(
            f"{name:34s} {med:8.2f} {len(times[name]):5d} {fmt_mem(max(mems[name])):>13s} "
            f"{med / base:8.2f}x"
        )
    ours = statistics.median(times["bigimg ZCA.fit (reads Zarr)"])
    if sklearn_default:
        print(
            f"sklearn default / bigimg: {statistics.median(times['sklearn PCA default solver']) / ours:.2f}x"
        )
    print(f"bigimg eigenvalues vs float64 two-pass numpy: max rel err {ev_err:.2e}")
    return x, zca


def bench_transform(
    path: Path, x: np.ndarray, zca: Any, m: int, chunk: int, repeats: int, shape: tuple[int, ...]
) -> None:
    import dask
    import dask.array as da
    from threadpoolctl import threadpool_limits

    import bigimg as bi

    xs = x[:m]
    mean = zca.mean_.astype(np.float32)
    w = zca.whitening_.astype(np.float32)
    stack = bi.from_array(xs.reshape(m, *shape), chunks={"image": chunk})
    target = np.zeros((m, *shape), np.float32)  # allocated and touched outside the timing
    store = bi.open_image(path, chunks={"image": chunk}).isel(image=slice(0, m))
    whiten_block = importlib.import_module("bigimg.whiten")._whiten_block
    methods = {
        "numpy (X - mean) @ W": lambda: (xs - mean) @ w,
        # the per-chunk kernel alone, no dask, outputs dropped
        "bigimg kernel, chunk by chunk": lambda: [
            whiten_block(xs[i : i + chunk], mean, w) for i in range(0, m, chunk)
        ],
        "bigimg transform (in memory)": lambda: zca.transform(stack).data.compute(),
        "bigimg transform (reads Zarr)": lambda: zca.transform(store).data.compute(),
        # compute() ends by concatenating the chunks into one array, a copy the
        # single GEMM never makes; da.store writes each chunk into place
        "bigimg transform -> array (store)": lambda: da.store(
            zca.transform(stack).data, target, lock=False
        ),
    }
    times: dict[str, list[float]] = {k: [] for k in methods}
    with threadpool_limits(1), dask.config.set(scheduler="synchronous"):
        for func in methods.values():
            func()  # warm-up
        for _ in range(repeats):
            for name, func in methods.items():
                times[name].append(timed(func)[0])
    base = statistics.median(times["numpy (X - mean) @ W"])
    print(f"\ntransform on one core (1 BLAS thread, synchronous), {m} samples, median of {repeats}")
    print(f"{'method':34s} {'seconds':>8s} {'images/s':>10s} {'vs numpy':>9s}")
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:34s} {med:8.2f} {m / med:10.0f} {base / med:8.2f}x")


def fit_only(path: Path, chunk: int) -> None:
    """Run in a fresh process: fit, print JSON with seconds and peak RSS."""
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        zca = bigimg_fit(path, chunk)
        sec = time.perf_counter() - t0
    print(json.dumps({"seconds": sec, "peak_rss": mem.total_peak, "n": zca.n_samples_}))


def bench_big(workdir: Path, n: int, chunk: int, shape: tuple[int, ...]) -> None:
    path = workdir / f"cifar_{n}_{shape[0]}.zarr"
    t0 = time.perf_counter()
    make_store(path, n, shape, seed=1)
    print(f"\nbig store {path} ready in {time.perf_counter() - t0:.0f} s", flush=True)
    cmd = [sys.executable, __file__, "--fit-only", str(path), "--chunk", str(chunk)]
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        sec = time.perf_counter() - t0
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    size = n * int(np.prod(shape)) * 4
    print(f"fit on {n} samples ({size / 2**30:.1f} GiB float32), fresh process")
    print(
        f"  fit {info['seconds']:.1f} s ({size / 2**20 / info['seconds']:.0f} MiB/s), process {sec:.1f} s"
    )
    print(f"  peak RSS of the fitting process (absolute): {fmt_mem(info['peak_rss']).strip()}")
    print(f"  (its growth seen from the parent: {fmt_mem(mem.growth).strip()})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--big", action="store_true", help="also fit on 500,000 samples")
    parser.add_argument(
        "--n", type=int, default=None, help="samples (default 50,000; quick 3,000 of 16 x 16 x 3)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=5000, help="samples per dask chunk")
    parser.add_argument(
        "--no-sklearn-default", action="store_true", help="skip the slow full-SVD PCA"
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where stores go (default: a temp dir)"
    )
    parser.add_argument("--fit-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_only is not None:
        fit_only(args.fit_only, args.chunk)
        return
    n = args.n or (3000 if args.quick else 50_000)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_whiten_"))
    workdir.mkdir(parents=True, exist_ok=True)
    shape = (16, 16, 3) if args.quick else SHAPE
    path = workdir / f"cifar_{n}_{shape[0]}.zarr"
    t0 = time.perf_counter()
    make_store(path, n, shape)
    print(
        f"store {path}: {n} x {shape} float32, ready in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    x, zca = bench_fit(path, n, args.repeats, args.chunk, not args.no_sklearn_default)
    bench_transform(path, x, zca, min(n, 10_000), args.chunk, args.repeats, shape)
    if args.big:
        bench_big(workdir, 50_000 if args.quick else 500_000, args.chunk, shape)


if __name__ == "__main__":
    main()
