"""Spatially correlated Gaussian noise, reproducible whatever the chunking.

The field is white N(0, 1) noise blurred by a Gaussian kernel. The white noise
is a pure function of ``(seed, global pixel index)``: a counter-based
generator (Philox4x64, Salmon et al. 2011) keyed by the seed is evaluated at a
counter built from the pixel's global index, and its 64-bit output becomes two
normals by Box-Muller. Nothing depends on which task draws which pixel, so the
noise exists beyond the image edges too and every pixel sees a full kernel.

Layers, as everywhere in bigimg:

* kernels (numpy only): :func:`_white_noise` draws the noise of any box of
  global indices, :func:`_correlated_tile` blurs one haloed tile with
  separable FFT convolutions;
* builder: :func:`_correlated_dask` maps the tile kernel over a fixed tiling
  with :func:`dask.array.map_blocks`;
* public API: :func:`correlated_noise`, :func:`add_noise` (xarray out, named
  dims), registered as the pipeline source ``noise`` and op ``add_noise``.
"""

from __future__ import annotations

import functools
import math
import numbers
import sys
from collections.abc import Hashable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import scipy.fft
import xarray as xr

from bigimg.image import SPATIAL_DIMS, check_image, float_dtype, like, normalize_chunks, per_dim

# ---------------------------------------------------------------- white noise kernel
# Philox4x64 counter words: word 0 walks along x (8 pixels per 4-word block),
# words 1-3 hold the y, band and image indices. Indices are offset by 2**62 so
# that negative indices (the halo beyond the top/left edges) get their own
# counters and word 0 never wraps (numpy's Philox carries into word 1). A dim
# the field lacks counts as index 0: a (y, x) field is band 0 of (y, x, band).
_COUNTER_WORD = {"x": 0, "y": 1, "band": 2, "image": 3}
_NOISE_DIMS = ("image", "y", "x", "band")  # allowed dims, in bigimg's order
_OFFSET = 1 << 62
_KEY_TAG = 0x626967696D67  # "bigimg": second key word, fixed
_PIXELS_PER_BLOCK = 8  # one Philox block = 4 x uint64 = 4 Box-Muller pairs
_TWO_PI_2M32 = np.float32(2.0 * math.pi * 2.0**-32)
_2M32 = np.float32(2.0**-32)


def _white_noise(
    seed: int, dims: Sequence[str], start: Sequence[int], size: Sequence[int]
) -> np.ndarray:
    """White N(0, 1) float32 noise of the box ``[start, start + size)`` (global indices).

    A pure function of ``(seed, global index)``: any box of any size and
    position gives the same value at the same index. ``dims`` must contain
    ``"x"``; ``start`` may be negative.
    """
    ax = list(dims).index("x")
    others = [i for i in range(len(dims)) if i != ax]
    nx, x0 = int(size[ax]), int(start[ax]) + _OFFSET
    b0 = x0 // _PIXELS_PER_BLOCK
    nblocks = -(-(x0 + nx) // _PIXELS_PER_BLOCK) - b0
    row_shape = tuple(int(size[i]) for i in others)
    raw = np.empty((*row_shape, 4 * nblocks), np.uint64)
    # a uint64 array: numpy turns a list holding a seed near 2**64 into float64 (seed -> 0)
    bitgen = np.random.Philox(key=np.array([seed, _KEY_TAG], np.uint64))
    state = bitgen.state
    key = state["state"]["key"]
    state["buffer_pos"] = 4  # empty buffer: the next draw computes a fresh block
    counter = np.full(4, _OFFSET, np.uint64)  # a dim the box lacks is at index 0
    for idx in np.ndindex(row_shape):
        counter[0] = b0 - 1  # numpy's Philox increments the counter before a block
        for i, j in zip(others, idx, strict=True):
            counter[_COUNTER_WORD[dims[i]]] = int(start[i]) + j + _OFFSET
        state["state"] = {"counter": counter, "key": key}
        bitgen.state = state
        raw[idx] = bitgen.random_raw(4 * nblocks)
    # Box-Muller on the two 32-bit halves of each word -> two normals
    halves = raw.view(np.uint32).reshape(*row_shape, 4 * nblocks, 2)
    lo, hi = (
        (halves[..., 0], halves[..., 1])
        if sys.byteorder == "little"
        else (halves[..., 1], halves[..., 0])
    )
    radius = np.log((hi.astype(np.float32) + np.float32(0.5)) * _2M32)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    angle = lo.astype(np.float32)
    angle *= _TWO_PI_2M32
    del raw, halves, lo, hi  # free the draws before the output is allocated
    out = np.empty((*row_shape, 4 * nblocks, 2), np.float32)
    np.multiply(radius, np.cos(angle), out=out[..., 0])
    np.multiply(radius, np.sin(angle), out=out[..., 1])
    skip = x0 - b0 * _PIXELS_PER_BLOCK
    out = out.reshape(*row_shape, _PIXELS_PER_BLOCK * nblocks)[..., skip : skip + nx]
    return np.moveaxis(out, -1, ax)


# ---------------------------------------------------------------- convolution kernel
def _kernel_radius(length_scale: float, truncate: float) -> int:
    """Half-width of the truncated kernel, as scipy.ndimage computes it."""
    return int(truncate * length_scale + 0.5) if length_scale > 0 else 0


def _gaussian_1d(length_scale: float, truncate: float) -> np.ndarray:
    """Sampled Gaussian of std ``length_scale``, truncated, unit L2 norm (float64)."""
    r = _kernel_radius(length_scale, truncate)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / length_scale) ** 2)
    return k / np.sqrt(np.sum(k * k))


