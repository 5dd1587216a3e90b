"""Benchmark: the compiled kernels (bigimg/kernels) per value and per core, and beside libvips.

Run from the repository root (steady-state memory: freed memory stays in the process)::

    MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000 \\
        .venv/bin/python benchmarks/kernels.py            # 2048^2 chunk, 8192^2 uint8, 4096^2 blur
    .venv/bin/python benchmarks/kernels.py --quick       # smaller, a smoke test
    .venv/bin/python benchmarks/kernels.py --jit         # first call in fresh processes

Three tables, each measured in one run, tools alternating, after a warm-up:

1. **Per core** (one thread, float32 2048^2 chunk unless said): each kernel in
   ns per value, beside its numpy/scipy reference and the memory-bandwidth
   floor (``np.copyto`` of the same bytes), with the ratios.
2. **Beside libvips** (``pyvips``, 2 threads each; bigimg on dask's threaded
   scheduler with 2 workers, written with ``da.store`` into a preallocated
   array): ``gaussblur`` (precision approximate, ``min_ampl`` set so its
   footprint is scipy's ``truncate=4``) at sigma 4 and 32 against
   ``bi.gaussian_filter``, and 8192^2 uint8 ``hist_equal`` against
   ``bi.equalize_hist(dtype="uint8")`` (histogram and mapping, end to end).
3. With ``--jit``: the first call of each kernel in a fresh process, with an
   empty numba cache (cold: compiling) and again with that cache (warm), and
   ``import bigimg``'s time (numba is not imported then).

Per-core times are CPU time of the running thread (minimum and median of
``--repeat`` runs); the libvips table gives wall and process CPU time. On a
machine shared with other work the minimum is the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("VIPS_CONCURRENCY", "2")  # read when libvips starts

import numpy as np


def _times(
    fns: dict[str, Callable[[], object]], repeat: int, clock: Callable[[], float] = time.thread_time
) -> dict[str, list[float]]:
    """Run each function ``repeat`` times, alternating, after one warm-up call each.

    The clock is this thread's CPU time by default (one-thread kernels: what
    they cost, less disturbed by other work on the machine than wall time).
    """
    for f in fns.values():
        f()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = clock()
            f()
            out[k].append(clock() - t)
    return out


def _row(name: str, n: int, times: dict[str, list[float]], ref: str, floor: str) -> str:
    k, r, c = (min(times[x]) / n * 1e9 for x in ("kernel", ref, floor))
    med = statistics.median(times["kernel"]) / n * 1e9
    return f"| {name} | {k:.2f} | {med:.2f} | {r:.2f} | {c:.2f} | {r / k:.1f}x | {k / c:.1f}x |"


def per_core(size: int, repeat: int) -> None:
    import scipy.ndimage as ndi

    from bigimg.filters import _dtype_weights, _weights
    from bigimg.kernels import histogram as kh
    from bigimg.kernels.gaussian import correlate_valid

    rng = np.random.default_rng(0)
    n = size * size
    a = rng.gamma(2.0, 0.2, (size, size)).astype(np.float32)
    nan = a.copy()
    nan[: size // 8] = np.nan  # a NoData border
    nan[rng.random(a.shape) < 0.001] = np.nan  # and scattered NoData: every row holds NaN
    dst = np.empty_like(a)
    print(f"\n## Per core: float32 {size}x{size} (one chunk), one thread, ns per value")
    print(
        "| kernel | bigimg min | bigimg median | reference | copy floor | faster than ref | x floor |"
    )
    print("|---|---|---|---|---|---|---|")
    copy = lambda: np.copyto(dst, a)  # noqa: E731

    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    bins = kh.uniform_bins(a.dtype, 256, np.float32(lo), np.float32(hi))
    t = _times(
        {
            "kernel": lambda: kh.count_uniform(nan[None], bins),
            "numpy": lambda: np.histogram(nan, 256, range=(np.float32(lo), np.float32(hi))),
            "copy": copy,
        },
        repeat,
    )
    print(_row("count, 256 uniform bins (numpy.histogram)", n, t, "numpy", "copy"))

    edges = bins[5]
    xp = ((edges[:-1] + edges[1:]) / 2).astype(np.float64)
    fp = np.cumsum(rng.random(256))
    fp /= fp[-1]

    def np_interp() -> None:
        out = np.interp(nan, xp, fp).astype(np.float32)
        out[np.isnan(nan)] = np.nan

    t = _times(
        {
            "kernel": lambda: kh.interp(nan[None], xp[None], fp[None], out=dst[None]),
            "numpy": np_interp,
            "copy": copy,
        },
        repeat,
    )
    print(_row("equalize apply, float32 out (np.interp)", n, t, "numpy", "copy"))
    u8 = np.empty(a.shape, np.uint8)
    t = _times(
        {
            "kernel": lambda: kh.interp(nan[None], xp[None], fp[None], out=u8[None], nodata=0),
            "numpy": np_interp,
            "copy": copy,
        },
        repeat,
    )
    print(_row("equalize apply, uint8 out (np.interp)", n, t, "numpy", "copy"))

    for sigma in (2.0, 4.0):
        r = int(4 * sigma + 0.5)
        w = _dtype_weights(_weights(sigma, r), np.dtype(np.float32))[r:]
        big = rng.random((size + 2 * r, size + 2 * r)).astype(np.float32)
        bign = big.copy()
        bign[: size // 8] = np.nan
        bign[rng.random(big.shape) < 0.001] = np.nan
        for name, src, omit in (("plain", big, False), ("omit, NaN in every row", bign, True)):
            t = _times(
                {
                    "kernel": lambda src=src, omit=omit, w=w: correlate_valid(
                        src[None], w, w, 1, omit=omit
                    ),
                    "scipy": lambda src=src, s=sigma: ndi.gaussian_filter(src, s, mode="constant"),
                    "copy": copy,
                },
                repeat,
            )
            print(_row(f"Gaussian sigma {sigma:g} {name} (scipy)", n, t, "scipy", "copy"))

    v8 = rng.integers(0, 256, a.shape).astype(np.uint8)
    lut = rng.integers(0, 256, (1, 256)).astype(np.uint8)
    d8 = np.empty_like(v8)
    copy8 = lambda: np.copyto(d8, v8)  # noqa: E731
    t = _times(
        {
            "kernel": lambda: kh.count_values(v8[None], 0, 256),
            "numpy": lambda: np.bincount(v8.ravel(), minlength=256),
            "copy": copy8,
        },
        repeat,
    )
    print(_row("uint8 count by value (np.bincount)", n, t, "numpy", "copy"))
    t = _times(
        {
            "kernel": lambda: kh.apply_lut(v8[None], 0, lut, out=d8[None]),
            "numpy": lambda: np.take(lut[0], v8, out=d8),
            "copy": copy8,
        },
        repeat,
    )
    print(_row("uint8 lookup table (np.take)", n, t, "numpy", "copy"))


def _ratio(b: float, v: float) -> str:
    return f"{v / b:.2f}x faster" if b < v else f"{b / v:.2f}x slower"


def _vs(name: str, fns: dict[str, Callable[[], object]], repeat: int) -> str:
    wall = _times(fns, repeat, time.perf_counter)
    cpu = _times(fns, repeat, time.process_time)
    bw, vw, bc, vc = min(wall["bigimg"]), min(wall["vips"]), min(cpu["bigimg"]), min(cpu["vips"])
    return f"| {name} | {bw:.3f} | {vw:.3f} | {_ratio(bw, vw)} | {bc:.3f} | {vc:.3f} | {_ratio(bc, vc)} |"


def beside_libvips(blur_size: int, eq_size: int, repeat: int, chunk: int) -> None:
    import dask
    import dask.array as da
    import pyvips

    import bigimg as bi

    pyvips.cache_set_max(0)  # no result cache: every call computes
    rng = np.random.default_rng(1)

    def vips_image(arr: np.ndarray) -> pyvips.Image:
        fmt = {np.dtype("float32"): "float", np.dtype("uint8"): "uchar"}[arr.dtype]
        return pyvips.Image.new_from_memory(arr.data, arr.shape[1], arr.shape[0], 1, fmt)

    def run_bigimg(make: Callable[[object], object], arr: np.ndarray, out: np.ndarray) -> None:
        with dask.config.set(scheduler="threads", num_workers=2):
            img = bi.from_array(da.from_array(arr, chunks=chunk, name=False))
            res = make(img)
            da.store(res.data[..., 0], out, lock=False)  # type: ignore[attr-defined]

    print("\n## Beside libvips: 2 threads each, in memory, seconds (min of runs)")
    print("wall time, and CPU time of the process (all threads: the work done)")
    print(
        f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}; bigimg chunks {chunk}"
    )
    print(
        "| operation | bigimg wall | libvips wall | wall ratio | bigimg CPU | libvips CPU | CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|")
    f = rng.random((blur_size, blur_size)).astype(np.float32)
    fout = np.empty_like(f)
    for sigma in (4.0, 32.0):
        src = vips_image(f)
        min_ampl = 1e-3  # libvips's smallest: radius 3.7 sigma (scipy's truncate=4: 4 sigma)
        fns = {
            "bigimg": lambda s=sigma: run_bigimg(lambda im: bi.gaussian_filter(im, s), f, fout),
            "vips": lambda s=sigma, src=src, m=min_ampl: src.gaussblur(
                s, precision="approximate", min_ampl=m
            ).write_to_memory(),
        }
        print(_vs(f"blur sigma {sigma:g}, float32 {blur_size}^2", fns, repeat))
    u = (rng.normal(120, 30, (eq_size, eq_size)).clip(0, 255)).astype(np.uint8)
    uout = np.empty_like(u)
    src = vips_image(u)
    fns = {
        "bigimg": lambda: run_bigimg(lambda im: bi.equalize_hist(im, dtype="uint8"), u, uout),
        "vips": lambda: src.hist_equal().write_to_memory(),
    }
    print(_vs(f"equalize uint8 {eq_size}^2 -> uint8", fns, repeat))
    # the two agree up to libvips's own rounding of the CDF
    ref = np.frombuffer(src.hist_equal().write_to_memory(), np.uint8).reshape(u.shape)
    run_bigimg(lambda im: bi.equalize_hist(im, dtype="uint8"), u, uout)
    print(
        f"(largest difference from libvips's result: {np.abs(ref.astype(int) - uout).max()} levels)"
    )


JIT_CODE = """
import time
t0 = time.perf_counter()
import bigimg, bigimg.filters, bigimg.histogram
import sys
t1 = time.perf_counter()
assert "numba" not in sys.modules
import numpy as np
from bigimg.kernels import histogram as kh
from bigimg.kernels.gaussian import correlate_valid
a = np.random.default_rng(0).random((64, 64)).astype(np.float32)
w = np.array([0.5, 0.25], np.float32)
calls = {
    "count_uniform": lambda: kh.count_uniform(a[None], kh.uniform_bins(a.dtype, 16, 0.0, 1.0)),
    "interp": lambda: kh.interp(a[None], np.arange(4.0)[None] / 3, np.arange(4.0)[None] / 3, out=np.empty((1, 64, 64), np.float32)),
    "gaussian omit": lambda: correlate_valid(a[None], w, w, 1, omit=True),
    "gaussian plain": lambda: correlate_valid(a[None], w, w, 1),
}
out = [f"import bigimg {t1 - t0:.3f}"]
for name, f in calls.items():
    t = time.perf_counter()
    f()
    out.append(f"{name} {time.perf_counter() - t:.3f}")
print("; ".join(out))
"""


def jit() -> None:
    print("\n## First call in a fresh process (seconds): numba cache empty, then filled")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": root}
        for label in ("cold (compiles)", "warm (cache)", "warm (cache)"):
            res = subprocess.run(
                [sys.executable, "-c", JIT_CODE],
                env=env,
                capture_output=True,
                text=True,
                check=True,
            )
            print(f"- {label}: {res.stdout.strip()}")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes, a smoke test")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--jit", action="store_true", help="only the first-call (JIT) figures")
    p.add_argument("--no-vips", action="store_true", help="skip the libvips table")
    args = p.parse_args()
    if args.jit:
        jit()
        return
    size, blur, eq, chunk = (256, 512, 1024, 256) if args.quick else (2048, 4096, 8192, 2048)
    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    per_core(size, args.repeat)
    if not args.no_vips:
        beside_libvips(blur, eq, args.repeat, chunk)
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
