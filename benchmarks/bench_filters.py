"""Benchmark bigimg.gaussian_filter against dask-image and scipy (issue 3).

    python benchmarks/bench_filters.py            # 8192 x 8192 x 3 float32, sigma 4 and 32
    python benchmarks/bench_filters.py --quick    # 1024 x 1024 x 3, smoke test

Prints, per sigma: throughput (MB/s of float32 input) and peak memory of
bigimg (propagate and omit), dask-image's ``ndfilters.gaussian_filter`` (same
chunks, same threaded scheduler) and scipy in memory, with the ratios; the
omit/propagate time ratio on an image with a NoData border; and the peak
memory of both chunked tools on a lazily generated image at two sizes (does
memory grow with the image?). Each figure is the median of ``--repeat`` runs
after a warm-up, tools alternating.
"""

from __future__ import annotations

import argparse
import statistics
import time

import dask
import dask.array as da
import numpy as np
import psutil
import scipy.ndimage as ndi
from _common import PeakRSS

import bigimg as bi


def _consume(x: da.Array) -> None:
    """Compute every block and drop it (a tiny per-block reduction)."""
    x.map_blocks(
        lambda b: np.float64(b[:1, :1].sum()).reshape((1,) * b.ndim), dtype=np.float64
    ).compute()


def _lazy_source(n: int, chunk: int, nan_border: bool = False) -> da.Array:
    def block(block_info=None):
        info = block_info[None]
        (y0, y1), (x0, x1), (_, nb) = info["array-location"]
        rng = np.random.default_rng([y0, x0])
        out = rng.random((y1 - y0, x1 - x0, nb), dtype=np.float32)
        if nan_border:
            yy, xx = np.ogrid[y0:y1, x0:x1]
            edge = n // 10
            out[(yy < edge) | (xx < edge) | (yy >= n - edge) | (xx >= n - edge)] = np.nan
        return out

    return da.map_blocks(
        block,
        chunks=((chunk,) * (n // chunk), (chunk,) * (n // chunk), (3,)),
        dtype=np.float32,
        meta=np.empty((0, 0, 0), np.float32),
    )


def _measure(func) -> tuple[float, float, float]:
    """(wall s, process CPU s, peak RSS MB above the baseline) of one call."""
    with PeakRSS() as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        func()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, mem.growth / 1e6


def _median_runs(tools: dict, repeat: int) -> dict[str, tuple[float, float, float]]:
    """Median wall/CPU and max peak per tool, the tools alternating in each round."""
    samples: dict[str, list[tuple[float, float, float]]] = {k: [] for k in tools}
    for _ in range(repeat):
        for label, f in tools.items():
            samples[label].append(_measure(f))
    return {
        k: (
            statistics.median(w for w, _, _ in v),
            statistics.median(c for _, c, _ in v),
            max(m for _, _, m in v),
        )
        for k, v in samples.items()
    }


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    p.add_argument("--size", type=int, default=None, help="image side (default 8192, quick 1024)")
    p.add_argument("--chunk", type=int, default=None, help="chunk side (default 2048, quick 256)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sigmas", type=float, nargs="+", default=[4.0, 32.0])
    p.add_argument(
        "--scipy-size", type=int, default=None, help="side of scipy's run (default: size)"
    )
    p.add_argument(
        "--cv2-threads", type=int, default=None, help="cv2.setNumThreads (default: cv2's)"
    )
    p.add_argument("--skip-memory", action="store_true", help="skip the memory-vs-size scan")
    p.add_argument("--memory-only", action="store_true", help="only the memory-vs-size scan")
    args = p.parse_args()
    from dask_image.ndfilters import gaussian_filter as di_gaussian

    if args.cv2_threads is not None:
        import cv2

        cv2.setNumThreads(args.cv2_threads)
    n = args.size or (1024 if args.quick else 8192)
    chunk = args.chunk or (256 if args.quick else 2048)
    ns = args.scipy_size or n
    a = np.random.default_rng(0).random((n, n, 3), dtype=np.float32)
    mb, scipy_mb = a.nbytes / 1e6, a[:ns, :ns].nbytes / 1e6
    x = da.from_array(a, chunks=(chunk, chunk, 3))
    img = bi.from_array(x)
    nanimg = bi.from_array(_lazy_source(n, chunk, nan_border=True).persist())
    print(
        f"image {n}x{n}x3 float32 ({mb:.0f} MB), chunks {chunk}, threaded scheduler with "
        f"{args.threads} threads, median of {args.repeat} after a warm-up, tools alternating; "
        f"scipy on {ns}x{ns}x3 in memory; load average {psutil.getloadavg()[0]:.1f} "
        f"on {psutil.cpu_count()} CPUs"
    )
    dask.config.set(scheduler="threads", num_workers=args.threads)
    for sigma in [] if args.memory_only else args.sigmas:
        s = {"y": sigma, "x": sigma}
        tools = {
            "bigimg propagate": lambda s=s: _consume(
                bi.gaussian_filter(img, s, nan_policy="propagate").data
            ),
            "bigimg omit (no NaN)": lambda s=s: _consume(bi.gaussian_filter(img, s).data),
            "dask-image": lambda sigma=sigma: _consume(
                di_gaussian(x, sigma=(sigma, sigma, 0), mode="reflect")
            ),
            "bigimg propagate, NaN border": lambda s=s: _consume(
                bi.gaussian_filter(nanimg, s, nan_policy="propagate").data
            ),
            "bigimg omit, NaN border": lambda s=s: _consume(bi.gaussian_filter(nanimg, s).data),
        }
        _consume(bi.gaussian_filter(img[: 2 * chunk, : 2 * chunk], s).data)  # warm-up
        _consume(di_gaussian(x[: 2 * chunk, : 2 * chunk], sigma=(sigma, sigma, 0)))
        results = _median_runs(tools, args.repeat)
        sub = a[:ns, :ns]
        results |= _median_runs(
            {
                "scipy in memory (1 thread)": lambda sub=sub, sg=sigma: ndi.gaussian_filter(
                    sub, (sg, sg, 0)
                )
            },
            1 if ns > 2048 and sigma > 8 else args.repeat,
        )
        di_wall, di_cpu, _ = results["dask-image"]
        sp_wall, sp_cpu, _ = results["scipy in memory (1 thread)"]
        print(f"\nsigma {{y: {sigma:g}, x: {sigma:g}}}")
        print(
            f"  {'tool':30s} {'wall s':>7s} {'MB/s':>6s} {'CPU s':>7s} {'peak MB':>8s}"
            f" {'vs dask-image':>13s} {'(CPU)':>6s} {'vs scipy':>9s} {'(CPU)':>6s}"
        )
        for label, (wall, cpu, peak) in results.items():
            size = scipy_mb if label.startswith("scipy") else mb
            vs_di, vs_di_cpu = (di_wall / mb) / (wall / size), (di_cpu / mb) / (cpu / size)
            vs_sp, vs_sp_cpu = (
                (sp_wall / scipy_mb) / (wall / size),
                (sp_cpu / scipy_mb) / (cpu / size),
            )
            print(
                f"  {label:30s} {wall:7.2f} {size / wall:6.0f} {cpu:7.2f} {peak:8.0f}"
                f" {vs_di:12.2f}x {vs_di_cpu:5.2f}x {vs_sp:8.2f}x {vs_sp_cpu:5.2f}x"
            )
        omit, prop = results["bigimg omit, NaN border"], results["bigimg propagate, NaN border"]
        print(
            f"  omit / propagate on the NaN-bordered image: {omit[0] / prop[0]:.2f}x wall, "
            f"{omit[1] / prop[1]:.2f}x CPU (target <= 2.2x)"
        )
    if args.skip_memory:
        return
    mchunk = max(chunk // 4, 64)  # enough blocks per row for the scheduler's sweep to show
    print(f"\npeak memory (MB above baseline) vs image size, lazy input, sigma 4, chunks {mchunk}")
    a = x = img = nanimg = None  # free the in-memory images
    chunk = mchunk
    warm = _lazy_source(2 * chunk, chunk)
    _consume(bi.gaussian_filter(bi.from_array(warm), 4.0).data)
    _consume(di_gaussian(warm, sigma=(4, 4, 0)))
    for size in (n // 4, n // 2, n):
        src = _lazy_source(size, chunk)
        res = _median_runs(
            {
                "bigimg": lambda src=src: _consume(
                    bi.gaussian_filter(bi.from_array(src), 4.0).data
                ),
                "dask-image": lambda src=src: _consume(di_gaussian(src, sigma=(4, 4, 0))),
            },
            1,
        )
        print(
            f"  {size}x{size}x3 ({size * size * 12 / 1e6:.0f} MB): bigimg {res['bigimg'][2]:.0f} MB, "
            f"dask-image {res['dask-image'][2]:.0f} MB"
        )


if __name__ == "__main__":
    main()
