"""bigimg.compute.reduce_blocks: the chunk -> combine -> finalize tree against numpy."""

from __future__ import annotations

import collections
import threading

import dask
import dask.array as da
import numpy as np
import pytest
from dask.delayed import Delayed
from hypothesis import given, settings
from hypothesis import strategies as st

from bigimg.compute import Reduction, reduce_blocks, sum_parts
from tests.helpers import raise_if_dask_computes
from tests.strategies import chunkings


class Calls:
    """Thread-safe call counter, by name."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1


def _total(block: np.ndarray) -> np.ndarray:
    return np.array([block.sum(), block.size])


def _col_minmax(block: np.ndarray) -> np.ndarray:
    """Per column ``[min, max]`` over axis 0, keepdims, then a trailing axis of 2."""
    if block.shape[0] == 0:  # the identity of the combine
        info = np.iinfo(block.dtype)
        return np.broadcast_to([info.max, info.min], (1, block.shape[1], 2)).copy()
    return np.stack([block.min(axis=0, keepdims=True), block.max(axis=0, keepdims=True)], -1)


def _merge_minmax(parts: list[np.ndarray]) -> np.ndarray:
    return np.stack(
        [
            np.minimum.reduce([p[..., 0] for p in parts]),
            np.maximum.reduce([p[..., 1] for p in parts]),
        ],
        axis=-1,
    )


TOTAL = Reduction(chunk=_total, combine=sum_parts)
MINMAX = Reduction(chunk=_col_minmax, combine=_merge_minmax)
ORDER = Reduction(  # the values in the order combine sees them: block order, C order
    chunk=lambda b: list(b.ravel()), combine=lambda parts: sum(parts, []), finalize=np.array
)


# ---------------------------------------------------------------- against numpy
@st.composite
def _arrays(draw: st.DrawFn) -> tuple[np.ndarray, tuple[tuple[int, ...], ...]]:
    shape = draw(st.tuples(st.integers(1, 24), st.integers(1, 9)))
    chunks = draw(chunkings(shape, max_chunks=12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if draw(st.booleans()):
        return rng.integers(-1000, 1000, shape), chunks
    return rng.normal(0, 1e3, shape), chunks


@settings(deadline=None)
@given(data=_arrays(), split_every=st.integers(2, 9))
def test_reductions_match_numpy_on_any_chunking(data, split_every):
    x, chunks = data
    arr = da.from_array(x, chunks=chunks)
    total = reduce_blocks(arr, TOTAL, split_every=split_every)
    minmax = reduce_blocks(
        arr, MINMAX, axis=0, dtype=x.dtype, new_axes=(2,), split_every=split_every
    )
    rows = reduce_blocks(arr, ORDER, split_every=split_every)
    with dask.config.set(scheduler="sync"):
        got_total, got_rows = dask.compute(total, rows)
        got_minmax = minmax.compute()
    if x.dtype.kind == "i":
        np.testing.assert_array_equal(got_total, [x.sum(), x.size])
    else:  # floating sums in another order: equal to rounding
        np.testing.assert_allclose(got_total, [x.sum(), x.size], rtol=1e-12, atol=1e-9)
    assert minmax.chunks == ((1,), arr.chunks[1], (2,))
    np.testing.assert_array_equal(got_minmax[0, :, 0], x.min(axis=0))
    np.testing.assert_array_equal(got_minmax[0, :, 1], x.max(axis=0))
    # blocks in C order: row blocks outer, column blocks inner
    expected = [
        x[r0:r1, c0:c1].ravel() for r0, r1 in _edges(chunks[0]) for c0, c1 in _edges(chunks[1])
    ]
    np.testing.assert_array_equal(got_rows, np.concatenate(expected))


def _edges(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    b = np.cumsum((0, *chunks))
    return list(zip(b[:-1].tolist(), b[1:].tolist(), strict=True))


def test_one_chunk_never_combines():
    calls = Calls()

    def combine(parts):
        calls("combine")
        return sum_parts(parts)

    def finalize(part):
        calls("finalize")
        return part

    arr = da.from_array(np.arange(12).reshape(3, 4), chunks=-1)
    out = reduce_blocks(arr, Reduction(_total, combine, finalize))
    assert isinstance(out, Delayed)
    np.testing.assert_array_equal(out.compute(scheduler="sync"), [66, 12])
    assert calls.counts == {"finalize": 1}


@pytest.mark.parametrize("split_every", [2, 3, 8])
def test_many_chunks_make_a_tree_of_fan_in_split_every(split_every):
    n = split_every**2 * 3 + 1  # more than split_every² chunks: three levels or more
    seen: list[int] = []
    lock = threading.Lock()

    def combine(parts):
        with lock:
            seen.append(len(parts))
        return sum(parts, [])

    x = np.arange(n * 2)
    arr = da.from_array(x, chunks=2)
    out = reduce_blocks(
        arr, Reduction(lambda b: list(b), combine, np.array), split_every=split_every
    )
    np.testing.assert_array_equal(out.compute(scheduler="threads"), x)
    assert max(seen) <= split_every and min(seen) >= 2
    assert seen.count(split_every) >= split_every  # two full levels at least
    assert sum(k - 1 for k in seen) == n - 1  # every partial merged exactly once


def test_kept_axes_get_a_tree_each_and_floats_add_in_block_order():
    x = np.random.default_rng(1).normal(size=(70, 5, 3))
    arr = da.from_array(x, chunks=(1, 2, 3))
    sums = reduce_blocks(arr, Reduction(None, sum_parts), axis=0, dtype=x.dtype, split_every=4)
    assert sums.chunks == ((1,), (2, 2, 1), (3,))
    got = sums.compute(scheduler="sync")[0]
    # the additions of numpy's sum over axis 0 of each group of 4, then of 4 of those, ...
    level = list(x)
    while len(level) > 1:
        level = [np.sum(level[i : i + 4], axis=0) for i in range(0, len(level), 4)]
    np.testing.assert_array_equal(got, level[0])
    np.testing.assert_allclose(got, x.sum(axis=0), rtol=1e-12)


# ---------------------------------------------------------------- empty edge cases
def test_zero_size_array_is_one_empty_chunk():
    arr = da.from_array(np.empty((0, 4), dtype=np.int64), chunks=-1)
    np.testing.assert_array_equal(reduce_blocks(arr, TOTAL).compute(), [0, 0])
    minmax = reduce_blocks(arr, MINMAX, axis=0, dtype=np.int64, new_axes=(2,)).compute()
    info = np.iinfo(np.int64)
    np.testing.assert_array_equal(minmax[0], [[info.max, info.min]] * 4)


def test_empty_chunks_among_others_are_identities():
    x = np.arange(20).reshape(5, 4)
    arr = da.from_array(x, chunks=((2, 0, 3, 0), (4,)))
    assert arr.numblocks == (4, 1)
    np.testing.assert_array_equal(reduce_blocks(arr, TOTAL).compute(), [x.sum(), 20])
    got = reduce_blocks(arr, MINMAX, axis=0, dtype=x.dtype, new_axes=(2,)).compute()
    np.testing.assert_array_equal(got[0], np.stack([x.min(axis=0), x.max(axis=0)], -1))


def test_sum_parts_leaves_its_parts_alone():
    parts = [np.ones(3), np.full(3, 2.0), np.full(3, 3.0)]
    np.testing.assert_array_equal(sum_parts(parts), [6.0, 6.0, 6.0])
    np.testing.assert_array_equal(parts[0], 1.0)
    assert sum_parts(parts[:1]) is parts[0]


def test_chunk_none_takes_blocks_as_partials_without_writing_to_them():
    x = np.ones((6, 2))
    arr = da.from_array(x, chunks=(1, 2))
    out = reduce_blocks(arr, Reduction(None, sum_parts), axis=0, dtype=x.dtype)
    np.testing.assert_array_equal(out.compute(), [[6.0, 6.0]])
    np.testing.assert_array_equal(x, 1.0)  # no block written to


# ---------------------------------------------------------------- one pass
@pytest.mark.parametrize("kinds", ["delayed", "array"])
def test_reductions_computed_together_read_each_chunk_once(kinds):
    calls = Calls()

    def read(block):
        calls("read")
        return block.astype(np.int64)

    def counted(name, fn):
        def chunk(block):
            calls(name)
            return fn(block)

        return chunk

    x = np.arange(60).reshape(12, 5)
    source = da.from_array(x, chunks=(3, 2)).map_blocks(
        read, dtype=np.int64, meta=np.empty((0, 0), np.int64)
    )
    total = Reduction(counted("total", lambda b: b.sum(axis=0, keepdims=True)), sum_parts)
    minmax = Reduction(counted("minmax", _col_minmax), _merge_minmax)
    if kinds == "delayed":
        flat_total = Reduction(counted("total", _total), sum_parts)
        flat_max = Reduction(counted("minmax", lambda b: b.max()), np.max)
        outs = (reduce_blocks(source, flat_total), reduce_blocks(source, flat_max))
        expected = ([x.sum(), x.size], x.max())
    else:
        outs = (
            reduce_blocks(source, total, axis=0, dtype=np.int64),
            reduce_blocks(source, minmax, axis=0, dtype=np.int64, new_axes=(2,)),
        )
        expected = (x.sum(axis=0, keepdims=True), np.stack([x.min(0), x.max(0)], -1)[None])
    with raise_if_dask_computes(max_computes=1):
        got = dask.compute(*outs)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)
    n = source.npartitions
    assert calls.counts == {"read": n, "total": n, "minmax": n}


def test_building_is_lazy():
    arr = da.from_array(np.arange(10), chunks=3)
    with raise_if_dask_computes():
        reduce_blocks(arr, TOTAL)
        reduce_blocks(arr, MINMAX, axis=0, dtype=arr.dtype, new_axes=(2,))


def test_equal_reductions_share_keys_and_names_prefix():
    arr = da.from_array(np.arange(10), chunks=3)
    a, b = reduce_blocks(arr, TOTAL, name="total"), reduce_blocks(arr, TOTAL, name="total")
    assert a.key == b.key and str(a.key).startswith("total-")
    assert reduce_blocks(arr, TOTAL, split_every=3).key != reduce_blocks(arr, TOTAL).key


# ---------------------------------------------------------------- inputs and offsets
def test_offsets_are_the_blocks_first_indices():
    arr = da.zeros((7, 5), chunks=((3, 4), (2, 2, 1)))
    out = reduce_blocks(
        arr,
        Reduction(chunk=lambda b, offset: [offset], combine=lambda p: sum(p, []), with_offset=True),
    )
    assert out.compute() == [(0, 0), (0, 2), (0, 4), (3, 0), (3, 2), (3, 4)]


def test_tables_broadcast_to_every_block_of_their_kept_index():
    x = np.arange(4 * 6 * 3).reshape(4, 6, 3)  # (y, x, band)
    scale = np.array([1, 10, 100]).reshape(1, 1, 3, 1) * np.array([1, -1])  # per band: (s, -s)
    arr = da.from_array(x, chunks=(2, 3, 2))
    table = da.from_array(scale, chunks=((1,), (1,), (2, 1), (2,)))

    def chunk(block, t):
        return (block.sum(axis=(0, 1), keepdims=True)[..., None] * t).astype(np.int64)

    out = reduce_blocks(
        [arr, table], Reduction(chunk, sum_parts), axis=(0, 1), dtype=np.int64, new_axes=(2,)
    )
    assert out.chunks == ((1,), (1,), (2, 1), (2,))
    np.testing.assert_array_equal(
        out.compute(), x.sum(axis=(0, 1), keepdims=True)[..., None] * scale
    )


# ---------------------------------------------------------------- errors
def test_the_first_failing_block_raises_whatever_the_order():
    def chunk(block, offset):
        if block[0] in (20, 50):
            raise ValueError(f"bad block at {offset[0]}")
        return block.sum()

    arr = da.from_array(np.arange(60), chunks=10)
    out = reduce_blocks(arr, Reduction(chunk, sum, with_offset=True), split_every=2)
    for scheduler in ("sync", "threads"):
        with pytest.raises(ValueError, match="bad block at 20$"):
            out.compute(scheduler=scheduler)


def test_a_finalized_block_of_the_wrong_shape_is_an_error():
    arr = da.from_array(np.arange(6).reshape(2, 3), chunks=1)
    out = reduce_blocks(arr, Reduction(lambda b: b.sum(), sum), axis=0, dtype=np.int64)
    with pytest.raises(ValueError, match=r"block of shape \(\), expected \(1, 1\)"):
        out.compute(scheduler="sync")


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ([], {}, ValueError, "at least one dask array"),
        ([np.arange(3)], {}, TypeError, r"dask arrays, got \['ndarray'\]"),
        ([da.ones(4, chunks=2), da.ones(4, chunks=(1, 3))], {}, ValueError, "first array's chunks"),
        ([da.ones(4, chunks=2), da.ones((4, 2), chunks=(2, 1))], {}, ValueError, "one chunk along"),
        ([da.ones(4, chunks=2)], {"split_every": 1}, ValueError, "split_every must be an int >= 2"),
        ([da.ones(4, chunks=2)], {"axis": 0}, ValueError, "dtype is required"),
        ([da.ones(4, chunks=2)], {"axis": 1, "dtype": float}, ValueError, "out of range"),
        ([da.ones(4, chunks=2)], {"axis": (0, -1), "dtype": float}, ValueError, "repeat"),
    ],
)
def test_bad_inputs_are_refused_before_any_graph(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        reduce_blocks(args, TOTAL, **kwargs)


def test_chunk_none_takes_one_array():
    with pytest.raises(ValueError, match="chunk=None takes one array"):
        reduce_blocks([da.ones(4, chunks=2)] * 2, Reduction(None, sum_parts))


def test_a_transposed_block_sums_to_the_same_bits():
    """Issue 22: a band-first store is read as ``(y, x, band)``, its blocks transposed views.

    numpy sums a view in another order than a C-ordered copy of it; the chunk
    function gets C-contiguous blocks, so the bits never depend on the reader.
    """
    data = np.random.default_rng(3).normal(size=(64, 48, 2))
    band_first = np.ascontiguousarray(data.transpose(2, 0, 1))
    assert not np.array_equal(data.sum(axis=(0, 1)), band_first.transpose(1, 2, 0).sum(axis=(0, 1)))
    total = Reduction(chunk=lambda b: b.sum(axis=(0, 1), keepdims=True), combine=sum_parts)
    plain = da.from_array(data, chunks=32)
    read = da.from_array(band_first, chunks=(2, 32, 32)).transpose(1, 2, 0)  # views
    a = reduce_blocks(plain, total, axis=(0, 1), dtype=np.float64)
    b = reduce_blocks(read, total, axis=(0, 1), dtype=np.float64)
    np.testing.assert_array_equal(a.compute(), b.compute())