@functools.lru_cache(maxsize=64)
def _kernel_rfft(length_scale: float, truncate: float, n: int, dtype: str) -> np.ndarray:
    """rfft of the unit-L2 kernel zero-padded to ``n`` (cached: tiles share it)."""
    k = _gaussian_1d(length_scale, truncate).astype(dtype)
    return scipy.fft.rfft(k, n)


def _correlated_tile(
    seed: int,
    dims: Sequence[str],
    start: Sequence[int],
    size: Sequence[int],
    scales: Sequence[float],
    truncate: float,
    dtype: str,
) -> np.ndarray:
    """Correlated N(0, 1) noise of the box ``[start, start + size)``.

    Draws the white noise of the box grown by the kernel radius on each side,
    then convolves it axis by axis (the Gaussian is separable) with real FFTs
    of length ``>= size + 2 * radius``, so the circular wrap never reaches the
    ``size`` valid outputs. Float32 work for float32 output, else float64.
    """
    radii = [_kernel_radius(s, truncate) for s in scales]
    field = _white_noise(
        seed,
        dims,
        [s - r for s, r in zip(start, radii, strict=True)],
        [n + 2 * r for n, r in zip(size, radii, strict=True)],
    )
    work = np.dtype(np.float32 if np.dtype(dtype) == np.float32 else np.float64)
    field = field.astype(work, copy=False)
    for ax, (scale, r, n) in enumerate(zip(scales, radii, size, strict=True)):
        if r == 0:
            continue
        length = scipy.fft.next_fast_len(n + 2 * r, real=True)
        shape = [1] * field.ndim
        shape[ax] = -1
        spectrum = scipy.fft.rfft(field, length, axis=ax)
        spectrum *= _kernel_rfft(scale, truncate, length, work.name).reshape(shape)
        full = scipy.fft.irfft(spectrum, length, axis=ax)
        # output i of the circular convolution is centred on input i - r
        field = np.take(full, np.arange(2 * r, 2 * r + n), axis=ax)
    return field.astype(dtype, copy=False)


# ---------------------------------------------------------------- tiling + builder
_TILE_PIXELS = 1 << 22  # ~4 Mpx per task: 16 MiB of float32 before the halo
# Refused up front, before any graph is built: more chunks than a dask graph
# holds in bounded scheduler memory, or a task whose haloed tile needs more
# than _MAX_TASK_BYTES (measured: ~5 bytes per pixel per byte of the dtype).
_MAX_CHUNKS = 1 << 20
_MAX_TASK_BYTES = 1 << 31
_BYTES_PER_PIXEL_PER_ITEM = 5


