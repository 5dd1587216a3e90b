"""The graph at internet scale, on paper and by count (issue #17, item 4).

Builds, without running anything (no task is computed, no byte is written),
the graphs that ``Pipeline.run()`` submits for the demo pipeline (a NaN-aware
``gaussian_filter``, sigma 2, then ``equalize_hist``, 256 bins) on lazy float32
mosaics of 3 bands, 64 GiB, 1 TiB and 16 TiB by default, in chunks of
``--chunk`` x ``--chunk`` x 3 pixels. The run has three computes (phases):

1. ``scratch+range``: the input (``synthetic_mosaic``, one task per chunk: it
   stands in for a stored mosaic), the filter, one write task per chunk of the
   scratch store (``store.block_writes``, as ``store.write`` builds them; their
   store is never opened) and, in the same graph, equalize's first pass (per-band
   min/max);
2. ``counts``: equalize's counts pass over the scratch store (stood in for by a
   lazy array of one task per chunk), given a made-up range;
3. ``write``: the equalized image (made-up counts) and its write tasks as
   ``store.write`` submits them for a fresh output (``block_writes``, one
   array; a resume instead takes ``to_delayed`` per block to skip stored ones).

For each phase it reports the tasks of the graph the scheduler receives (what
``dask.compute`` builds: ``collections_to_expr`` -> ``FinalizeCompute`` ->
``optimize()`` -> ``__dask_graph__()``, i.e. after culling and fusion), the raw
count before optimization (the high-level graph's layer sizes), the time to
build the lazy collections and to optimize/materialize the graph, and the
client memory: the peak RSS growth of the process over its RSS after imports
(psutil sampled every 20 ms; ``--tracemalloc`` adds Python's traced peak, at a
cost in speed). Each size runs in a fresh child process, so sizes do not share
allocator state, and is killed past ``--max-seconds`` or ``--max-rss``. Before
a size is started its time and memory are extrapolated from the two largest
chunk counts measured (a power law, never below linear: the graph depends on
the number of chunks, not their size); a size predicted past a limit, or with
more than ``--max-chunks`` chunks, is skipped with the reason printed, and a
size skipped on a prediction is tried again with ``--fallback-chunk`` (4096)
pixel chunks: by default 16 TiB in 2048-pixel chunks (~350k chunks, about 13
minutes and 8 GiB by extrapolation on a 2-core machine) is skipped and built
in 4096-pixel chunks instead (the whole default run: about 5 minutes).

    python benchmarks/graph_scale.py                         # 64 GiB, 1 TiB, 16 TiB
    python benchmarks/graph_scale.py --sizes 64GiB           # quick
    python benchmarks/graph_scale.py --sizes 16TiB --chunk 4096

Targets (issue #17): at most 20 tasks per output chunk; graph build time and
client memory growing no faster than the number of chunks (the printed
per-chunk ratios between sizes stay near 1); 1 TiB built in under 60 s.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import threading
import time
from typing import Any

import psutil
from _common import PeakRSS

GIB = 1024**3
BANDS = 3
ITEMSIZE = 4  # float32
SIGMA = 2.0
BINS = 256
MAX_TASKS_PER_CHUNK = 20
TARGET_1TIB_SECONDS = 60.0
UNITS = {"": GIB, "k": 1024, "m": 1024**2, "g": GIB, "t": 1024**4, "p": 1024**5}


def parse_size(text: str) -> int:
    """``64GiB``, ``1TiB``, ``16T``, ``0.5GB`` (binary units), or a bare number of GiB."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgtp]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64GiB, 1TiB)")
    return int(float(m.group(1)) * UNITS[m.group(2)])


