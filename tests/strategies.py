"""Hypothesis strategies shared by the tests.

:func:`chunkings` draws chunk boundaries for an array shape, the way chunk-invariance
tests need them: one chunk, regular chunks with a short last chunk (dask's usual
layout), and arbitrary uneven boundaries (flox's ``chunked_arrays`` idea), with chunks
as small as ``min_size``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import overload

from hypothesis import strategies as st

Chunks = tuple[int, ...]


def _regular(n: int, size: int, min_size: int) -> Chunks:
    """``n`` cut in chunks of ``size``, the last one shorter (merged if below ``min_size``)."""
    whole, rest = divmod(n, size)
    out = [size] * whole  # whole >= 1: size <= n
    if rest >= min_size:
        out.append(rest)
    else:
        out[-1] += rest
    return tuple(out)


@st.composite
def _uneven(draw: st.DrawFn, n: int, min_size: int, max_chunks: int) -> Chunks:
    """Arbitrary boundaries: up to ``max_chunks`` chunks, each at least ``min_size`` long."""
    k = draw(st.integers(1, min(max_chunks, n // min_size)))
    # k chunks of >= min_size: place k - 1 cuts in the n - k * min_size spare pixels
    spare = n - k * min_size
    cuts = sorted(draw(st.lists(st.integers(0, spare), min_size=k - 1, max_size=k - 1)))
    edges = [0, *cuts, spare]
    return tuple(b - a + min_size for a, b in zip(edges[:-1], edges[1:], strict=True))


def _axis(n: int, min_size: int, max_chunks: int) -> st.SearchStrategy[Chunks]:
    if n <= min_size:
        return st.just((n,))
    smallest = max(min_size, -(-n // max_chunks))  # no more than max_chunks regular chunks
    return st.one_of(
        st.just((n,)),  # first: Hypothesis shrinks a failure towards a single chunk
        st.integers(smallest, n).map(lambda size: _regular(n, size, min_size)),
        _uneven(n, min_size, max_chunks),
    )


@overload
def chunkings(
    shape: Sequence[int], min_size: int = ..., max_chunks: int = ...
) -> st.SearchStrategy[tuple[Chunks, ...]]: ...
@overload
def chunkings(
    shape: Mapping[Hashable, int], min_size: int = ..., max_chunks: int = ...
) -> st.SearchStrategy[dict[Hashable, Chunks]]: ...
def chunkings(shape, min_size=1, max_chunks=6):  # type: ignore[no-untyped-def]
    """Chunk sizes along every axis of ``shape``, each axis drawn on its own.

    ``shape`` is a sequence of lengths, giving a tuple of per-axis chunk tuples (dask's
    ``chunks=`` form, e.g. ``((3, 4), (7,))`` for shape ``(7, 7)``), or a mapping
    ``{dim: length}``, giving ``{dim: chunk tuple}`` as ``bigimg.from_array(chunks=...)``
    takes it. Per axis it draws one of: a single chunk; a regular size with a shorter
    last chunk; or 1 to ``max_chunks`` chunks with arbitrary boundaries. Every chunk is at
    least ``min_size`` long (an axis no longer than ``min_size`` is one chunk) and the
    sizes sum to the axis length. A failure shrinks towards one chunk per axis.
    """
    if min_size < 1 or max_chunks < 1:
        raise ValueError(f"min_size and max_chunks must be >= 1, got {min_size}, {max_chunks}")
    if isinstance(shape, Mapping):
        return st.fixed_dictionaries(
            {dim: _axis(n, min_size, max_chunks) for dim, n in shape.items()}
        )
    return st.tuples(*(_axis(n, min_size, max_chunks) for n in shape))
