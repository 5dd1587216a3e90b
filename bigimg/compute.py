"""Compute helpers shared by every capability: progress, the BLAS-thread policy.

Nothing here knows about images; capability modules call these when they
must compute (global statistics, registration, model fits) rather than
return a lazy result.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import dask


@contextlib.contextmanager
def one_blas_thread_per_task() -> Iterator[None]:
    """One BLAS thread per dask thread while the local threaded scheduler runs.

    The parallelism is over chunks; dask's threads each calling a
    multi-threaded BLAS oversubscribe the cores (8x slower on a busy 2-core
    machine). Distributed workers already run with one BLAS thread each, and
    the synchronous scheduler keeps all of them.
    """
    from threadpoolctl import threadpool_limits

    if dask.base.get_scheduler() is dask.local.get_sync:
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def compute_with_progress(
    tasks: list[Any], *, progress: bool | None = None, desc: str = "computing"
) -> list[Any]:
    """Compute dask objects on the active scheduler, with a bar on stderr.

    Uses the current ``distributed`` client when there is one (futures, so the
    bar advances per task), else dask's default scheduler.
    """
    if not tasks:
        return []
    show = sys.stderr.isatty() if progress is None else progress
    try:
        from distributed import get_client

        client = get_client()
    except (ImportError, ValueError):
        client = None
    if client is None:
        if show:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                return list(dask.compute(*tasks))
        return list(dask.compute(*tasks))
    from distributed import as_completed
    from tqdm import tqdm

    futures = client.compute(tasks)
    try:
        with tqdm(total=len(futures), desc=desc, file=sys.stderr, disable=not show) as bar:
            for fut in as_completed(futures):
                fut.result()  # raise the first failure
                bar.update(1)
        return [f.result() for f in futures]
    finally:
        client.cancel(futures)