def _tile_sizes(shape: Sequence[int], radii: Sequence[int]) -> tuple[int, ...]:
    """The fixed tiling the field is computed on (a function of shape and radii only).

    Correlated axes get a power of two (so that power-of-two user chunks
    align with it), at least twice the kernel radius (the halo then costs at
    most 2x per axis, and memory stays bounded by the kernel size), about
    ``_TILE_PIXELS ** (1/k)`` for k correlated axes, and never more than the
    axis. Uncorrelated axes fill the remaining pixel budget.
    """
    correlated = [i for i, r in enumerate(radii) if r > 0]
    base = 1 << int(math.log2(_TILE_PIXELS) / max(1, len(correlated)))
    tiles = [1] * len(shape)
    for i in correlated:
        want = max(base, 1 << max(0, math.ceil(math.log2(2 * radii[i]))))
        tiles[i] = min(shape[i], want)
    budget = max(1, _TILE_PIXELS // math.prod(tiles[i] for i in correlated))
    for i in reversed(range(len(shape))):
        if i not in correlated:
            tiles[i] = min(shape[i], budget)
            budget = max(1, budget // tiles[i])
    return tuple(tiles)


def _tile_block(
    *,
    seed: int,
    dims: tuple[str, ...],
    scales: tuple[float, ...],
    truncate: float,
    mean: float,
    std: float,
    out_dtype: str,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    assert block_info is not None
    loc = block_info[None]["array-location"]
    start = [a for a, _ in loc]
    size = [b - a for a, b in loc]
    out = _correlated_tile(seed, dims, start, size, scales, truncate, out_dtype)
    if std != 1.0:
        out *= out.dtype.type(std)
    if mean != 0.0:
        out += out.dtype.type(mean)
    return out


def _correlated_dask(
    shape: tuple[int, ...], dims: tuple[str, ...], dtype: np.dtype, **params: Any
) -> Any:
    """Dask array of the field on its fixed tiling: one task per tile, no inputs.

    Each task draws its own haloed white noise from the global indices, which
    is ``map_overlap`` with ``depth = radius`` without materializing or
    exchanging halos: memory per task is bounded by the tile plus its halo.
    """
    import dask.array as da

    radii = [_kernel_radius(s, params["truncate"]) for s in params["scales"]]
    tiles = _tile_sizes(shape, radii)
    chunks = tuple(
        tuple(min(t, n - i) for i in range(0, n, t)) for n, t in zip(shape, tiles, strict=True)
    )
    return da.map_blocks(
        _tile_block,
        chunks=chunks,
        dtype=dtype,
        meta=np.empty((0,) * len(shape), dtype),
        name=f"correlated-noise-{_token(shape, dims, dtype, params)}",
        dims=dims,
        out_dtype=dtype.name,
        **params,
    )


def _token(*args: Any) -> str:
    from dask.base import tokenize

    return tokenize(*args)


# ---------------------------------------------------------------- validation
def _check_shape(shape: Any) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if isinstance(shape, Mapping):
        items = list(shape.items())
        unknown = [d for d, _ in items if d not in _NOISE_DIMS]
        if unknown:
            raise ValueError(
                f"shape names unknown dim(s) {unknown!r}; allowed dims: {_NOISE_DIMS!r}"
            )
        missing = [d for d in SPATIAL_DIMS if d not in shape]
        if missing:
            raise ValueError(f"shape must name dims 'y' and 'x', got {dict(shape)!r}")
    elif isinstance(shape, Sequence) and not isinstance(shape, str):
        default = {2: ("y", "x"), 3: ("y", "x", "band"), 4: _NOISE_DIMS}
        if len(shape) not in default:
            raise ValueError(
                f"shape must have 2 (y, x), 3 (y, x, band) or 4 (image, y, x, band) sizes, got {shape!r}"
            )
        items = list(zip(default[len(shape)], shape, strict=True))
    else:
        raise TypeError(
            f"shape must be a sequence of ints or a dict of sizes by dim, got {shape!r}"
        )
    for d, n in items:
        if not isinstance(n, numbers.Integral) or isinstance(n, bool):
            raise TypeError(f"shape[{d!r}] must be an int, got {n!r}")
        if n <= 0:
            raise ValueError(f"shape[{d!r}] must be a positive int, got {n!r}")
    return tuple(int(n) for _, n in items), tuple(str(d) for d, _ in items)


def _check_scales(dims: tuple[str, ...], length_scale: Any) -> tuple[float, ...]:
    """Per-axis length scales: named dims (or y and x for a number) must be > 0."""
    named = length_scale if isinstance(length_scale, Mapping) else {"": length_scale}
    for d, s in named.items():
        what = f"length_scale[{d!r}]" if d else "length_scale"
        if isinstance(s, numbers.Real) and not isinstance(s, bool) and not float(s) > 0:
            raise ValueError(f"{what} must be > 0 (pixels), got {s!r}")
    stand_in = cast(xr.DataArray, SimpleNamespace(dims=dims))  # per_dim only reads .dims
    scales = per_dim(stand_in, length_scale, "length_scale")  # types, dims, finiteness
    if not any(scales):
        raise ValueError(f"length_scale must name at least one dim, got {length_scale!r}")
    return scales


def _count(n: int) -> str:
    """An int for a message: exact up to 15 digits, else its order of magnitude.

    Python ints are unbounded (``length_scale=1e300`` makes 600-digit tile
    sizes) but floats are not: ``n / 2**30`` raised OverflowError.
    """
    digits = str(n)
    return digits if len(digits) <= 15 else f"{digits[0]}.{digits[1:3]}e{len(digits) - 1}"


def _check_graph_size(
    shape: tuple[int, ...],
    dims: tuple[str, ...],
    scales: tuple[float, ...],
    truncate: float,
    dtype: np.dtype,
    chunks: Any,
) -> None:
    """Refuse, by arithmetic only, a field whose graph or tasks cannot fit in bounded memory.

    Checks that the kernel radius is finite, that one task's haloed tile
    stays under ``_MAX_TASK_BYTES``, and that neither the tiling nor the
    requested ``chunks`` make more than ``_MAX_CHUNKS`` chunks.
    """
    for d, s in zip(dims, scales, strict=True):
        if s > 0 and not math.isfinite(truncate * s + 0.5):
            raise ValueError(
                f"length_scale[{d!r}]={s!r} with truncate={truncate!r} gives an infinite "
                "kernel radius; use a smaller length_scale or truncate"
            )
    radii = [_kernel_radius(s, truncate) for s in scales]
    tiles = _tile_sizes(shape, radii)
    haloed = [t + 2 * r for t, r in zip(tiles, radii, strict=True)]
    task_bytes = math.prod(haloed) * _BYTES_PER_PIXEL_PER_ITEM * dtype.itemsize
    if task_bytes > _MAX_TASK_BYTES:
        radius = ", ".join(f"{d!r}: {_count(r)}" for d, r in zip(dims, radii, strict=True) if r)
        raise ValueError(
            f"length_scale={dict(zip(dims, scales, strict=True))!r} with truncate={truncate!r} "
            f"gives a kernel radius of {{{radius}}} pixels: one task would hold a "
            f"{' x '.join(map(_count, haloed))} pixel tile with its halo "
            f"(~{_count(task_bytes // 2**30)} GiB), more than the limit of "
            f"{_MAX_TASK_BYTES / 2**30:.0f} GiB; use a smaller length_scale or truncate "
            "(or make the noise on a coarser grid and upsample it)"
        )
    n_tiles = math.prod(-(-n // t) for n, t in zip(shape, tiles, strict=True))
    if n_tiles > _MAX_CHUNKS:
        raise ValueError(
            f"shape {dict(zip(dims, shape, strict=True))} needs {n_tiles:,} tiles of at most "
            f"~{_TILE_PIXELS:,} pixels, more than the limit of {_MAX_CHUNKS:,} chunks a dask "
            "graph can hold in bounded memory; use a smaller shape"
        )
    if isinstance(chunks, str) and chunks == "auto":
        return
    stand_in = cast(xr.DataArray, SimpleNamespace(dims=dims))  # normalize_chunks reads .dims
    wanted = normalize_chunks(stand_in, chunks)  # types, dims, signs
    n_chunks = 1
    for d, n, t in zip(dims, shape, tiles, strict=True):
        c = wanted[d]
        if isinstance(c, numbers.Integral) and not isinstance(c, bool):
            n_chunks *= 1 if c == -1 else -(-n // int(c))
        elif isinstance(c, Sequence) and not isinstance(c, str):
            n_chunks *= max(1, len(c))
        elif c is None:  # xarray: keep the tiling
            n_chunks *= -(-n // t)
    if n_chunks > _MAX_CHUNKS:
        raise ValueError(
            f"chunks={_short(chunks)} splits shape {dict(zip(dims, shape, strict=True))} into "
            f"{n_chunks:,} chunks, more than the limit of {_MAX_CHUNKS:,} a dask graph can "
            "hold in bounded memory; use larger chunks"
        )


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (chunks taken from an image can be huge)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def _check_number(
    value: Any, name: str, *, positive: bool = False, nonnegative: bool = False
) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


def _check_dtype(dtype: Any) -> np.dtype:
    if dtype is None:  # np.dtype(None) would silently be float64
        raise TypeError("dtype must be 'float32' or 'float64', got None")
    try:
        out = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from None
    if out not in (np.float32, np.float64):
        raise ValueError(
            "dtype must be a floating dtype, 'float32' or 'float64' in native byte order, "
            f"got {dtype!r}"
        )
    return out


def _check_range(mean: float, std: float, dtype: np.dtype) -> None:
    """Refuse a ``mean``/``std`` whose values would overflow ``dtype`` to inf."""
    biggest = float(np.finfo(dtype).max)
    if abs(mean) + 8 * std > biggest:  # normals stay within ~6.8 sigma (32-bit uniforms)
        raise ValueError(
            f"mean={mean!r} and std={std!r} overflow {dtype.name} (|mean| + 8 * std must be "
            f"<= {biggest:.4g}); use smaller values or float64 (dtype='float64')"
        )


def _check_seed(seed: Any) -> int:
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed!r}")
    return int(seed)


# ---------------------------------------------------------------- public API
def correlated_noise(
    shape: Sequence[int] | Mapping[str, int],
    *,
    length_scale: float | Mapping[str, float],
    seed: int = 0,
    chunks: str | int | Mapping[Hashable, Any] = "auto",
    mean: float = 0.0,
    std: float = 1.0,
    truncate: float = 4.0,
    dtype: Any = "float32",
) -> xr.DataArray:
    """Spatially correlated Gaussian noise of any size (lazy).

    White N(0, 1) noise, fixed by ``(seed, global pixel index)``, convolved
    with a Gaussian kernel of standard deviation ``length_scale`` pixels and
    scaled so that every pixel, borders included, has mean ``mean`` and
    standard deviation ``std``.

    Parameters
    ----------
    shape : sequence of int or dict
        Sizes ``(y, x)``, ``(y, x, band)`` or ``(image, y, x, band)``, or a
        dict of sizes by dim name (``y`` and ``x`` required; ``band`` and
        ``image`` allowed), which also fixes the dims' order.
    length_scale : float or dict
        Standard deviation of the Gaussian kernel in pixels, > 0. A number
        applies to ``y`` and ``x``; a dict names dims (dims left out are
        uncorrelated, e.g. every band gets independent noise).
    seed : int, default 0
        Key of the generator, in ``[0, 2**64)``.
    chunks : "auto", int or dict, default "auto"
        Dask chunks of the result. ``"auto"`` uses the field's own tiling
        (powers of two, about 4 Mpx per chunk); an int applies to ``y`` and
        ``x``; a dict names dims (dims left out are one chunk). The values do
        not depend on it.
    mean, std : float, default 0.0, 1.0
        Mean and standard deviation of every pixel (``std >= 0``).
    truncate : float, default 4.0
        The kernel is cut at ``truncate * length_scale`` pixels (radius
        ``int(truncate * length_scale + 0.5)``, as in scipy.ndimage).
    dtype : {"float32", "float64"}, default "float32"
        Output dtype; the convolution runs in this precision.

    Returns
    -------
    xarray.DataArray
        Lazy, dims as in ``shape``, attrs recording the parameters.

    Raises
    ------
    TypeError
        A size, seed or number of the wrong type, or an unknown dtype.
    ValueError
        A non-positive size, length scale, truncate or chunk, a negative
        ``std``, unknown dims, or a dtype that is not floating; a ``mean`` or
        ``std`` that overflows ``dtype``; more than 2**20 chunks (or tiles);
        a kernel radius (``truncate * length_scale``) making one task's tile
        with its halo larger than 2 GiB. All checked before building the graph.

    Notes
    -----
    Sampling a multivariate normal with a full covariance is hopeless beyond
    a few thousand cells; blurring white noise is exact for a Gaussian
    covariance: the correlation of two pixels ``r`` pixels apart is
    ``exp(-r**2 / (4 * length_scale**2))`` (the kernel convolved with itself),
    up to the truncation.

    The white noise is Philox4x64 [1]_ evaluated at a counter made of the
    pixel's global index, turned into normals by Box-Muller [2]_ (two normals
    per 64-bit draw, 32-bit uniforms: tails reach 6.7 sigma). The noise is
    defined beyond the edges, so border pixels have the interior's statistics.

    The field is computed on a fixed tiling that depends only on ``shape``,
    ``length_scale`` and ``truncate``: each tile draws its white noise grown by
    the kernel radius (the halo ``map_overlap`` would exchange, drawn instead
    of copied) and blurs it with separable real FFTs. ``chunks`` only
    re-slices those tiles, so any chunking, worker count or scheduler gives a
    bit-identical field (on machines with the same floating-point library).
    Tiles are 2048 pixels a side, or the power of two above twice the kernel
    radius when that is larger, or the whole axis when it is shorter; a
    task needs about 20 bytes per pixel of its haloed tile: ~100 MiB for
    float32 and ``length_scale <= 25``, ~500 MiB at ``length_scale = 300``.
    The whole field is never held, so memory does not grow with ``shape``.

    References
    ----------
    .. [1] J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw, "Parallel
       random numbers: as easy as 1, 2, 3", SC'11 (2011).
    .. [2] G. E. P. Box, M. E. Muller, "A note on the generation of random
       normal deviates", Ann. Math. Statist. 29 (1958).

    Examples
    --------
    >>> import bigimg as bi
    >>> field = bi.correlated_noise((256, 384), length_scale=8, seed=1, chunks=128)
    >>> field.dims, field.shape, field.dtype, field.chunks
    (('y', 'x'), (256, 384), dtype('float32'), ((128, 128), (128, 128, 128)))
    >>> other = bi.correlated_noise((256, 384), length_scale=8, seed=1, chunks={"y": 100})
    >>> bool((field == other).all())
    True
    """
    shape_t, dims = _check_shape(shape)
    scales = _check_scales(dims, length_scale)
    seed = _check_seed(seed)
    mean = _check_number(mean, "mean")
    std = _check_number(std, "std", nonnegative=True)
    truncate = _check_number(truncate, "truncate", positive=True)
    out_dtype = _check_dtype(dtype)
    _check_range(mean, std, out_dtype)
    _check_graph_size(shape_t, dims, scales, truncate, out_dtype, chunks)
    params = {"seed": seed, "scales": scales, "truncate": truncate, "mean": mean, "std": std}
    data = _correlated_dask(shape_t, dims, out_dtype, **params)
    attrs = {
        "bigimg_source": "correlated_noise",
        "noise_seed": seed,
        "noise_length_scale": dict(zip(dims, scales, strict=True)),
        "noise_mean": mean,
        "noise_std": std,
        "noise_truncate": truncate,
    }
    out = xr.DataArray(data, dims=dims, attrs=attrs, name="noise")
    if not (isinstance(chunks, str) and chunks == "auto"):
        out = out.chunk(normalize_chunks(out, chunks))
    return out


def add_noise(
    img: xr.DataArray,
    *,
    length_scale: float | Mapping[str, float],
    seed: int = 0,
    mean: float = 0.0,
    std: float = 1.0,
    truncate: float = 4.0,
) -> xr.DataArray:
    """Add correlated Gaussian noise of the image's shape to ``img`` (lazy).

    The noise is ``correlated_noise`` over ``img``'s dims and sizes, chunked
    like ``img``; each band (and each image of a stack) gets independent
    noise unless ``length_scale`` names those dims. NaN (NoData) pixels stay
    NaN. Coords and attrs survive; integer images become float32.

    Parameters
    ----------
    img : xarray.DataArray
        Image with dims ``y`` and ``x`` (``band`` and ``image`` allowed).
    length_scale, seed, mean, std, truncate
        As in :func:`correlated_noise`.

    Returns
    -------
    xarray.DataArray

    Raises
    ------
    TypeError, ValueError
        As :func:`correlated_noise`, or ``img`` not an image.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> img = bi.from_array(np.zeros((64, 64)), chunks=32)
    >>> noisy = bi.add_noise(img, length_scale=4, std=0.1, seed=3)
    >>> noisy.dims, noisy.dtype, noisy.chunks == img.chunks
    (('y', 'x', 'band'), dtype('float64'), True)
    """
    check_image(img)
    if img.dtype.kind not in "biuf":
        raise TypeError(f"img must have a real numeric dtype (bool, int or float), got {img.dtype}")
    unknown = [d for d in img.dims if d not in _NOISE_DIMS]
    if unknown:
        raise ValueError(
            f"img has dim(s) {unknown!r} that noise cannot index; allowed: {_NOISE_DIMS!r}"
        )
    dtype = float_dtype(img.dtype)
    noise = correlated_noise(
        {str(d): n for d, n in img.sizes.items()},
        length_scale=length_scale,
        seed=seed,
        chunks=dict(zip(img.dims, img.chunks, strict=True)) if img.chunks else "auto",
        mean=mean,
        std=std,
        truncate=truncate,
        dtype=dtype,
    )
    return like(img, img.data.astype(dtype, copy=False) + noise.data)
