"""Gaussian filtering, per dim, NaN-aware and seamless across chunks.

Three layers:

* kernels (``_source_index``, ``_gaussian_block`` and helpers): plain numpy on
  one *haloed* block, i.e. a block already extended by the kernel radius on
  each filtered axis. They return the "valid" part, so the result does not
  depend on how the block was cut;
* the chunked builder (``_gaussian_filter_dask``): one task per output block
  that assembles its haloed block from the input block and small halo slices
  of its neighbours, the image edges being filled exactly as scipy's ``mode``
  extends the array (reflect, mirror, nearest, wrap, constant, ...);
* the public function :func:`gaussian_filter` (xarray in, xarray out).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Hashable, Mapping, Sequence
from itertools import product
from typing import Any, Literal

import dask.array as da
import numpy as np
import scipy.fft
import scipy.ndimage
import xarray as xr
from dask._task_spec import Alias, GraphNode, Task, TaskRef
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from bigimg.image import check_image, float_dtype, like, per_dim
from bigimg.pipeline import Params, register_op

MODES = (
    "reflect",
    "grid-mirror",
    "constant",
    "grid-constant",
    "nearest",
    "mirror",
    "wrap",
    "grid-wrap",
)
NAN_POLICIES = ("omit", "propagate")
Mode = Literal[
    "reflect", "grid-mirror", "constant", "grid-constant", "nearest", "mirror", "wrap", "grid-wrap"
]

# Kernel radius above which a block is convolved by FFT (cost per pixel
# independent of the radius) instead of directly. Measured on one core with a
# 2048^2 x 3 float32 block: OpenCV's direct float32 filter and a float32 FFT
# break even near radius 48 (sigma 12 at truncate 4); scipy's float64 direct
# filter and a float64 FFT near radius 20.
FFT_RADIUS = {np.dtype("float32"): 48, np.dtype("float64"): 24}
# Valid pixels whose normalized-convolution weight is below this are
# recomputed in float64 when the block went through a float32 FFT.
_MIN_WEIGHT_FP32_FFT = 0.05
_CV2_MAX_CHANNELS = 512


# ---------------------------------------------------------------- kernels
def _radius(sigma: float, truncate: float) -> int:
    """scipy's kernel radius for one axis (0 when the axis is not filtered)."""
    if sigma <= 1e-15:  # scipy skips these axes
        return 0
    return int(truncate * sigma + 0.5)


def _weights(sigma: float, radius: int) -> np.ndarray:
    """scipy.ndimage's Gaussian weights (float64), as ``gaussian_filter1d`` builds them."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def _source_index(index: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map global indices (possibly outside ``[0, n)``) to source indices.

    This is how scipy.ndimage extends an axis of length ``n`` for each
    ``mode``, however far outside the array the index lies. ``-1`` marks a
    constant (``cval``) sample.

    >>> _source_index(np.arange(-3, 5), 3, "reflect").tolist()
    [2, 1, 0, 0, 1, 2, 2, 1]
    >>> _source_index(np.arange(-3, 5), 3, "mirror").tolist()
    [1, 2, 1, 0, 1, 2, 1, 0]
    """
    index = np.asarray(index)
    if mode in ("reflect", "grid-mirror"):
        j = np.mod(index, 2 * n)
        return np.where(j >= n, 2 * n - 1 - j, j)
    if mode == "mirror":
        if n == 1:
            return np.zeros_like(index)
        j = np.mod(index, 2 * n - 2)
        return np.where(j >= n, 2 * n - 2 - j, j)
    if mode == "nearest":
        return np.clip(index, 0, n - 1)
    if mode in ("wrap", "grid-wrap"):
        return np.mod(index, n)
    return np.where((index < 0) | (index >= n), -1, index)  # constant, grid-constant


