"""COG writers side by side: bigimg's ``to_cog``, rioxarray, GDAL's COG driver.

    python benchmarks/cog.py [--gib 1] [--big-gib 8] [--rounds 2] [--chunk 1024]
    python benchmarks/cog.py --quick            # 64 MiB and 256 MiB, one round

All writers make the same file from the same float32 GeoTIFF (one band, a
smooth field plus quantised noise, NoData margins; tiled 512, uncompressed):
a BigTIFF COG, DEFLATE level 6 without predictor, 512 x 512 tiles, overviews
by averaging down to one tile.

* ``bigimg``: ``bi.open_image(src, chunks=C)`` then ``to_cog`` (threads);
* ``bigimg-cluster``: the same on a 2-worker ``LocalCluster`` (1 thread each);
* ``rioxarray``: ``open_rasterio(src).load()`` (not timed), then
  ``.rio.to_raster(driver="COG")`` on the array in memory;
* ``gdal``: ``rasterio.shutil.copy(src, driver="COG")``, i.e.
  ``gdal_translate -of COG`` with rasterio's GDAL (single-threaded, GDAL's
  default), and ``gdal-mt``: the same with ``NUM_THREADS=ALL_CPUS``.

Each run is a fresh process; the parent samples the RSS of it and its
children every 20 ms (psutil) and keeps the peak of the sum. Times are the
write alone (after imports and opening). The machine has 2 cores and slow
first-touch memory: a throwaway process touches 3 GiB first, the input is
read once into the page cache, and the writers alternate over the rounds.
Finally bigimg writes a ``--big-gib`` image: its peak memory must not grow
with the image size. The file checks: GDAL's COG validator (rio-cogeo, when
installed) on every output, and bigimg's pixels equal GDAL's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from _common import PeakRSS

HERE = Path(__file__).resolve().parent
GDAL_OPTIONS = {
    "COMPRESS": "DEFLATE",
    "LEVEL": "6",
    "BLOCKSIZE": "512",
    "BIGTIFF": "YES",
    "OVERVIEW_RESAMPLING": "AVERAGE",
}
WRITERS = ["bigimg", "bigimg-cluster", "rioxarray", "gdal", "gdal-mt"]


# ---------------------------------------------------------------- input
def make_input(path: Path, side: int) -> None:
    """A ``side`` x ``side`` float32 GeoTIFF, written 512 rows at a time."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    x = np.arange(side)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=side,
        height=side,
        count=1,
        dtype="float32",
        crs="EPSG:32633",
        transform=from_origin(300000.0, 5000000.0, 10.0, 10.0),
        tiled=True,
        blockxsize=512,
        blockysize=512,
        bigtiff="YES",
        nodata=float("nan"),
    ) as dst:
        for y0 in range(0, side, 512):
            y = np.arange(y0, min(y0 + 512, side))[:, None]
            v = 100 * np.sin(x / 500.0) * np.cos(y / 700.0) + rng.normal(0, 1, (y.size, side))
            v = (np.round(v * 64) / 64).astype("float32")
            v[:, : side // 50] = np.nan  # a NoData margin
            if y0 < side // 40:
                v[: side // 40 - y0] = np.nan
            dst.write(v[None], window=Window(0, y0, side, y.size))


# ---------------------------------------------------------------- one run (child process)
def tree_rss() -> int:
    """RSS of this process and its children (bytes)."""
    me = psutil.Process()
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)])


