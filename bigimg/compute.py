"""Compute helpers shared by every capability: tree reductions, progress, the BLAS-thread policy.

Nothing here knows about images. :class:`Reduction` and :func:`reduce_blocks`
build every global statistic in bigimg (histogram counts and ranges, the
registration composite, ZCA moments, stretch statistics) as one lazy tree:
a task per chunk, then combine levels of fan-in ``split_every``, then one
finalize. Capability modules call :func:`compute_with_progress` or
``dask.compute`` when they must compute, under
:func:`one_blas_thread_per_task` when their tasks call BLAS. A function that
needs global statistics before it can return its lazy result can be written
as :data:`Passes` (it yields what each pass computes), so that a caller that
knows more, the pipeline, can plan its reads (:func:`run_passes`).
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast, overload

import dask
import dask.array as da
import numpy as np
import numpy.typing as npt
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph
from dask.task_spec import List, Task, TaskRef
from dask.utils import funcname

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "Passes",
    "Reduction",
    "compute_with_progress",
    "one_blas_thread_per_task",
    "reduce_blocks",
    "run_passes",
    "sum_parts",
]


# ---------------------------------------------------------------- passes
Passes = Generator[tuple[Any, ...], tuple[Any, ...], R]
"""A computation that reads its data in passes before returning a lazy result.

