"""Start-up of the `bigimg` command, cold, against its targets (issue 25).

    python benchmarks/startup.py             # 9 runs of each command
    python benchmarks/startup.py --repeat 25

Each command runs in a fresh interpreter (a subprocess, as a user types it),
``--repeat`` times in turn after one warm-up round (the OS file cache warm, as
on a machine in use); the figure is the median wall time. Commands:

* ``bigimg --help`` (target 0.3 s);
* a refused bad argument, ``bigimg noise out.zarr --shape 0x5 --length-scale 1``
  and ``bigimg info missing.zarr`` (target 0.5 s);
* ``bigimg info`` on a small local store (target 1.0 s).

Anchors from the same run: ``python -c pass`` (the interpreter alone) and
``python -c "import xarray, dask.array, zarr"`` (what every command paid
before imports were made lazy). Each line prints the median, the ratio to its
target and the ratio to the import anchor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bigimg() -> list[str]:
    exe = Path(sys.executable).parent / "bigimg"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "bigimg"]


def _time(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="Cold runs per command.")
    args = parser.parse_args()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bigimg-startup-"))
    try:
        store = tmp / "small.zarr"
        subprocess.run(
            [
                *_bigimg(),
                "noise",
                str(store),
                "--shape",
                "256x256",
                "--length-scale",
                "4",
                "--quiet",
            ],
            check=True,
            env=env,
            capture_output=True,
        )
        big = _bigimg()
        cases = {
            "python -c pass": ([sys.executable, "-c", "pass"], None),
            "import xarray, dask.array, zarr": (
                [sys.executable, "-c", "import xarray, dask.array, zarr"],
                None,
            ),
            "bigimg --help": ([*big, "--help"], 0.3),
            "bigimg noise --shape 0x5 (refused)": (
                [*big, "noise", str(tmp / "o.zarr"), "--shape", "0x5", "--length-scale", "1"],
                0.5,
            ),
            "bigimg info missing.zarr (refused)": ([*big, "info", str(tmp / "missing.zarr")], 0.5),
            "bigimg info small.zarr": ([*big, "info", str(store)], 1.0),
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for cmd, _ in cases.values():  # warm-up round
            _time(cmd, env)
        for _ in range(args.repeat):
            for name, (cmd, _) in cases.items():  # in turn, so load hits them alike
                times[name].append(_time(cmd, env))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    anchor = statistics.median(times["import xarray, dask.array, zarr"])
    print(f"cold start, median of {args.repeat} runs ({os.cpu_count()} cores)")
    print(f"{'command':<40} {'median s':>9} {'target s':>9} {'/target':>8} {'/imports':>9}")
    for name, (_, target) in cases.items():
        med = statistics.median(times[name])
        tgt = f"{target:9.2f} {med / target:8.2f}" if target else f"{'':>9} {'':>8}"
        print(f"{name:<40} {med:9.3f} {tgt} {med / anchor:9.2f}")


if __name__ == "__main__":
    main()