def run_writer(writer: str, src: str, out: str, chunk: int) -> dict[str, float]:
    """Write ``out`` from ``src``; the time and the RSS just before writing."""
    if writer.startswith("bigimg"):
        import dask

        import bigimg as bi
        from bigimg.cog import to_cog

        with dask.config.set({"array.chunk-size": f"{chunk * chunk * 4 // 2**20}MiB"}):
            img = bi.open_image(src, chunks={"y": chunk, "x": chunk})
        if writer == "bigimg-cluster":
            with bi.Cluster(n_workers=2, threads_per_worker=1, memory_limit="2GB"):
                base, start = tree_rss(), time.perf_counter()
                to_cog(img, out, progress=False)
                return {"seconds": time.perf_counter() - start, "base": base}
        base, start = tree_rss(), time.perf_counter()
        to_cog(img, out, progress=False)
        return {"seconds": time.perf_counter() - start, "base": base}
    if writer == "rioxarray":
        import rioxarray

        arr = rioxarray.open_rasterio(src).load()
        base, start = tree_rss(), time.perf_counter()
        arr.rio.to_raster(out, driver="COG", **{k.lower(): v for k, v in GDAL_OPTIONS.items()})
        return {"seconds": time.perf_counter() - start, "base": base}
    import rasterio.shutil

    options = dict(GDAL_OPTIONS, **({"NUM_THREADS": "ALL_CPUS"} if writer == "gdal-mt" else {}))
    base, start = tree_rss(), time.perf_counter()
    rasterio.shutil.copy(src, out, driver="COG", **options)
    return {"seconds": time.perf_counter() - start, "base": base}


def measure(writer: str, src: Path, out: Path, chunk: int) -> dict[str, float]:
    """Run ``writer`` in a fresh process; its time, and the peak RSS of its process tree."""
    out.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", writer, str(src), str(out), str(chunk)]
    # bigimg reads each chunk of the input once: GDAL's block cache (default 5% of
    # the RAM) would only hold pixels already read, and count in bigimg's RSS
    env = dict(os.environ, **({"GDAL_CACHEMAX": "64"} if writer.startswith("bigimg") else {}))
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, cwd=HERE.parent, env=env)
    with PeakRSS(pid=proc.pid) as mem:
        stdout, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{writer} failed (exit {proc.returncode})")
    info = json.loads(stdout.decode().strip().splitlines()[-1])
    return {**info, "peak": mem.total_peak, "size": out.stat().st_size}


# ---------------------------------------------------------------- checks
def check(outputs: dict[str, Path]) -> list[str]:
    lines = []
    try:
        from rio_cogeo.cogeo import cog_validate
    except ImportError:
        lines.append("rio-cogeo not installed: COG validation skipped")
    else:
        for writer, path in outputs.items():
            valid, errors, warnings = cog_validate(str(path), strict=True, quiet=True)
            lines.append(
                f"cog_validate({writer}): valid={valid} errors={errors} warnings={warnings}"
            )
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(outputs["bigimg"]) as a, rasterio.open(outputs["gdal"]) as b:
        same = a.crs == b.crs and a.transform == b.transform and a.overviews(1) == b.overviews(1)
        step = 4096
        for y0 in range(0, a.height, step):
            w = Window(0, y0, a.width, min(step, a.height - y0))
            same &= np.array_equal(a.read(1, window=w), b.read(1, window=w), equal_nan=True)
        lines.append(
            f"bigimg vs gdal: same pixels, CRS, transform, overview factors: {same} "
            f"(overviews {a.overviews(1)}, nodata {a.nodata} / {b.nodata})"
        )
    return lines


# ---------------------------------------------------------------- main
def warm_up(src: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", "import numpy as np; np.ones(3 << 30, np.uint8).sum()"], check=True
    )
    with open(src, "rb") as f:
        while f.read(64 << 20):
            pass


def fmt_row(name: str, runs: list[dict[str, float]], anchor: float, nbytes: int) -> str:
    secs = [r["seconds"] for r in runs]
    t = statistics.median(secs)
    peak = max(r["peak"] for r in runs)
    growth = max(r["peak"] - r["base"] for r in runs)
    all_secs = " ".join(f"{s:.1f}" for s in secs)
    return (
        f"{name:15s} {t:7.1f} s ({all_secs:>11s}) {t / anchor:5.2f}x "
        f"{peak / 2**20:7.0f} MiB {peak / nbytes:5.2f} {growth / 2**20:7.0f} MiB "
        f"{growth / nbytes:5.2f} {runs[0]['size'] / 2**20:7.0f} MiB"
    )


