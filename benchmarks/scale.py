"""Scale benchmark: the demo pipeline on 1, 4 and 12 GiB float32 mosaics.

NaN-aware Gaussian filter then histogram equalization (NoData excluded), read
from and written to Zarr on a LocalCluster of 2 workers with a 3 GiB memory
limit each. Prints, per size: wall time, time per GiB, the peak RSS of each
worker and of the client (sampled every 0.2 s with psutil), bytes spilled and
worker restarts. The target is a flat profile: time per GiB at the largest
size within 1.3x of the smallest, peak memory flat, no restarts.

Two anchor columns, measured on the same mosaic and cluster right after
bigimg (``--no-anchors`` skips them): the plain xarray copy (the floor: read
once, write once, same codec) and the dask-image way (see
``benchmarks/pipeline.py``, which alternates the three ways and repeats them).

    python benchmarks/scale.py                 # 1, 4, 12 GiB (needs ~30 GB disk)
    python benchmarks/scale.py --sizes 0.25 1  # quicker
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from _common import PeakRSS
from pipeline import copy_floor, dask_image_way

import bigimg as bi
from bigimg.demo import synthetic_mosaic
from bigimg.pipeline import parse_config

GIB = 1024**3
BANDS = 3
CHUNK = 2048
STEPS = [
    {"op": "gaussian_filter", "sigma": {"y": 2.0, "x": 2.0}, "nan_policy": "omit"},
    {"op": "equalize_hist"},  # NaN (NoData) is never counted nor changed
]


def _spilled(dask_worker) -> int:  # runs on each worker
    total = getattr(dask_worker.data, "spilled_total", None)
    return int(getattr(total, "disk", 0) or 0)


def run_size(gib: float, workdir: Path, anchors: bool = True) -> dict[str, float | str]:
    side = int(math.sqrt(gib * GIB / (BANDS * 4)))
    side -= side % 128
    src, out = workdir / f"mosaic-{gib}.zarr", workdir / f"out-{gib}.zarr"
    with bi.Cluster(n_workers=2, threads_per_worker=1, memory_limit="3GiB") as client:
        if not src.exists():
            bi.to_zarr(synthetic_mosaic(side, bands=BANDS, chunks=CHUNK, dtype="float32"), src)
        pids = client.run(os.getpid)
        config = {
            "input": {"path": str(src), "chunks": {"y": CHUNK, "x": CHUNK}},
            "steps": STEPS,
            "output": {"path": str(out)},
        }
        with PeakRSS(interval=0.2) as rss:
            t0 = time.perf_counter()
            parse_config(config, base=workdir).run(overwrite=True)
            wall = time.perf_counter() - t0
        shutil.rmtree(out, ignore_errors=True)
        anchor_s = {}
        for name, way in {"copy": copy_floor, "dask-image": dask_image_way}.items():
            if anchors:
                t0 = time.perf_counter()
                way(src, out)
                anchor_s[name] = time.perf_counter() - t0
                shutil.rmtree(out, ignore_errors=True)
        spilled = sum(client.run(_spilled).values())
        restarts = len(set(client.run(os.getpid).values()) ^ set(pids.values())) // 2
    workers = sorted(rss.peak.get(pid, 0) for pid in pids.values())
    size = side * side * BANDS * 4 / GIB
    floor = anchor_s.get("copy", math.nan) / size
    dask_image = anchor_s.get("dask-image", math.nan) / size
    return {
        "GiB": f"{size:.2f}",
        "side": str(side),
        "wall_s": wall,
        "s_per_GiB": wall / size,
        "copy_s_per_GiB": floor,
        "dask_image_s_per_GiB": dask_image,
        "bigimg_vs_copy": wall / size / floor,
        "dask_image_vs_bigimg": dask_image / (wall / size),
        "client_peak_MiB": rss.self_peak / 2**20,
        "worker_peak_MiB": " / ".join(f"{w / 2**20:.0f}" for w in workers),
        "spilled_MiB": spilled / 2**20,
        "restarts": str(restarts),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--sizes", type=float, nargs="+", default=[1, 4, 12], help="mosaic sizes in GiB"
    )
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the mosaics go (kept for reuse)"
    )
    ap.add_argument("--quick", action="store_true", help="0.1 and 0.3 GiB only")
    ap.add_argument("--no-anchors", action="store_true", help="skip the copy and dask-image")
    args = ap.parse_args()
    sizes = [0.1, 0.3] if args.quick else args.sizes
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bigimg-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for gib in sizes:
        rows.append(run_size(gib, workdir, anchors=not args.no_anchors))
        print(rows[-1], flush=True)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print(
            "| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else v for v in r.values()) + " |"
        )
    base = rows[0]["s_per_GiB"]
    for r in rows[1:]:
        print(
            f"time per GiB at {r['GiB']} GiB / at {rows[0]['GiB']} GiB: {r['s_per_GiB'] / base:.2f}x (target <= 1.3x)"
        )
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