def fmt_bytes(n: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def geometry(nbytes: int, chunk: int) -> tuple[int, int]:
    """The side of a square float32 mosaic of about ``nbytes``, and its output chunks."""
    side = math.isqrt(nbytes // (BANDS * ITEMSIZE))
    return side, math.ceil(side / chunk) ** 2


# --- the child: build one size, print one JSON line per phase ----------------------


def _writes(img: Any) -> Any:
    """One write task per chunk, as ``store.write`` builds them (the store is never opened)."""
    from bigimg.io.location import Location
    from bigimg.io.store import as_dataset, block_writes

    ds, _ = as_dataset(img, compress=False)
    return block_writes(ds["image"].data, Location.of("/nonexistent/graph-scale.zarr"), "image")


def _count(collections: list[Any]) -> tuple[int, int, dict[str, int]]:
    """Raw tasks before optimization, tasks of the graph ``dask.compute`` would schedule,
    and those tasks by key prefix."""
    from collections import Counter

    from dask._expr import FinalizeCompute
    from dask.base import collections_to_expr
    from dask.highlevelgraph import HighLevelGraph
    from dask.utils import key_split

    graphs = [c.__dask_graph__() for c in collections]
    raw = sum(len(layer) for layer in HighLevelGraph.merge(*graphs).layers.values())
    expr = FinalizeCompute(collections_to_expr(collections, True)).optimize()
    graph = expr.__dask_graph__()  # the materialized low-level graph (culled, fused)
    by_prefix = Counter(key_split(k) for k in graph)
    # the finalize task FinalizeCompute adds is not work: leave it out
    finalize = [k for k in by_prefix if k.startswith("finalize")]
    for k in finalize:
        del by_prefix[k]
    return raw, len(graph) - len(finalize), dict(by_prefix.most_common())


def child(nbytes: int, chunk: int, trace: bool) -> None:
    import tracemalloc

    import numpy as np

    import bigimg
    from bigimg.demo import synthetic_mosaic
    from bigimg.histogram import equalize_hist_passes

    side, nchunks = geometry(nbytes, chunk)

    def emit(**record: Any) -> None:
        print(json.dumps(record), flush=True)

    emit(kind="geometry", side=side, chunks=nchunks)
    if trace:
        tracemalloc.start()
    proc = psutil.Process()
    base = proc.memory_info().rss
    kwargs = {"bins": BINS, "exclude": (), "out_range": (0.0, 1.0), "dims": None}
    fake_range = np.array([[0.0, 1.0]] * BANDS, dtype=np.float32)  # as computed: (band, 2)
    fake_counts = np.full((BANDS, BINS), 1000, dtype=np.int64)  # as computed: (band, bins)

    def phase(name: str, build: Any) -> Any:
        if trace:
            tracemalloc.reset_peak()
        with PeakRSS() as rss:
            t0 = time.perf_counter()
            collections, keep = build()
            t1 = time.perf_counter()
            raw, tasks, by_prefix = _count(collections)
            t2 = time.perf_counter()
        del collections
        emit(
            kind="phase",
            phase=name,
            raw=raw,
            tasks=tasks,
            by_prefix=by_prefix,
            build=t1 - t0,
            optimize=t2 - t1,
            rss_peak=rss.self_peak - base,
            traced_peak=tracemalloc.get_traced_memory()[1] if trace else None,
        )
        return keep

    def scratch_and_range() -> tuple[list[Any], None]:
        img = synthetic_mosaic(side, bands=BANDS, chunks=chunk, dtype="float32")
        filtered = bigimg.gaussian_filter(img, sigma={"y": SIGMA, "x": SIGMA}, nan_policy="omit")
        first = next(equalize_hist_passes(filtered, **kwargs))
        return [_writes(filtered), *first], None

    def counts() -> tuple[list[Any], Any]:
        scratch = synthetic_mosaic(side, bands=BANDS, chunks=chunk, dtype="float32")
        gen = equalize_hist_passes(scratch, **kwargs)
        next(gen)
        return list(gen.send((fake_range,))), gen

    def write(gen: Any) -> tuple[list[Any], Any]:
        try:
            gen.send((fake_counts,))
        except StopIteration as stop:
            out = stop.value
        else:
            raise AssertionError("equalize_hist_passes yielded a third pass")
        return [_writes(out)], out

    phase("scratch+range", scratch_and_range)
    gen = phase("counts", counts)
    phase("write", lambda: write(gen))
    emit(kind="done", rss_growth=proc.memory_info().rss - base)


# --- the parent: run each size in a child, watch it, print the tables --------------


def run_child(
    nbytes: int, chunk: int, args: argparse.Namespace
) -> tuple[dict[str, Any], list[dict[str, Any]], str | None, int]:
    """Run one size; returns (geometry, phases, why it stopped early or None, peak RSS)."""
    cmd = [sys.executable, __file__, "--child", str(nbytes), "--chunk", str(chunk)]
    cmd += ["--tracemalloc"] * args.tracemalloc
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    records: list[dict[str, Any]] = []
    reader = threading.Thread(
        target=lambda: records.extend(json.loads(line) for line in proc.stdout or ()),
        daemon=True,
    )
    reader.start()
    why = None
    t0 = time.perf_counter()
    with PeakRSS(interval=0.05, pid=proc.pid) as rss:
        while proc.poll() is None:
            time.sleep(0.05)
            elapsed = time.perf_counter() - t0
            if elapsed > args.max_seconds:
                why = f"killed after {elapsed:.0f} s (--max-seconds {args.max_seconds:g})"
            elif rss.total_peak > args.max_rss:
                why = f"killed at {fmt_bytes(rss.total_peak)} RSS (--max-rss {fmt_bytes(args.max_rss)})"
            if why:
                proc.kill()
                proc.wait()
                break
    reader.join(timeout=5)
    if why is None and proc.returncode != 0:
        why = f"child failed with exit code {proc.returncode}"
    geo = next((r for r in records if r["kind"] == "geometry"), {})
    phases = [r for r in records if r["kind"] == "phase"]
    return geo, phases, why, rss.total_peak


def predict(done: list[dict[str, Any]], nchunks: int, key: str) -> float | None:
    """Extrapolate ``key`` to ``nchunks`` from earlier complete sizes (power >= 1 in chunks)."""
    pts = sorted((r["chunks"], r[key]) for r in done if r[key] > 0)
    if not pts:
        return None
    n2, v2 = pts[-1]
    power = 1.0
    if len(pts) >= 2 and pts[-2][0] < n2:
        n1, v1 = pts[-2]
        power = max(1.0, math.log(v2 / v1) / math.log(n2 / n1))
    return v2 * (nchunks / n2) ** power


def table(label: str, geo: dict[str, Any], phases: list[dict[str, Any]], trace: bool) -> str:
    n = geo["chunks"]
    head = (
        "| phase | tasks | raw tasks | tasks/chunk | build s | optimize+graph s | peak RSS growth |"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if trace:
        head += " traced peak |"
        sep += "---:|"
    rows = [f"**{label}**: side {geo['side']:,} px, {n:,} output chunks", "", head, sep]
    for p in phases:
        row = (
            f"| {p['phase']} | {p['tasks']:,} | {p['raw']:,} | {p['tasks'] / n:.2f} "
            f"| {p['build']:.2f} | {p['optimize']:.2f} | {fmt_bytes(p['rss_peak'])} |"
        )
        if trace:
            row += f" {fmt_bytes(p['traced_peak'])} |"
        rows.append(row)
    main = [p for p in phases if not p["phase"].startswith("write (")]
    total = sum(p["tasks"] for p in main)
    secs = sum(p["build"] + p["optimize"] for p in main)
    rows.append(
        f"| **total (3 phases)** | {total:,} | {sum(p['raw'] for p in main):,} | "
        f"{total / n:.2f} | {sum(p['build'] for p in main):.2f} | "
        f"{sum(p['optimize'] for p in main):.2f} | {fmt_bytes(max(p['rss_peak'] for p in main))} |"
        + (" |" if trace else "")
    )
    rows.append(f"\nbuild + optimize, all phases: {secs:.1f} s; tasks per chunk by key prefix:")
    for p in phases:
        parts = ", ".join(f"{k} {v / n:.2f}" for k, v in p["by_prefix"].items())
        rows.append(f"- {p['phase']}: {parts}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", nargs="+", type=parse_size, default=None, metavar="SIZE",
                    help="mosaic sizes, e.g. 64GiB 1TiB 16TiB (default)")  # fmt: skip
    ap.add_argument("--chunk", nargs="+", type=int, default=[2048],
                    help="chunk side(s) in pixels (default 2048); each is run for every size")  # fmt: skip
    ap.add_argument("--max-seconds", type=float, default=300.0,
                    help="kill (or, predicted, skip) a size past this many seconds (default 300)")  # fmt: skip
    ap.add_argument("--max-rss", type=parse_size, default=parse_size("12GiB"),
                    help="kill (or, predicted, skip) a size past this client RSS (default 12GiB)")  # fmt: skip
    ap.add_argument("--max-chunks", type=int, default=2_000_000,
                    help="refuse sizes with more output chunks (default 2,000,000)")  # fmt: skip
    ap.add_argument("--fallback-chunk", type=int, default=4096,
                    help="a size skipped on a prediction is tried with this chunk side "
                    "(default 4096; 0: none)")  # fmt: skip
    ap.add_argument("--force", action="store_true",
                    help="run sizes predicted past the limits (the watchdog still kills)")  # fmt: skip
    ap.add_argument("--tracemalloc", action="store_true",
                    help="also report tracemalloc's peak (slower builds)")  # fmt: skip
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.chunk[0], args.tracemalloc)
        return
    sizes = sorted(args.sizes or [parse_size(s) for s in ("64GiB", "1TiB", "16TiB")])
    import dask

    print(f"# Graph scale: demo pipeline, float32 x {BANDS} bands (dask {dask.__version__})\n")
    print(
        "tasks: graph dask.compute schedules (optimized: culled, fused; the finalize task "
        "left out); raw: high-level graph layer sizes before optimization.\n"
    )
    summary: list[dict[str, Any]] = []
    done: list[dict[str, Any]] = []  # graph cost follows the chunk count, not the chunk size
    plan = [(nbytes, chunk) for chunk in args.chunk for nbytes in sizes]
    while plan:
        nbytes, chunk = plan.pop(0)
        side, nchunks = geometry(nbytes, chunk)
        label = f"{fmt_bytes(nbytes)}, chunks {chunk} x {chunk} x {BANDS}"
        reasons = []
        if nchunks > args.max_chunks:
            reasons.append(f"{nchunks:,} chunks > --max-chunks {args.max_chunks:,}")
        t_pred, m_pred = predict(done, nchunks, "seconds"), predict(done, nchunks, "rss")
        if t_pred is not None and t_pred > args.max_seconds:
            reasons.append(f"predicted {t_pred:.0f} s > --max-seconds {args.max_seconds:g}")
        if m_pred is not None and m_pred > args.max_rss:
            reasons.append(f"predicted {fmt_bytes(m_pred)} RSS > --max-rss")
        if t_pred is not None:
            prediction = f"predicted {t_pred:.0f} s, {fmt_bytes(m_pred or 0)} RSS growth"
            print(f"({label}, {nchunks:,} output chunks: {prediction})\n")
        if reasons and not (args.force and nchunks <= args.max_chunks):
            why = "; ".join(reasons)
            fallback = args.fallback_chunk
            if fallback > chunk and (nbytes, fallback) not in plan:
                plan.insert(0, (nbytes, fallback))
                why += f"; trying chunks {fallback} (--fallback-chunk)"
            print(f"**{label}**: {nchunks:,} output chunks: SKIPPED: {why}\n")
            summary.append({"label": label, "chunks": nchunks, "skipped": why})
            continue
        t0 = time.perf_counter()
        geo, phases, why, peak = run_child(nbytes, chunk, args)
        wall = time.perf_counter() - t0
        if not geo:
            geo = {"side": side, "chunks": nchunks}
        if phases:
            print(table(label, geo, phases, args.tracemalloc))
        if why:
            print(f"\n**{label}**: INCOMPLETE: {why}\n")
            summary.append({"label": label, "chunks": nchunks, "skipped": why})
            continue
        main_phases = [p for p in phases if not p["phase"].startswith("write (")]
        rec = {
            "label": label,
            "chunk": chunk,
            "chunks": nchunks,
            "tasks": sum(p["tasks"] for p in main_phases),
            "seconds": sum(p["build"] + p["optimize"] for p in main_phases),
            "rss": max(p["rss_peak"] for p in main_phases),
            "wall": wall,
            "peak": peak,
            "nbytes": nbytes,
        }
        print(f"child wall {wall:.1f} s (imports included), child peak RSS {fmt_bytes(peak)}\n")
        done.append(rec)
        summary.append(rec)
    print_summary(summary)


def print_summary(summary: list[dict[str, Any]]) -> None:
    print("## Summary\n")
    print(
        "| size, chunks | output chunks | tasks | tasks/chunk | build s | ms/chunk "
        "| RSS growth | KiB/chunk | x chunks | x time/chunk | x RSS/chunk |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    prev: dict[str, Any] | None = None
    for r in summary:
        if "skipped" in r:
            print(f"| {r['label']} | {r['chunks']:,} | skipped: {r['skipped']} |||||||||")
            continue
        n = r["chunks"]
        ratios = " |  | "
        p = prev
        if p is not None:
            ratios = (
                f"{n / p['chunks']:.1f} | {(r['seconds'] / n) / (p['seconds'] / p['chunks']):.2f} "
                f"| {(r['rss'] / n) / (p['rss'] / p['chunks']):.2f}"
            )
        print(
            f"| {r['label']} | {n:,} | {r['tasks']:,} | {r['tasks'] / n:.2f} "
            f"| {r['seconds']:.1f} | {1000 * r['seconds'] / n:.2f} | {fmt_bytes(r['rss'])} "
            f"| {r['rss'] / n / 1024:.1f} | {ratios} |"
        )
        prev = r
    print(
        "\nx columns: ratio to the row measured before (per-chunk time and memory near 1 = "
        "linear in chunks; the graph depends on the chunk count, not the chunk size).\n"
    )
    measured = [r for r in summary if "skipped" not in r]
    if not measured:
        return
    worst = max(measured, key=lambda r: r["tasks"] / r["chunks"])
    ok = worst["tasks"] / worst["chunks"] <= MAX_TASKS_PER_CHUNK
    print(
        f"- tasks per output chunk <= {MAX_TASKS_PER_CHUNK}: {'PASS' if ok else 'FAIL'} "
        f"(worst {worst['tasks'] / worst['chunks']:.2f}, {worst['label']})"
    )
    tib = [r for r in measured if r["nbytes"] == 1024**4]
    for r in tib:
        ok = r["seconds"] < TARGET_1TIB_SECONDS
        print(
            f"- 1 TiB built in < {TARGET_1TIB_SECONDS:g} s: {'PASS' if ok else 'FAIL'} "
            f"({r['seconds']:.1f} s, {r['label']})"
        )
    by_chunks = sorted(measured, key=lambda r: r["chunks"])
    a, b = by_chunks[0], by_chunks[-1]
    if b["chunks"] > a["chunks"]:
        grow = math.log(b["chunks"] / a["chunks"])
        tpow = math.log(b["seconds"] / a["seconds"]) / grow
        mpow = math.log(max(b["rss"], 1) / max(a["rss"], 1)) / grow
        print(
            f"- from {a['chunks']:,} to {b['chunks']:,} output chunks, build time grows as "
            f"chunks^{tpow:.2f}, client memory as chunks^{mpow:.2f} (target <= 1)"
        )


if __name__ == "__main__":
    main()