def _correlate_valid_axis(a: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """Direct 1-D correlation along ``axis``, keeping the valid part only."""
    r = (len(w) - 1) // 2
    out = scipy.ndimage.correlate1d(a, w, axis=axis, mode="constant")
    return out[
        tuple(slice(r, a.shape[axis] - r) if i == axis else slice(None) for i in range(a.ndim))
    ]


def _direct_valid(
    a: np.ndarray, weights: Sequence[np.ndarray | None], yx: tuple[int, int] | None
) -> np.ndarray:
    """Separable direct correlation of a haloed block (valid part).

    The ``y``/``x`` pair goes through OpenCV's float32/float64 separable
    filter (the image edges never matter: the block carries its halo and the
    border samples are cropped away); any other filtered axis through scipy.
    """
    pair = None
    if (
        yx is not None
        and yx[1] == yx[0] + 1
        and (weights[yx[0]] is not None or weights[yx[1]] is not None)
        and int(np.prod(a.shape[yx[1] + 1 :], dtype=np.int64)) <= _CV2_MAX_CHANNELS
    ):
        pair = yx
    for ax, w in enumerate(weights):
        if w is not None and (pair is None or ax not in pair):
            a = _correlate_valid_axis(a, w.astype(a.dtype), ax)
    if pair is not None:
        a = _cv2_valid(a, weights, pair)
    return a


def _cv2_valid(
    a: np.ndarray, weights: Sequence[np.ndarray | None], yx: tuple[int, int]
) -> np.ndarray:
    import cv2

    ay, ax = yx
    wy, wx = (w if w is not None else np.ones(1) for w in (weights[ay], weights[ax]))
    ry, rx = (len(wy) - 1) // 2, (len(wx) - 1) // 2
    lead, (h, w), trail = a.shape[:ay], a.shape[ay : ax + 1], a.shape[ax + 1 :]
    c = int(np.prod(trail, dtype=np.int64))
    src = np.ascontiguousarray(a).reshape(-1, h, w, c)
    kx, ky = wx.astype(a.dtype), wy.astype(a.dtype)
    results = [
        cv2.sepFilter2D(plane, -1, kx, ky, borderType=cv2.BORDER_REFLECT).reshape(h, w, c)[
            ry : h - ry, rx : w - rx
        ]
        for plane in src
    ]
    out = results[0][None] if len(results) == 1 else np.stack(results)  # no copy for one plane
    return out.reshape(*lead, h - 2 * ry, w - 2 * rx, *trail)


def _fft_valid(a: np.ndarray, weights: Sequence[np.ndarray | None]) -> np.ndarray:
    """Separable correlation by real FFT along each filtered axis (valid part)."""
    dtype = a.dtype
    for ax, w in enumerate(weights):
        if w is None:
            continue
        n, k = a.shape[ax], len(w)
        size = scipy.fft.next_fast_len(n, real=True)
        kernel = np.zeros(size, dtype=dtype)
        kernel[:k] = w[::-1]  # convolution with the flipped weights == correlation
        spec = scipy.fft.rfft(kernel)
        shape = [1] * a.ndim
        shape[ax] = -1
        f = scipy.fft.rfft(a, n=size, axis=ax)
        f *= spec.reshape(shape)
        full = scipy.fft.irfft(f, n=size, axis=ax)
        a = full[tuple(slice(k - 1, n) if i == ax else slice(None) for i in range(a.ndim))]
    return np.ascontiguousarray(a, dtype=dtype)


def _convolve_valid(
    a: np.ndarray, weights: Sequence[np.ndarray | None], yx: tuple[int, int] | None, method: str
) -> np.ndarray:
    if method == "fft":
        return _fft_valid(a, weights)
    return _direct_valid(a, weights, yx)


def _choose_method(radii: Sequence[int], dtype: np.dtype) -> str:
    return "fft" if max(radii) > FFT_RADIUS[np.dtype(dtype)] else "direct"


def _gaussian_block(
    padded: np.ndarray,
    sigmas: Sequence[float],
    radii: Sequence[int],
    *,
    nan_policy: str,
    yx: tuple[int, int] | None = None,
    method: str | None = None,
    overwrite_input: bool = False,
) -> np.ndarray:
    """Gaussian filter of a haloed block; returns the block without its halo.

    ``padded`` carries ``radii[i]`` extra samples on both sides of axis ``i``
    (already filled as the filter's ``mode`` extends the image). Matches
    ``scipy.ndimage.gaussian_filter(whole, sigmas, mode=mode, truncate=...)``
    on the corresponding pixels. ``overwrite_input=True`` lets the NaN paths
    zero the NaN samples of ``padded`` in place (saves one block of memory).
    """
    weights = [_weights(s, r) if r > 0 else None for s, r in zip(sigmas, radii, strict=True)]
    inner = tuple(slice(r, n - r) for r, n in zip(radii, padded.shape, strict=True))
    if all(w is None for w in weights):
        return padded[inner].copy()
    method = method or _choose_method(radii, padded.dtype)
    nan = np.isnan(padded)
    has_nan = bool(nan.any())
    if method == "fft" and (has_nan or not np.isfinite(padded).all()) and np.isinf(padded).any():
        method = "direct"  # an FFT would spread inf over the whole block
    if not has_nan:
        return _convolve_valid(padded, weights, yx, method)
    if nan_policy == "propagate":
        if method == "direct":
            return _convolve_valid(padded, weights, yx, method)  # NaN spreads as in scipy
        # FFT of the finite part, then NaN wherever the kernel footprint holds one
        finite = padded if overwrite_input else padded.copy()
        finite[nan] = 0
        out = _convolve_valid(finite, weights, yx, method)
        out[_dilate_valid(nan, radii)] = np.nan
        return out
    # normalized convolution G*(v m) / G*m over the valid samples m
    num_in = padded if overwrite_input else padded.copy()
    num_in[nan] = 0  # the valid samples keep their values
    shared = _shared_mask(nan, weights)  # e.g. the same NoData footprint in every band
    den_in = np.logical_not(nan if shared is None else shared).astype(padded.dtype)
    num, den = (
        _convolve_valid(num_in, weights, yx, method),
        _convolve_valid(den_in, weights, yx, method),
    )
    nan_inner = nan[inner]
    if method == "fft" and padded.dtype == np.float32:
        if np.any((den < _MIN_WEIGHT_FP32_FFT) & ~nan_inner):  # float32 FFT error / small weight
            num = _convolve_valid(num_in.astype(np.float64), weights, yx, method)
            den = _convolve_valid(den_in.astype(np.float64), weights, yx, method)
    with np.errstate(invalid="ignore", divide="ignore"):
        if num.dtype == padded.dtype and num.flags.writeable:
            out = np.divide(num, den, out=num)
        else:
            out = np.divide(num, den, dtype=padded.dtype)
    if method == "fft":  # a direct sum always keeps the pixel's own positive weight
        fix = ~(den > 0) & ~nan_inner  # a valid pixel with no weight at all keeps its own value
        if fix.any():
            out[fix] = num_in[inner][fix]
    np.copyto(out, np.nan, where=nan_inner)  # NaN stays NaN
    return out


def _shared_mask(nan: np.ndarray, weights: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """``nan`` reduced to length 1 on the unfiltered axes, if it is constant along them."""
    axes = [ax for ax, w in enumerate(weights) if w is None and nan.shape[ax] > 1]
    if not axes:
        return None
    first = nan[tuple(slice(0, 1) if ax in axes else slice(None) for ax in range(nan.ndim))]
    return first if np.array_equal(nan, np.broadcast_to(first, nan.shape)) else None


def _dilate_valid(mask: np.ndarray, radii: Sequence[int]) -> np.ndarray:
    """True where a box of half-width ``radii`` around the (valid) pixel holds a True."""
    m = mask.view(np.uint8)
    for ax, r in enumerate(radii):
        if r > 0:
            m = scipy.ndimage.maximum_filter1d(m, 2 * r + 1, axis=ax, mode="constant")
            m = m[
                tuple(slice(r, m.shape[ax] - r) if i == ax else slice(None) for i in range(m.ndim))
            ]
    return m.astype(bool)


# ---------------------------------------------------------------- chunked builder
def _axis_pieces(chunks: Sequence[int], n: int, r: int, mode: str) -> list[list[tuple[Any, ...]]]:
    """For each output chunk along one axis, the pieces of its haloed extent.

    A piece is ``(chunk_id, local_index)`` with ``local_index`` a slice or an
    index array into input chunk ``chunk_id``, or ``(None, length)`` for a run
    of constant samples.
    """
    bounds = np.cumsum((0, *chunks))
    owner = np.repeat(np.arange(len(chunks)), chunks)
    out = []
    for k in range(len(chunks)):
        src = _source_index(np.arange(bounds[k] - r, bounds[k + 1] + r), n, mode)
        pieces: list[tuple[Any, ...]] = []
        i = 0
        while i < len(src):
            if src[i] < 0:
                j = i
                while j < len(src) and src[j] < 0:
                    j += 1
                pieces.append((None, j - i))
                i = j
                continue
            c = owner[src[i]]
            j = i + 1
            step = None
            while j < len(src) and src[j] >= 0 and owner[src[j]] == c:
                d = src[j] - src[j - 1]
                if step is None and d in (-1, 0, 1):
                    step = d
                elif d != step:
                    break
                j += 1
            local = src[i:j] - bounds[c]
            if step == 1 or j - i == 1:
                index: Any = slice(int(local[0]), int(local[-1]) + 1)
            elif step == -1:
                index = slice(int(local[0]), int(local[-1]) - 1 if local[-1] > 0 else None, -1)
            else:
                index = local
            pieces.append((int(c), index))
            i = j
        out.append(pieces)
    return out


def _piece_len(piece: tuple[Any, ...], chunk_len: int) -> int:
    c, index = piece
    if c is None:
        return int(index)
    if isinstance(index, slice):
        return len(range(*index.indices(chunk_len)))
    return len(index)


def _take(block: np.ndarray, index: tuple[Any, ...]) -> np.ndarray:
    """``block`` indexed by one slice or index array per axis (outer indexing)."""
    out = block[tuple(i if isinstance(i, slice) else slice(None) for i in index)]
    for ax, i in enumerate(index):
        if not isinstance(i, slice):
            out = np.take(out, i, axis=ax)
    return out


def _assemble_and_filter(
    parts: list[Any],
    *,
    shapes: list[tuple[int, ...]],
    offsets: list[tuple[int, ...]],
    padded_shape: tuple[int, ...],
    dtype: np.dtype,
    cval: float,
    **kwargs: Any,
) -> np.ndarray:
    padded = np.empty(padded_shape, dtype=dtype)
    for part, shape, off in zip(parts, shapes, offsets, strict=True):
        where = tuple(slice(o, o + s) for o, s in zip(off, shape, strict=True))
        padded[where] = cval if part is None else part
    return _gaussian_block(padded, overwrite_input=True, **kwargs)


def _halo_rechunk(x: da.Array, radii: Sequence[int]) -> da.Array:
    """Rechunk the filtered axes whose smallest chunk is below the radius.

    Such an axis gets regular chunks of ``max(radius, largest chunk)`` (the
    last one may be shorter), so each output block reads at most its two
    neighbours along that axis. Other axes keep their chunks.
    """
    new = {}
    for ax, (r, c) in enumerate(zip(radii, x.chunks, strict=True)):
        if r > 0 and len(c) > 1 and min(c) < r:
            new[ax] = min(max(r, max(c)), x.shape[ax])
    return x.rechunk(new) if new else x


def _halo_copies(block: np.ndarray, indices: list[tuple[Any, ...]]) -> tuple[np.ndarray, ...]:
    """Copies of the halo pieces of ``block`` (copies, so the block itself can be freed)."""
    return tuple(np.array(_take(block, index)) for index in indices)


def _recompute_block(graph: Any, key: tuple[Any, ...]) -> list[GraphNode] | None:
    """The tasks that compute block ``key`` of an array from scratch, or None.

    Follows the chain of tasks at the same block index (a store or array
    read, then any blockwise ops) and stops at everything else (shared
    statistics, the store object, persisted data), which stays referenced.
    """
    index = key[1:]
    tasks: dict[Any, GraphNode] = {}
    todo = [key]
    while todo:
        k = todo.pop()
        node = graph.get(k) if k not in tasks else None
        if not isinstance(node, (Task, Alias)):
            if k == key:
                return None  # persisted data, or a graph format we do not read
            continue
        tasks[k] = node
        todo += [d for d in node.dependencies if isinstance(d, tuple) and d[1:] == index]
    return list(tasks.values())


def _gaussian_filter_dask(
    x: da.Array,
    sigmas: Sequence[float],
    radii: Sequence[int],
    *,
    mode: str,
    cval: float,
    nan_policy: str,
    yx: tuple[int, int] | None,
    out_dtype: np.dtype,
) -> da.Array:
    """One task per output block, built from its own haloed read.

    Each output block depends on its input block and on the halo pieces it
    needs from its neighbours (or from the far side of the image for
    ``wrap``); samples outside the image are filled as scipy's ``mode``
    extends the array. The halo pieces of each input block are cut by one
    task that *recomputes* the block (re-reads it from its store, re-runs any
    blockwise ops on it), copies the thin pieces and drops the block. So no
    input block waits in memory for a neighbour to be scheduled: whatever the
    order the scheduler sweeps the image in, memory holds the blocks being
    filtered and thin halo strips, never rows of blocks. The price is a
    second read of each block.
    """
    x = _halo_rechunk(x, radii)
    method = _choose_method(radii, out_dtype)
    axis_pieces = [
        _axis_pieces(c, n, r, mode) if r > 0 else [[(k, slice(None))] for k in range(len(c))]
        for c, n, r in zip(x.chunks, x.shape, radii, strict=True)
    ]
    token = tokenize(x, sigmas, radii, mode, cval, nan_policy, yx, out_dtype, method)
    name = f"gaussian_filter-{token}"
    halo_name = f"gaussian_filter-halo-{token}"
    dsk: dict[Any, Any] = {}
    kwargs = dict(
        sigmas=tuple(sigmas), radii=tuple(radii), nan_policy=nan_policy, yx=yx, method=method
    )
    # halo pieces requested from each input block by the other blocks' outputs
    requests: dict[tuple[int, ...], dict[tuple[Any, ...], tuple[int, tuple[Any, ...]]]] = {}

    def piece_of(block: tuple[int, ...], index: tuple[Any, ...]) -> tuple[Any, ...]:
        wanted = requests.setdefault(block, {})
        key = tuple(  # slices and index arrays are not hashable
            (i.start, i.stop, i.step) if isinstance(i, slice) else tuple(i.tolist()) for i in index
        )
        if key not in wanted:
            wanted[key] = (len(wanted), index)
        return (operator.getitem, (halo_name, *block), wanted[key][0])

    for out_idx in product(*(range(len(c)) for c in x.chunks)):
        per_axis = [axis_pieces[ax][k] for ax, k in enumerate(out_idx)]
        lengths = [
            [_piece_len(p, x.chunks[ax][p[0]]) if p[0] is not None else p[1] for p in pieces]
            for ax, pieces in enumerate(per_axis)
        ]
        starts = [np.cumsum((0, *lens[:-1])).tolist() for lens in lengths]
        parts: list[Any] = []
        shapes, offsets = [], []
        for pos in product(*(range(len(p)) for p in per_axis)):
            combo = [per_axis[ax][i] for ax, i in enumerate(pos)]
            shapes.append(tuple(lengths[ax][i] for ax, i in enumerate(pos)))
            offsets.append(tuple(starts[ax][i] for ax, i in enumerate(pos)))
            if any(p[0] is None for p in combo):
                parts.append(None)  # constant samples outside the image
                continue
            block = tuple(p[0] for p in combo)
            index = tuple(p[1] for p in combo)
            if block == out_idx:  # the block itself, whole or (at an image edge) in part
                parts.append((_take, (x.name, *block), index))
            else:
                parts.append(piece_of(block, index))
        padded_shape = tuple(
            x.chunks[ax][k] + 2 * r for ax, (k, r) in enumerate(zip(out_idx, radii, strict=True))
        )
        dsk[(name, *out_idx)] = (
            _apply_kwargs,
            _assemble_and_filter,
            [parts],
            dict(
                shapes=shapes,
                offsets=offsets,
                padded_shape=padded_shape,
                dtype=out_dtype,
                cval=cval,
                **kwargs,
            ),
        )
    graph = x.__dask_graph__()
    for block, wanted in requests.items():
        in_key, halo_key = (x.name, *block), (halo_name, *block)
        indices = [index for _, index in sorted(wanted.values(), key=lambda v: v[0])]
        cut = Task(halo_key, _halo_copies, TaskRef(in_key), indices)
        chain = _recompute_block(graph, in_key)
        dsk[halo_key] = cut if chain is None else GraphNode.fuse(cut, *chain, key=halo_key)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])  # type: ignore[list-item]
    return da.Array(
        graph, name, chunks=x.chunks, dtype=out_dtype, meta=np.empty((0,) * x.ndim, out_dtype)
    )