The generator validates its arguments before its first ``yield`` (so no
pass starts on bad input), then yields a tuple of lazy dask collections per
pass, is sent back the tuple of their computed values, and returns its result.
:func:`run_passes` runs it alone; the pipeline may instead compute the first
pass together with other work on the same blocks (the write of a scratch array).
"""


def run_passes(passes: Passes[R], first: tuple[Any, ...] | None = None) -> R:
    """Run ``passes`` to its result, computing each pass in one ``dask.compute``.

    ``first``: the values of the first pass when the caller computed them
    already (the first yielded tuple is then not computed).

    Examples
    --------
    >>> import dask.array as da
    >>> def centred(x):
    ...     (mean,) = yield (x.mean(),)
    ...     return x - mean
    >>> run_passes(centred(da.arange(5, chunks=2))).compute().tolist()
    [-2.0, -1.0, 0.0, 1.0, 2.0]
    """
    try:
        todo = next(passes)
        values = first if first is not None else dask.compute(*todo)
        while True:
            values = dask.compute(*passes.send(values))
    except StopIteration as stop:
        return cast(R, stop.value)


# ---------------------------------------------------------------- tree reductions
def _identity(x: Any) -> Any:
    return x


@dataclass(frozen=True)
class Reduction(Generic[T, R]):
    """A global statistic as chunk -> combine -> finalize (flox's ``Aggregation``).

    The three functions are plain numpy (no dask); :func:`reduce_blocks`
    wires them into a graph.

    Attributes
    ----------
    chunk : callable or None
        ``chunk(*blocks) -> T``: the partial result of one block of each
        input array. It must not return a view of its blocks if ``combine``
        writes into its parts. None: the blocks of the one input array are
        the partials (made by ``map_blocks``, say), and no task is added.
    combine : callable
        ``combine(parts) -> T``: merges a list of 2 to ``split_every``
        partials, in block order (C order over the reduced blocks). It may
        reuse its parts (each partial feeds exactly one combine); a part
        received from another worker may be read-only.
    finalize : callable, default identity
        ``finalize(T) -> R``, once per result: the combined partial to the
        statistic.
    with_offset : bool, default False
        Call ``chunk(*blocks, offset=(i0, i1, ...))`` with the index of the
        block's first element along every axis (e.g. to name bad rows in an
        error message).

    Notes
    -----
    The result is independent of the chunking when ``combine`` is
    associative and the partials are exact (counts, minima); floating sums
    agree to rounding.
    """

    chunk: Callable[..., T] | None
    combine: Callable[[list[T]], T]
    finalize: Callable[[T], R] = _identity
    with_offset: bool = False


def sum_parts(parts: list[np.ndarray]) -> np.ndarray:
    """``combine`` of partial sums: ``parts[0] + parts[1] + ...``, added in order.

    The order is numpy's ``sum(axis=0)`` over the stacked parts (so the
    same floating-point result as dask's ``sum`` tree); the first two are
    added into a new array, so no part is written to.
    """
    if len(parts) == 1:
        return parts[0]
    total = parts[0] + parts[1]
    for part in parts[2:]:
        total += part
    return total


@overload
def reduce_blocks(
    arrays: da.Array | Sequence[da.Array],
    reduction: Reduction[Any, Any],
    *,
    axis: None = None,
    split_every: int = 8,
    name: str | None = None,
) -> Delayed: ...
@overload
def reduce_blocks(
    arrays: da.Array | Sequence[da.Array],
    reduction: Reduction[Any, Any],
    *,
    axis: int | Sequence[int],
    dtype: npt.DTypeLike,
    new_axes: Sequence[int] = (),
    split_every: int = 8,
    name: str | None = None,
) -> da.Array: ...
def reduce_blocks(
    arrays: da.Array | Sequence[da.Array],
    reduction: Reduction[Any, Any],
    *,
    axis: int | Sequence[int] | None = None,
    dtype: npt.DTypeLike | None = None,
    new_axes: Sequence[int] = (),
    split_every: int = 8,
    name: str | None = None,
) -> Delayed | da.Array:
    """Lazy tree reduction of the blocks of ``arrays`` (one pass, nothing computed).

    One ``chunk`` task per block, then levels of ``combine`` tasks each
    merging up to ``split_every`` partials (a lone partial passes up
    unchanged), then one ``finalize``: the tree of ``dask.array``'s
    reductions, with any partial type (tuples of moments, count tables).
    An exception raised by ``chunk`` is raised by ``finalize``'s task, after
    the pass: the one of the first failing block in C order, so the error
    does not depend on the scheduler's order.

    Parameters
    ----------
    arrays : dask.array.Array or sequence of them
        The inputs; block ``i`` of each is passed to ``chunk`` together. Along
        each axis of the first array, every other array has its chunks or a
        single chunk, broadcast to every block; further trailing axes are one
        chunk each. E.g. a per-band table shaped ``(1, 1, band, 2)`` next to a
        ``(y, x, band)`` image, chunked like it along ``band``.
    reduction : Reduction
        The ``chunk``, ``combine`` and ``finalize`` functions.
    axis : int or sequence of int, optional
        None (default): every block is reduced into one value, returned as a
        ``Delayed``. Otherwise the axes reduced over: one tree per block of
        the other axes, and a dask array is returned whose blocks are the
        finalized results. Each must be an array of the block's shape with
        the reduced axes of length 1 (``keepdims``), then ``new_axes``.
    dtype : dtype
        The result's dtype (required with ``axis``).
    new_axes : sequence of int, default ()
        Lengths of trailing axes the finalized blocks add (e.g. the bins of
        a histogram), each one chunk.
    split_every : int, default 8
        Fan-in of the combine tree, >= 2: memory holds up to
        ``split_every`` partials per combine task.
    name : str, optional
        Prefix of the graph keys (default: ``chunk``'s name); a token of the
        inputs and the reduction is appended, so equal reductions share keys.

    Returns
    -------
    dask.delayed.Delayed or dask.array.Array
        Lazy. Several results of one kind (all ``Delayed``, or all arrays)
        computed in one ``dask.compute`` read each input chunk once. Do not mix
        the kinds in one call: dask optimizes them apart, so a chunk both read
        is read twice (and dask 2026.8 returns mixed kinds out of order).

    Raises
    ------
    TypeError
        An input is not a dask array.
    ValueError
        No input, inputs whose blocks do not line up, a bad ``axis`` or
        ``split_every``, ``dtype`` missing with ``axis``, unknown chunk sizes
        with ``with_offset=True``; when computed, a finalized block of the wrong
        shape.

    Notes
    -----
    Why not :func:`dask.array.reduction`: it concatenates array partials
    along the reduced axes, runs ``chunk`` on a dummy block unless given a
    ``meta``, and takes one input. Here partials are any value (a tuple of
    moments), ``combine`` gets them as a list, tables ride along as inputs,
    and ``chunk`` can learn where its block is. The tree is dask's (groups of
    ``split_every`` consecutive blocks, level by level), so :func:`sum_parts`
    reproduces dask's ``sum(axis=0, split_every=...)`` bit for bit.

    Examples
    --------
    A NaN-mean of the whole array and its number of NaN, in one pass:

    >>> import dask, dask.array as da, numpy as np
    >>> from bigimg.compute import Reduction, reduce_blocks, sum_parts
    >>> x = da.from_array(np.array([[1.0, np.nan], [3.0, 4.0], [5.0, 6.0]]), chunks=1)
    >>> nanmean = Reduction(
    ...     chunk=lambda b: np.array([np.nansum(b), np.count_nonzero(~np.isnan(b))]),
    ...     combine=sum_parts,
    ...     finalize=lambda total: total[0] / total[1],
    ... )
    >>> nans = Reduction(chunk=lambda b: int(np.isnan(b).sum()), combine=sum)
    >>> dask.compute(reduce_blocks(x, nanmean), reduce_blocks(x, nans))  # two Delayed
    (np.float64(3.8), 1)

    The per-column NaN-maximum, a lazy array with the reduced axis kept as length 1:

    >>> colmax = Reduction(
    ...     chunk=lambda b: b.max(axis=0, keepdims=True),
    ...     combine=lambda parts: np.fmax.reduce(parts),
    ... )
    >>> peak = reduce_blocks(x, colmax, axis=0, dtype=x.dtype)
    >>> peak.chunks, peak.compute()
    (((1,), (1, 1)), array([[5., 6.]]))
    """
    arrs = [arrays] if isinstance(arrays, da.Array) else list(arrays)
    if not arrs:
        raise ValueError("arrays must hold at least one dask array, got none")
    bad = [type(a).__name__ for a in arrs if not isinstance(a, da.Array)]
    if bad:
        raise TypeError(f"arrays must be dask arrays, got {bad}")
    if isinstance(split_every, bool) or not isinstance(split_every, int) or split_every < 2:
        raise ValueError(f"split_every must be an int >= 2, got {split_every!r}")
    first = arrs[0]
    nd = first.ndim
    for a in arrs[1:]:
        aligned = all(a.chunks[i] == first.chunks[i] or a.numblocks[i] == 1 for i in range(nd))
        if a.ndim < nd or not aligned or any(n != 1 for n in a.numblocks[nd:]):
            raise ValueError(
                "arrays must have the first array's chunks, or one chunk, along its axes, and "
                f"one chunk along any further axis; got chunks {first.chunks} and {a.chunks}"
            )
    if axis is None:
        axes = tuple(range(nd))
    else:
        if dtype is None:
            raise ValueError("dtype is required with axis (the result is a dask array)")
        axes = _normalize_axes(axis, nd)
    if reduction.chunk is None and (len(arrs) > 1 or reduction.with_offset):
        raise ValueError("a Reduction with chunk=None takes one array, and with_offset=False")
    if reduction.with_offset and any(math.isnan(c) for cs in first.chunks for c in cs):
        raise ValueError(
            "with_offset=True needs known chunk sizes; call compute_chunk_sizes() first"
        )
    kept = tuple(i for i in range(nd) if i not in axes)
    token = tokenize([a.name for a in arrs], reduction, axes, dtype, tuple(new_axes), split_every)
    chunk_name = funcname(reduction.chunk) if reduction.chunk is not None else ""
    prefix = name or chunk_name.strip("_<>") or "reduce"
    out_name = f"{prefix}-{token}"
    starts = [np.cumsum((0, *c[:-1])).tolist() for c in first.chunks]
    layer: dict[Any, Task] = {}
    for group in np.ndindex(*(first.numblocks[i] for i in kept)):
        where = dict(zip(kept, group, strict=True))
        level = []
        for inner in np.ndindex(*(first.numblocks[i] for i in axes)):
            where.update(zip(axes, inner, strict=True))
            idx = tuple(where[i] for i in range(nd))
            refs = [
                (a.name, *(j if a.numblocks[i] > 1 else 0 for i, j in enumerate(idx)))
                + (0,) * (a.ndim - nd)
                for a in arrs
            ]
            if reduction.chunk is None:
                level.append(refs[0])
                continue
            chunk = reduction.chunk
            if reduction.with_offset:
                chunk = functools.partial(
                    chunk, offset=tuple(starts[i][j] for i, j in enumerate(idx))
                )
            key = (f"{out_name}-chunk", *idx)
            layer[key] = Task(key, _chunk, chunk, *map(TaskRef, refs))
            level.append(key)
        depth = 0
        while len(level) > 1:
            depth += 1
            merged = []
            for j in range(0, len(level), split_every):
                parts = level[j : j + split_every]
                if len(parts) == 1:
                    merged.append(parts[0])
                    continue
                key = (f"{out_name}-combine-{depth}", *group, j // split_every)
                layer[key] = Task(
                    key, _combine, reduction.combine, List(*(TaskRef(k) for k in parts))
                )
                merged.append(key)
            level = merged
        if axis is None:
            layer[out_name] = Task(out_name, _finalized, reduction.finalize, TaskRef(level[0]))
            break
        shape = (*(first.chunks[i][where[i]] if i in kept else 1 for i in range(nd)), *new_axes)
        key = (out_name, *(where[i] if i in kept else 0 for i in range(nd)), *(0,) * len(new_axes))
        layer[key] = Task(key, _finalized, reduction.finalize, TaskRef(level[0]), shape=shape)
    graph = HighLevelGraph.from_collections(out_name, layer, dependencies=cast("list[Any]", arrs))
    if axis is None:
        return Delayed(out_name, graph)
    chunks = (
        *((1,) if i in axes else first.chunks[i] for i in range(nd)),
        *((n,) for n in new_axes),
    )
    meta = np.empty((0,) * len(chunks), dtype=dtype)
    return da.Array(graph, out_name, chunks, meta=meta)


def _normalize_axes(axis: int | Sequence[int], ndim: int) -> tuple[int, ...]:
    raw = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in raw):
        raise ValueError(f"axis must be an int or a sequence of int, got {axis!r}")
    if not all(-ndim <= a < ndim for a in raw):
        raise ValueError(f"axis {axis!r} is out of range for {ndim} dimension(s)")
    axes = tuple(sorted({int(a) % ndim for a in raw}))
    if len(axes) != len(raw):
        raise ValueError(f"axis must not repeat an axis, got {axis!r}")
    return axes


class _Failed:
    """The partial of a block whose ``chunk`` raised: carried up the tree, raised at the end."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _chunk(chunk: Callable[..., Any], *blocks: Any, **kwargs: Any) -> Any:
    """``chunk(*blocks)`` on C-contiguous blocks; an error is returned, raised at the end.

    numpy's sums run in an order that depends on the memory layout, so a
    block read transposed (a band-first store read as ``(y, x, band)``) would
    give other bits than the same values computed in memory (issue 22).
    """
    blocks = tuple(np.ascontiguousarray(b) if isinstance(b, np.ndarray) else b for b in blocks)
    try:
        return chunk(*blocks, **kwargs)
    except Exception as e:  # noqa: BLE001  (raised by _finalized, whatever the scheduler)
        return _Failed(e)


