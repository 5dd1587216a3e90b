"""Benchmark bi.register + bi.shift_and_add against an in-memory skimage/scipy loop (issue 6).

    python benchmarks/bench_register.py                 # 200 frames of 600², memory at 200 and 2000
    python benchmarks/bench_register.py --quick         # 24 frames of 200², memory at 24 and 96
    python benchmarks/bench_register.py --memory-frames 0   # timing only

The stack is a smooth random scene cropped at random sub-pixel offsets
(Fourier shift) plus noise, float32, written chunk by chunk to a bare Zarr
array in ``--workdir`` (8 frames per chunk) and opened lazily with
``bi.open_image``. Measured in the same run, alternating, median of
``--repeat`` rounds after a warm-up:

* bigimg: ``bi.register(stack)`` (default reference: the NaN-mean composite,
  one out-of-core pass) then ``bi.shift_and_add(stack, shifts).compute()``
  (bilinear), dask's threaded scheduler with ``--threads``; the stack read
  from Zarr (three passes: reference, register, stack), and the in-memory
  frames wrapped by ``bi.from_array``;
* the anchor: the frames already in memory, ``ref = frames.mean(0)``, then a
  plain loop of ``skimage.registration.phase_cross_correlation(ref, frame,
  upsample_factor=100)`` and ``scipy.ndimage.shift(frame, shift, order=1)``
  accumulated into the composite (bilinear, like ours); run with OpenBLAS's
  default threads and with one BLAS thread; ratios are against the faster.

Memory: bigimg's run in a fresh subprocess per stack length; the peak RSS of
that process above its baseline (sampled every 20 ms with psutil) must not
grow with the number of frames.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from _common import PeakRSS
from scipy import fft, ndimage
from skimage.registration import phase_cross_correlation
from threadpoolctl import threadpool_limits

import bigimg as bi

CHUNK = 8


def _frames_block(block: np.ndarray, block_info=None, *, size: int, scene: np.ndarray):
    """Frames [i0, i1): the scene cropped at a random sub-pixel offset, plus noise."""
    i0, i1 = block_info[None]["array-location"][0]
    out = np.empty((i1 - i0, size, size, 1), np.float32)
    for k, i in enumerate(range(i0, i1)):
        rng = np.random.default_rng([7, i])
        dy, dx = rng.uniform(-3, 3, size=2)
        iy, ix = int(np.floor(dy)), int(np.floor(dx))
        crop = scene[8 + iy : 8 + iy + size + 1, 8 + ix : 8 + ix + size + 1]
        shifted = ndimage.fourier_shift(fft.fft2(crop), (dy - iy, dx - ix))
        frame = fft.ifft2(shifted).real[:size, :size]
        out[k, ..., 0] = frame + rng.normal(scale=0.05, size=frame.shape)
    return out


def make_stack(path: Path, n: int, size: int) -> Path:
    """Write an (n, size, size, 1) float32 stack to a bare Zarr array, chunk by chunk."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    scene = ndimage.gaussian_filter(rng.normal(size=(size + 17, size + 17)), 2.0)
    scene = (scene / scene.std()).astype(np.float32)
    template = da.empty((n, size, size, 1), chunks=(CHUNK, size, size, 1), dtype=np.float32)
    frames = template.map_blocks(
        _frames_block, size=size, scene=scene, dtype=np.float32, meta=np.empty((0,) * 4, np.float32)
    )
    frames.to_zarr(str(path))
    return path


def run_bigimg(path: Path | np.ndarray) -> np.ndarray:
    if isinstance(path, np.ndarray):  # frames already in memory, as the loop has them
        stack = bi.from_array(path[..., None], chunks={"image": CHUNK})
    else:
        stack = bi.open_image(path, chunks={"image": CHUNK})
    shifts = bi.register(stack, upsample_factor=100)
    out = bi.shift_and_add(stack, shifts).compute()
    return out["composite"].values


def run_loop(frames: np.ndarray, blas: int | None = None) -> np.ndarray:
    with threadpool_limits(limits=blas, user_api="blas"):
        ref = frames.mean(axis=0)
        acc = np.zeros(frames.shape[1:], np.float64)
        for frame in frames:
            shift, _, _ = phase_cross_correlation(ref, frame, upsample_factor=100)
            acc += ndimage.shift(frame, shift, order=1)
    return acc / len(frames)