HEADER = (
    f"{'writer':15s} {'median time (runs)':>23s} {'/gdal':>6s} {'peak RSS':>11s} {'/img':>5s} "
    f"{'growth':>11s} {'/img':>5s} {'file':>11s}"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0, help="image size for the comparison")
    ap.add_argument("--big-gib", type=float, default=8.0, help="image size for bigimg alone")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=1024, help="bigimg's chunk side")
    ap.add_argument("--writers", default=",".join(WRITERS))
    ap.add_argument("--workdir", default=None, help="folder for the files (default: a temp dir)")
    ap.add_argument("--quick", action="store_true", help="64 MiB vs 256 MiB, one round")
    args = ap.parse_args()
    if args.quick:
        args.gib, args.big_gib, args.rounds = 1 / 16, 1 / 4, 1
    writers = args.writers.split(",")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cog-", dir=HERE.parent))
    work.mkdir(exist_ok=True)
    try:
        sides = {g: int(round((g * 2**30 / 4) ** 0.5 / 16)) * 16 for g in (args.gib, args.big_gib)}
        side = sides[args.gib]
        nbytes = side * side * 4
        src = work / f"in-{side}.tif"
        if not src.exists():
            t = time.perf_counter()
            make_input(src, side)
            print(
                f"input {src.name}: {side} x {side} float32, made in {time.perf_counter() - t:.0f} s"
            )
        warm_up(src)
        runs: dict[str, list[dict[str, float]]] = {w: [] for w in writers}
        outputs = {w: work / f"out-{w}.tif" for w in writers}
        for r in range(args.rounds):
            order = writers if r % 2 == 0 else writers[::-1]
            for w in order:
                runs[w].append(measure(w, src, outputs[w], args.chunk))
                print(f"  round {r + 1} {w:15s} {runs[w][-1]['seconds']:7.1f} s", flush=True)
        anchor = statistics.median(r["seconds"] for r in runs["gdal"]) if "gdal" in runs else 1.0
        print(
            f"\n{side} x {side} float32 ({nbytes / 2**30:.2f} GiB), {args.rounds} round(s), "
            f"load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs"
        )
        print(HEADER)
        for w in writers:
            print(fmt_row(w, runs[w], anchor, nbytes))
        if "bigimg" in writers and "gdal" in writers:
            for line in check(outputs):
                print(line)
        for w in writers:
            outputs[w].unlink(missing_ok=True)
        if args.big_gib and "bigimg" in writers:
            big_side = sides[args.big_gib]
            big = work / f"in-{big_side}.tif"
            if not big.exists():
                t = time.perf_counter()
                make_input(big, big_side)
                print(f"\ninput {big.name}: {big_side} x {big_side}, made in "
                      f"{time.perf_counter() - t:.0f} s")  # fmt: skip
            warm_up(big)
            run = measure("bigimg", big, work / "out-big.tif", args.chunk)
            (work / "out-big.tif").unlink(missing_ok=True)
            small = max(r["peak"] for r in runs["bigimg"])
            small_growth = max(r["peak"] - r["base"] for r in runs["bigimg"])
            t_small = statistics.median(r["seconds"] for r in runs["bigimg"])
            print(
                f"bigimg at {big_side} x {big_side} ({big_side**2 * 4 / 2**30:.2f} GiB): "
                f"{run['seconds']:.1f} s ({run['seconds'] / t_small:.1f}x the time at "
                f"{nbytes / 2**30:.2f} GiB), peak RSS {run['peak'] / 2**20:.0f} MiB "
                f"({run['peak'] / small:.2f}x), growth {(run['peak'] - run['base']) / 2**20:.0f} "
                f"MiB ({(run['peak'] - run['base']) / small_growth:.2f}x)"
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        writer, src, out, chunk = sys.argv[2:6]
        print(json.dumps(run_writer(writer, src, out, int(chunk))))
    else:
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        main()
