"""Helpers shared by the benchmark scripts (imported as ``from _common import ...``).

The scripts run as ``python benchmarks/<script>.py``, so this directory is on
``sys.path``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psutil
import xarray as xr


class PeakRSS:
    """Peak RSS of a process tree, sampled every ``interval`` seconds in a thread.

    The tree is the process ``pid`` (default: this process) and all its
    descendants. One sample is taken on entering (``base``), then one every
    ``interval`` seconds, and a last one on exiting. After the block:

    * ``peak``: ``{pid: highest RSS in bytes}`` of each process seen;
    * ``total_peak``: highest RSS summed over the tree in one sample (bytes);
    * ``self_peak``: highest RSS of the root process alone (bytes);
    * ``base``: RSS summed over the tree on entering (bytes);
    * ``growth``: ``total_peak - base`` (bytes, >= 0).

    Processes that exit between two samples are skipped, not an error.
    """

    def __init__(self, interval: float = 0.02, pid: int | None = None) -> None:
        self.interval = interval
        self.proc = psutil.Process(pid)
        self.peak: dict[int, int] = {}
        self.total_peak = 0
        self.base = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        """Take one sample: update the peaks, return the RSS summed over the tree."""
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:  # the root process has exited
            procs = []
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            self.peak[p.pid] = max(self.peak.get(p.pid, 0), rss)
        self.total_peak = max(self.total_peak, total)
        return total

    @property
    def self_peak(self) -> int:
        return self.peak.get(self.proc.pid, 0)

    @property
    def growth(self) -> int:
        return self.total_peak - self.base

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> PeakRSS:
        self.base = self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def zarr_encoding() -> dict:
    from zarr.codecs import BloscCodec, Crc32cCodec

    return {"compressors": [BloscCodec(cname="zstd", clevel=3), Crc32cCodec()]}


def copy_floor(src: Path, out: Path) -> None:
    """The floor of a Zarr-to-Zarr run, plain xarray: read the store, write it again with the same codec and chunks."""
    ds = xr.open_zarr(src, consolidated=False)[["image"]]
    for v in ds.variables.values():
        v.encoding = {}
    ds.to_zarr(
        out, mode="w", zarr_format=3, consolidated=False, encoding={"image": zarr_encoding()}
    )
