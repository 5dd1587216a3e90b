"""Chunked reads: a stored array read in other chunks without splitting store chunks."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping
from typing import Any, cast

import dask.array as da
import xarray as xr


def read_in_chunks(
    stored: xr.DataArray,
    target: Mapping[Hashable, Any],
    read: Callable[[tuple[tuple[int, ...], ...]], da.Array],
) -> xr.DataArray:
    """``stored`` (a store's data, lazy, in the store's chunks) in ``target`` chunks.

    When every target chunk is made of whole store chunks, ``read(chunks)``
    re-reads the store in those chunks: each task reads its region in one go
    rather than reading store chunks and concatenating them (a copy and a
    task fewer per chunk: a ZCA fit from Zarr in 5,000-sample chunks of a store
    chunked by 1,000 took 7.2 s instead of 7.4 s, alternating runs).
    Otherwise, as when a target chunk would split a store chunk (which would
    then be decoded more than once), the store's chunks are rechunked.
    """
    spec = tuple(target[d] for d in stored.dims)
    stored_chunks = cast("tuple[tuple[int, ...], ...]", stored.chunks)  # dask-backed
    steps = tuple(c[0] if c else 1 for c in stored_chunks)
    chunks = da.core.normalize_chunks(spec, stored.shape, dtype=stored.dtype, previous_chunks=steps)
    if chunks == stored.chunks:
        return stored
    whole = all(
        edge % step == 0
        for sizes, step in zip(chunks, steps, strict=True)
        for edge in itertools.accumulate(sizes[:-1])
    )
    return stored.copy(data=read(chunks)) if whole else stored.chunk(dict(target))