def _apply_kwargs(func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    return func(*args, **kwargs)


# ---------------------------------------------------------------- public API
def gaussian_filter(
    img: xr.DataArray,
    sigma: float | Mapping[Hashable, float],
    *,
    truncate: float = 4.0,
    mode: Mode = "reflect",
    cval: float = 0.0,
    nan_policy: Literal["omit", "propagate"] = "omit",
) -> xr.DataArray:
    """Gaussian filter along named dims, seamless across chunks, NaN-aware.

    Parameters
    ----------
    img : xarray.DataArray
        Image with at least ``y`` and ``x`` dims (any other dims too).
    sigma : float or dict
        Standard deviation of the Gaussian in pixels. A dict is keyed by dim
        name (dims left out get 0, i.e. are not filtered); a scalar applies
        to ``y`` and ``x`` only, never to ``band`` or ``image``.
    truncate : float, default 4.0
        Truncate the kernel at this many standard deviations: the radius on a
        dim is ``int(truncate * sigma + 0.5)``, as in scipy.
    mode : {"reflect", "grid-mirror", "constant", "grid-constant", "nearest", "mirror", "wrap", "grid-wrap"}
        How the image is extended beyond its edges, exactly as in
        :func:`scipy.ndimage.gaussian_filter` (``"wrap"`` takes the halo from
        the opposite side of the image).
    cval : float, default 0.0
        Value outside the image for the constant modes. With
        ``nan_policy="omit"``, ``cval=nan`` excludes the outside altogether.
    nan_policy : {"omit", "propagate"}, default "omit"
        ``"omit"``: normalized convolution ``G*(v m) / G*m`` over the valid
        (non-NaN) samples ``m``: NaN pixels stay NaN, NoData never bleeds into
        valid pixels, and a valid pixel whose whole neighbourhood is NaN keeps
        its own value. ``"propagate"``: exactly scipy (NaN spreads over the
        kernel footprint).

    Returns
    -------
    xarray.DataArray
        Lazy filtered image with ``img``'s dims, coords and attrs; float32
        unless ``img`` is float64. Chunks are those of ``img``, except a
        filtered dim whose smallest chunk is below the kernel radius: it is
        rechunked to regular chunks of ``max(radius, largest chunk)``.

    Raises
    ------
    TypeError
        ``img`` is not a DataArray, or ``sigma`` is neither a number nor a dict.
    ValueError
        ``sigma`` names a dim ``img`` lacks or is negative/non-finite;
        ``truncate`` is not a positive finite number; unknown ``mode`` or
        ``nan_policy``.

    Notes
    -----
    Each output block is one task that assembles its own haloed block: the
    input block plus slices of its neighbours as wide as the kernel radius,
    samples beyond the image edges taken as scipy's ``mode`` extends the
    array (``wrap`` from the far side, repeated reflection when the radius
    exceeds the image). The result therefore equals scipy's on the whole
    in-memory array at every pixel, borders and chunk seams included. The
    neighbours' slices are cut by tasks that re-read (recompute) the
    neighbour block and keep only the thin slices, so no block waits in
    memory for its neighbours: peak memory depends on the chunk size and the
    number of threads, not on the image size, at the cost of reading each
    input block twice.

    Blocks are filtered with OpenCV's separable float32/float64 filter
    (within ~1e-6 relative of scipy) or, when the radius exceeds
    ``FFT_RADIUS`` (48 px for float32), by real FFTs along each axis, whose
    cost per pixel does not grow with sigma (within ~1e-6 absolute of scipy
    for data of unit scale). Under ``"omit"``, blocks without NaN take the
    plain single-convolution path; with NaN, the weights ``G*m`` are computed
    once for all bands when every band has the same NoData footprint.

    Examples
    --------
    >>> import numpy as np, scipy.ndimage as ndi, bigimg as bi
    >>> a = np.random.default_rng(0).random((64, 48, 3)).astype("float32")
    >>> img = bi.from_array(a, chunks={"y": 20, "x": 20})
    >>> out = bi.gaussian_filter(img, 2.0)
    >>> ref = ndi.gaussian_filter(a, (2.0, 2.0, 0.0))
    >>> bool(np.allclose(out.values, ref, rtol=1e-5, atol=1e-6))
    True
    """
    check_image(img)
    sigmas = per_dim(img, sigma, "sigma")
    if not isinstance(truncate, numbers.Real) or isinstance(truncate, bool):
        raise TypeError(f"truncate must be a number, got {truncate!r}")
    if not math.isfinite(truncate) or truncate <= 0:
        raise ValueError(f"truncate must be a finite number > 0, got {truncate!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {set(MODES)}, got {mode!r}")
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {{'omit', 'propagate'}}, got {nan_policy!r}")
    if not isinstance(cval, numbers.Real) or isinstance(cval, bool):
        raise TypeError(f"cval must be a number, got {cval!r}")
    radii = tuple(_radius(s, truncate) for s in sigmas)
    out_dtype = float_dtype(img.dtype)
    data = img.data if isinstance(img.data, da.Array) else da.from_array(img.data, chunks=-1)
    yx = (img.get_axis_num("y"), img.get_axis_num("x"))
    result = _gaussian_filter_dask(
        data,
        sigmas,
        radii,
        mode=mode,
        cval=float(cval),
        nan_policy=nan_policy,
        yx=yx,
        out_dtype=out_dtype,
    )
    return like(img, result)


class GaussianFilterParams(Params):
    sigma: dict[str, float] | float
    truncate: float = 4.0
    mode: Mode = "reflect"
    cval: float = 0.0
    nan_policy: Literal["omit", "propagate"] = "omit"


register_op("gaussian_filter", GaussianFilterParams)(gaussian_filter)