def _combine(combine: Callable[[list[Any]], Any], parts: list[Any]) -> Any:
    failed = [p for p in parts if isinstance(p, _Failed)]
    return failed[0] if failed else combine(parts)


def _finalized(
    finalize: Callable[[Any], Any], part: Any, *, shape: tuple[int, ...] | None = None
) -> Any:
    """``finalize(part)``, checked to be a block of ``shape``; raises the first block's error."""
    if isinstance(part, _Failed):
        raise part.error
    out = finalize(part)
    if shape is not None and np.shape(out) != shape:
        raise ValueError(
            f"{getattr(finalize, '__name__', finalize)!s} returned a block of shape "
            f"{np.shape(out)}, expected {shape} (the block's shape with reduced axes of length 1, "
            "then new_axes)"
        )
    return out


# ---------------------------------------------------------------- computing


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


def active_client() -> Any:
    """The current ``distributed`` client, or None (dask's local schedulers then run)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def compute_with_progress(
    tasks: list[Any], *, progress: bool | None = None, desc: str = "computing"
) -> list[Any]:
    """Compute dask collections together on the active scheduler, with a bar on stderr.

    The collections are computed in one graph, so blocks they share are
    computed once. With a ``distributed`` client the bar advances per task
    result (each block of an array, each delayed object); else dask's
    default scheduler runs with dask's own bar.
    """
    if not tasks:
        return []
    show = sys.stderr.isatty() if progress is None else progress
    client = active_client()
    if client is None:
        if show:
            from dask.diagnostics import ProgressBar

            with ProgressBar(out=sys.stderr):
                return list(dask.compute(*tasks))
        return list(dask.compute(*tasks))
    from distributed import as_completed, futures_of
    from tqdm import tqdm

    persisted = client.persist(tasks)
    futures = futures_of(persisted)
    try:
        with tqdm(total=len(futures), desc=desc, file=sys.stderr, disable=not show) as bar:
            for fut in as_completed(futures):
                fut.result()  # raise the first failure
                bar.update(1)
        return list(dask.compute(*persisted))
    finally:
        client.cancel(futures)