def memory_run(path: Path, threads: int) -> None:
    """Child process: run bigimg on ``path`` and print its peak RSS above baseline."""
    with dask.config.set(scheduler="threads", num_workers=threads), PeakRSS() as peak:
        t0 = time.perf_counter()
        run_bigimg(path)
        seconds = time.perf_counter() - t0
    print(json.dumps({"peak": peak.growth, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--frames", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--memory-frames", type=int, default=None, help="0 = skip")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "bigimg_bench"
    )
    parser.add_argument("--keep", action="store_true", help="keep the Zarr stacks")
    parser.add_argument("--memory-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_run is not None:
        return memory_run(args.memory_run, args.threads)

    n = args.frames or (24 if args.quick else 200)
    size = args.size or (200 if args.quick else 600)
    big_n = args.memory_frames if args.memory_frames is not None else (96 if args.quick else 2000)
    args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        with dask.config.set(scheduler="threads", num_workers=args.threads):
            t0 = time.perf_counter()
            path = make_stack(work / f"stack_{n}x{size}.zarr", n, size)
            print(
                f"wrote {n} x {size}² float32 frames in {time.perf_counter() - t0:.1f} s",
                flush=True,
            )
            frames = np.asarray(da.from_zarr(str(path)))[..., 0]
            ours_out = run_bigimg(path)  # warm-up (and the composites compared below)
            loop_out = run_loop(frames[: min(n, 16)])
            runs: dict[str, Callable[[], object]] = {
                "bigimg register + shift_and_add (Zarr)": lambda: run_bigimg(path),
                "bigimg register + shift_and_add (memory)": lambda: run_bigimg(frames),
                "loop pcc + ndimage.shift, default BLAS": lambda: run_loop(frames),
                "loop pcc + ndimage.shift, 1 BLAS thread": lambda: run_loop(frames, blas=1),
            }
            times: dict[str, list[float]] = {k: [] for k in runs}
            cpu: dict[str, list[float]] = {k: [] for k in runs}
            for _ in range(args.repeat):
                for name, run in runs.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    out = run()
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
                    if name.startswith("loop"):
                        loop_out = out
        inner = (slice(8, -8), slice(8, -8))
        diff = np.sqrt(np.mean((ours_out[..., 0][inner] - loop_out[inner]) ** 2))
        med = {k: statistics.median(v) for k, v in times.items()}
        best_loop = min(v for k, v in med.items() if k.startswith("loop"))
        print(
            f"\n{n} frames of {size}x{size} float32, {args.threads} threads, median of {args.repeat}"
        )
        print(f"{'tool':<44}{'s':>8}{'frames/s':>10}{'x best loop':>12}{'CPU s':>8}{'cores':>7}")
        for name, sec in med.items():
            c = statistics.median(cpu[name])
            print(
                f"{name:<44}{sec:>8.2f}{n / sec:>10.1f}{best_loop / sec:>12.2f}{c:>8.2f}{c / sec:>7.2f}"
            )
        print("(CPU s: process CPU time; cores = CPU s / s, the parallelism the run obtained)")
        print(f"composites (bigimg vs loop) rms difference {diff:.4f} (scene std 1)")

        if big_n:
            rows = []
            for frames_n in sorted({n, big_n}):
                p = make_stack(work / f"stack_{frames_n}x{size}.zarr", frames_n, size)
                cmd = [
                    sys.executable,
                    __file__,
                    "--memory-run",
                    str(p),
                    "--threads",
                    str(args.threads),
                ]
                res = json.loads(
                    subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                )
                rows.append((frames_n, res["peak"] / 2**20, res["seconds"]))
            print(f"\n{'frames':>8}{'stack GiB':>11}{'peak RSS MiB':>14}{'s':>8}{'frames/s':>10}")
            for frames_n, peak, sec in rows:
                gib = frames_n * size * size * 4 / 2**30
                print(f"{frames_n:>8}{gib:>11.2f}{peak:>14.0f}{sec:>8.1f}{frames_n / sec:>10.1f}")
            print(
                f"peak memory ratio {rows[-1][0]} vs {rows[0][0]} frames: {rows[-1][1] / rows[0][1]:.2f}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
