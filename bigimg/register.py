"""Sub-pixel registration and shift-and-add stacking of image stacks.

A stack is ``(image, y, x[, band])``. :func:`register` measures, for every
image, the sub-pixel shift that registers it onto a reference (by default the
stack's NaN-aware mean composite, computed out of core), with the algorithm and
sign convention of :func:`skimage.registration.phase_cross_correlation`.
:func:`shift_and_add` deposits every valid pixel of every image at its shifted
position on an output grid and reduces over the stack with a tree reduction, so
a stack of any length is stacked with a few frames in memory per worker.

Layout: numpy kernels (``_register_block``, ``_deposit_block`` and helpers,
no dask) -> chunked builders (``_register_chunked``, ``_nanmean_chunked``,
``_shift_and_add_chunked``, the only dask code) -> public API.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Literal

import dask.array as da
import numpy as np
import xarray as xr
from scipy import fft as sfft

from bigimg.compute import (
    Reduction,
    compute_with_progress,
    one_blas_thread_per_task,
    reduce_blocks,
    sum_parts,
)
from bigimg.errors import BigimgWarning
from bigimg.image import check_image, float_dtype, per_dim, with_band

METHODS = ("bilinear", "nearest", "fourier")
_AXES = ("y", "x")
_TASK_BYTES = 64 * 2**20  # frames per task are capped to about this many bytes
# 1e-6 px, far below any registration's accuracy; beyond it the upsampled DFT's
# matrices (about 3.5 sqrt(factor) rows per axis) take seconds and GiB per frame.
MAX_UPSAMPLE = 1e6
MAX_ITERATIONS = 100  # each iteration is a full pass; a few already converge
# shift_and_add builds one task per (output block, image chunk) in Python: past a
# million output blocks the graph alone takes minutes and GiB.
MAX_OUT_BLOCKS = 10**6
MAX_BLOCK_BYTES = 2**31  # one task's float64 partial sums (value, weight) of one output block
# Shifts are clipped to +-2**53 px: still far outside any grid, and exact as int64.
_FAR = 2.0**53


# ============================================================ numpy kernels
def _collapse_band(block: np.ndarray, band_axis: int = -1) -> np.ndarray:
    """NaN-mean over the band axis, without "mean of empty slice" warnings."""
    if block.shape[band_axis] == 1:
        return np.take(block, 0, axis=band_axis)
    valid = np.isfinite(block)
    total = np.where(valid, block, 0).sum(axis=band_axis, dtype=np.float64)
    count = valid.sum(axis=band_axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count
    return out.astype(block.dtype, copy=False)


def _fill_nan(frame: np.ndarray) -> np.ndarray | None:
    """Replace NaN by the frame's valid mean; None when nothing is valid."""
    valid = np.isfinite(frame)
    if valid.all():
        return frame
    if not valid.any():
        return None
    return np.where(valid, frame, frame[valid].mean(dtype=np.float64).astype(frame.dtype))


def _crop(frame: np.ndarray, window: tuple[int, int] | None) -> np.ndarray:
    """Central crop of ``window`` (rows, cols) pixels; 0 keeps an axis whole."""
    if window is None:
        return frame
    out = frame
    for axis, size in enumerate(window):
        n = frame.shape[axis]
        if 0 < size < n:
            start = (n - size) // 2
            out = np.take(out, np.arange(start, start + size), axis=axis)
    return out


@functools.lru_cache(maxsize=8)
def _taper(shape: tuple[int, int]) -> np.ndarray:
    """2-D Tukey window (alpha 0.25): suppresses the crop's edges in the FFT."""
    from scipy.signal import windows  # imported here: scipy.signal costs 0.4 s at import

    return np.outer(windows.tukey(shape[0], 0.25), windows.tukey(shape[1], 0.25))


def _prepare(frame: np.ndarray, window: tuple[int, int] | None) -> np.ndarray | None:
    """Crop, fill NaN with the valid mean and, for a window, taper (mean-subtracted) edges."""
    filled = _fill_nan(_crop(frame, window))
    if filled is None or window is None:
        return filled
    out = (filled - filled.mean(dtype=np.float64)) * _taper(filled.shape)
    return out.astype(frame.dtype, copy=False)


def _spectrum(prepared: np.ndarray) -> np.ndarray:
    """``fftn`` in the frame's dtype, redone in float64 where float32 overflows (values near 3e38)."""
    freq = sfft.fftn(prepared)
    if prepared.dtype != np.float64 and not np.isfinite(np.vdot(freq, freq).real):
        freq = sfft.fftn(prepared.astype(np.float64))
    return freq


def _reference_freq(reference: np.ndarray, window: tuple[int, int] | None) -> np.ndarray:
    """FFT of the prepared reference, computed once per call."""
    prepared = _prepare(reference, window)
    if prepared is None:
        raise ValueError("reference has no valid (non-NaN) pixel")
    with np.errstate(over="ignore", invalid="ignore"):
        return _spectrum(prepared)


@functools.lru_cache(maxsize=16)
def _dft_rows(n: int, size: int, factor: float) -> np.ndarray:
    """``exp(-2 pi i j f_k)`` for ``j < size`` samples and the ``n`` DFT frequencies ``f_k``.

    The matrix-multiply DFT kernel of skimage's ``_upsampled_dft`` without its
    region offset, which :func:`_upsampled_peak` applies as a phase per column
    (``exp(-2 pi i (j - o) f) = exp(-2 pi i j f) exp(2 pi i o f)``): so the
    ``size x n`` complex exponentials are computed once per frame shape.
    """
    return np.exp(-2j * np.pi * np.arange(size)[:, None] * sfft.fftfreq(n, factor)[None, :])


def _upsampled_dft(
    product: np.ndarray,
    factor: float,
    offsets: Sequence[float] | np.ndarray,
    sizes: Sequence[int],
) -> np.ndarray:
    """skimage's upsampled cross-correlation (its ``_upsampled_dft`` conjugated).

    Sample ``j`` along an axis sits at ``(j - offset) / factor`` px.
    ``conj(Ky conj(P) Kx^T) = conj(Ky) P conj(Kx)^T``: the same products
    without conjugating the whole spectrum twice.
    """
    kernels = []
    for n, off, size in zip(product.shape, offsets, sizes, strict=True):
        phase = np.exp(2j * np.pi * float(off) * sfft.fftfreq(n, factor))
        kernels.append(np.conj(_dft_rows(n, size, factor) * phase).astype(product.dtype))
    return kernels[0] @ (product @ kernels[1].T)


def _upsampled_peak(
    product: np.ndarray, factor: float | np.ndarray, offsets: np.ndarray, size: int
) -> tuple[tuple[int, int], complex]:
    """Index and value of the peak of skimage's ``size x size`` upsampled region.

    Searched in two stages: the region sampled ``coarse ~ sqrt(factor)``
    times per px, then at ``factor`` around the coarse peak only (plus or
    minus one coarse step). For ``factor=100`` that is 38 instead of 150 rows
    and columns of matrix-multiply DFT, 4x fewer flops; the peak is the same
    as skimage's whenever the correlation has one peak in the 1.5 px region
    (its main lobe is about 1 px wide, far wider than the coarse step).
    """
    factor = float(factor)
    coarse = max(2, round(math.sqrt(factor)))
    half = math.ceil(factor / coarse) + 1
    coarse_size = math.ceil(1.5 * coarse)
    if coarse_size + 2 * half + 1 >= size:  # small factor: one stage is cheaper
        cc = _upsampled_dft(product, factor, offsets, (size, size))
        peak = np.unravel_index(np.argmax(np.abs(cc)), cc.shape)
        return (int(peak[0]), int(peak[1])), complex(cc[peak])
    # the same window of displacements (j - offset) / factor, sampled coarsely
    centre = coarse_size // 2
    coarse_offsets = [centre - (size // 2 - float(o)) * coarse / factor for o in offsets]
    cc = _upsampled_dft(product, coarse, coarse_offsets, (coarse_size, coarse_size))
    peak = np.unravel_index(np.argmax(np.abs(cc)), cc.shape)
    starts, sizes = [], []
    for j, c_off, off in zip(peak, coarse_offsets, offsets, strict=True):
        fine = round((j - c_off) / coarse * factor + float(off))
        lo, hi = max(0, fine - half), min(size, fine + half + 1)
        starts.append(lo)
        sizes.append(hi - lo)
    cc = _upsampled_dft(
        product, factor, [float(o) - lo for o, lo in zip(offsets, starts, strict=True)], sizes
    )
    peak = np.unravel_index(np.argmax(np.abs(cc)), cc.shape)
    return (int(peak[0]) + starts[0], int(peak[1]) + starts[1]), complex(cc[peak])


def _phase_correlation(
    ref_freq: np.ndarray,
    ref_amp: float,
    freq: np.ndarray,
    *,
    upsample_factor: float,
    normalization: str | None,
) -> tuple[float, float, float]:
    """skimage's ``phase_cross_correlation(ref, frame, space="fourier")`` for 2-D frames.

    The same steps and dtypes (whole-pixel peak by inverse FFT, then the
    matrix-multiply DFT around it), with the reference's power passed in and
    the DFT kernels cached per frame shape: returns ``(dy, dx, error)``.

    When the frame or the reference is all zeros the correlation is zero
    everywhere: the shift is 0 and the error NaN, as skimage returns for
    ``upsample_factor=1`` (its upsampled search then lands on the edge of
    its empty region, an arbitrary ``-0.75`` px at ``upsample_factor=100``).
    """
    power = float(np.vdot(freq, freq).real)
    if ref_amp == 0 or power == 0:
        return 0.0, 0.0, math.nan
    shape = np.array(freq.shape)
    product = ref_freq * np.conjugate(freq)
    if normalization == "phase":
        eps = np.finfo(product.real.dtype).eps
        product /= np.maximum(np.abs(product), 100 * eps)
    cc = sfft.ifftn(product)
    peak = np.unravel_index(np.argmax(np.abs(cc)), cc.shape)
    float_dtype = product.real.dtype
    shift = np.array(peak, dtype=float_dtype)
    shift[shift > shape // 2] -= shape[shift > shape // 2]
    if upsample_factor == 1:
        cc_max = complex(cc[peak])
        amp = ref_amp / freq.size * (power / freq.size)
    else:
        factor = np.array(upsample_factor, dtype=float_dtype)
        shift = np.round(shift * factor) / factor
        size = int(np.ceil(factor * 1.5))
        center = np.trunc(np.array(size, dtype=float_dtype) / 2.0)
        fine, cc_max = _upsampled_peak(product, factor, center - shift * factor, size)
        shift += (np.array(fine, dtype=float_dtype) - center) / factor
        amp = ref_amp * power
    shift[shape == 1] = 0
    if not 0 < amp < math.inf:  # the powers' product under- or overflows
        return float(shift[0]), float(shift[1]), math.nan
    error = math.sqrt(abs(1.0 - cc_max * cc_max.conjugate() / amp))
    return float(shift[0]), float(shift[1]), float(error)


def _register_block(
    block: np.ndarray,
    ref_freq: np.ndarray,
    *,
    upsample_factor: float,
    window: tuple[int, int] | None,
    normalization: str | None = "phase",
) -> np.ndarray:
    """Register each frame of ``block`` (n, y, x, band) -> (n, 3): shift y, shift x, error.

    The band axis is collapsed by its NaN-mean; NaN pixels take the frame's
    valid mean; all-NaN frames give NaN. This is
    ``phase_cross_correlation(reference, frame, upsample_factor=...)`` with the
    reference FFT and power computed once instead of once per frame.
    """
    frames = _collapse_band(block)
    ref_amp = float(np.vdot(ref_freq, ref_freq).real)
    out = np.full((frames.shape[0], 3), np.nan)
    for i, frame in enumerate(frames):
        with np.errstate(over="ignore", invalid="ignore"):
            filled = _prepare(frame, window)
            if filled is None:
                continue
            freq = _spectrum(filled)
        out[i] = _phase_correlation(
            ref_freq,
            ref_amp,
            freq,
            upsample_factor=upsample_factor,
            normalization=normalization,
        )
    return out


def _nan_sum_count(block: np.ndarray) -> np.ndarray:
    """Band-collapsed frames (n, y, x, band) -> (1, y, x, 2): sum of valid values, count."""
    frames = _collapse_band(block)
    valid = np.isfinite(frames)
    out = np.empty((1, *frames.shape[1:], 2))
    out[0, ..., 0] = np.where(valid, frames, 0).sum(axis=0, dtype=np.float64)
    out[0, ..., 1] = valid.sum(axis=0)
    return out


def _nanmean_of(sums: np.ndarray) -> np.ndarray:
    """Summed :func:`_nan_sum_count` partials (1, y, x, 2) -> (1, y, x, 1) mean, NaN where no value."""
    total, count = sums[..., :1], sums[..., 1:]
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _add_at_offset(
    out: np.ndarray, src: np.ndarray | float, oy: int, ox: int, *, like: np.ndarray | None = None
) -> None:
    """``out[r + oy, c + ox] += src[r, c]`` wherever the target is inside ``out``.

    A scalar ``src`` is added over the footprint of ``like``.
    """
    h, w = (src if like is None else like).shape[:2]  # type: ignore[union-attr]
    big_h, big_w = out.shape[:2]
    r0, r1 = max(0, -oy), min(h, big_h - oy)
    c0, c1 = max(0, -ox), min(w, big_w - ox)
    if r0 < r1 and c0 < c1:
        part = src if np.isscalar(src) else src[r0:r1, c0:c1]  # type: ignore[index]
        out[r0 + oy : r1 + oy, c0 + ox : c1 + ox] += part


def _corners(shift: np.ndarray, method: str) -> list[tuple[int, int, float]]:
    """Integer offsets and weights a pixel is split over for one frame's shift."""
    if method == "nearest":
        iy, ix = np.floor(shift + 0.5).astype(int)
        return [(int(iy), int(ix), 1.0)]
    iy, ix = np.floor(shift).astype(int)
    fy, fx = shift - np.floor(shift)
    out = []
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            if wy * wx > 0:
                out.append((int(iy) + dy, int(ix) + dx, float(wy * wx)))
    return out


def _fourier_frame(frame: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fourier-shift a frame (h, w, band) (NaN -> 0) and its valid mask by ``frac`` px.

    The FFT of value and mask planes times the phase ramp of the shift, real
    part of the inverse FFT: ``scipy.ndimage.fourier_shift``, vectorized over
    planes. The shifted mask is the coverage weight, clipped to [0, 1];
    returns ``(w * v, w)``.
    """
    h, w = frame.shape[:2]
    valid = np.isfinite(frame)
    planes = np.stack([np.where(valid, frame, 0), valid], axis=-1).astype(np.float64)
    ramp = np.exp(
        -2j * np.pi * (sfft.fftfreq(h)[:, None] * frac[0] + sfft.fftfreq(w)[None, :] * frac[1])
    )
    shifted = sfft.ifft2(sfft.fft2(planes, axes=(0, 1)) * ramp[:, :, None, None], axes=(0, 1)).real
    weight = np.clip(shifted[..., 1], 0.0, 1.0)
    weight[weight < 1e-6] = 0.0
    return shifted[..., 0] * weight, weight


def _deposit_block(
    block: np.ndarray,
    *,
    shifts: np.ndarray,
    origin: tuple[int, int],
    out_origin: tuple[int, int],
    out_size: tuple[int, int],
    method: str,
) -> np.ndarray:
    """Deposit frames (n, h, w, band) at their shifted positions -> (1, H, W, band, 2).

    ``block`` holds input rows/cols starting at ``origin``; the output block
    covers ``out_size`` pixels from ``out_origin`` of the output grid. Pixel
    ``(y, x)`` of frame ``i`` lands at ``(y + shifts[i, 0], x + shifts[i, 1])``.
    The last axis holds ``sum(w * v)`` and ``sum(w)`` in float64. Frames with a
    non-finite shift are skipped.
    """
    out = np.zeros((1, *out_size, block.shape[3], 2))
    acc_v, acc_w = out[0, ..., 0], out[0, ..., 1]
    base_y, base_x = origin[0] - out_origin[0], origin[1] - out_origin[1]
    for frame, shift in zip(block, np.asarray(shifts, dtype=np.float64), strict=True):
        if not np.isfinite(shift).all():
            continue
        if method == "fourier":
            whole = np.round(shift)
            values, weight = _fourier_frame(frame, shift - whole)
            oy, ox = int(whole[0]) + base_y, int(whole[1]) + base_x
            _add_at_offset(acc_v, values, oy, ox)
            _add_at_offset(acc_w, weight, oy, ox)
            continue
        valid = np.isfinite(frame)
        complete = bool(valid.all())
        values = frame.astype(np.float64)
        if not complete:
            values[~valid] = 0.0
        mask = None if complete else valid.astype(np.float64)
        for iy, ix, c in _corners(shift, method):
            oy, ox = iy + base_y, ix + base_x
            _add_at_offset(acc_v, values * c if c != 1.0 else values, oy, ox)
            # a complete frame adds the constant c: no weight array to build
            _add_at_offset(acc_w, c if mask is None else mask * c, oy, ox, like=frame)
    return out


# ============================================================ chunked builders
def _frames_per_task(arr: da.Array, frame_axes: tuple[int, ...]) -> int:
    frame_bytes = arr.dtype.itemsize * math.prod(arr.shape[a] for a in frame_axes)
    return max(1, _TASK_BYTES // max(frame_bytes, 1))


def _whole_frames(arr: da.Array) -> da.Array:
    """(n, y, x, band) with y, x, band in one chunk and few frames per chunk."""
    cap = _frames_per_task(arr, (1, 2, 3))
    image_chunks: Any = arr.chunks[0] if max(arr.chunks[0]) <= cap else cap
    return arr.rechunk({0: image_chunks, 1: -1, 2: -1, 3: -1})


def _nanmean_chunked(arr: da.Array) -> da.Array:
    """Lazy NaN-mean over the stack of band-collapsed frames -> (y, x), tree-reduced."""
    arr = _whole_frames(arr)
    nanmean = Reduction(chunk=_nan_sum_count, combine=sum_parts, finalize=_nanmean_of)
    mean = reduce_blocks(arr, nanmean, axis=(0, 3), dtype=np.float64, name="nanmean")
    return mean[0, :, :, 0]


def _register_chunked(
    arr: da.Array,
    reference: np.ndarray,
    *,
    upsample_factor: float,
    window: tuple[int, int] | None,
    normalization: str | None,
) -> da.Array:
    """(n, y, x, band) -> lazy (n, 3): one task per image chunk, reference FFT shared."""
    arr = _whole_frames(arr)
    ref = da.from_array(_reference_freq(reference, window), chunks=-1)
    return da.blockwise(
        _register_block,
        "ik",
        arr,
        "iyxb",
        ref,
        "uv",
        new_axes={"k": 3},
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((0, 0), np.float64),
        upsample_factor=upsample_factor,
        window=window,
        normalization=normalization,
    )


def _source_range(lo: int, hi: int, offsets: np.ndarray, extent: int, size: int) -> tuple[int, int]:
    """Input rows that can land in output rows [lo, hi) given integer offsets."""
    return max(0, lo - int(offsets.max()) - extent), min(size, hi - int(offsets.min()))


def _shift_and_add_chunked(
    arr: da.Array,
    shifts: np.ndarray,
    *,
    method: str,
    out_shape: tuple[int, int],
    out_chunks: tuple[tuple[int, ...], tuple[int, ...]],
) -> tuple[da.Array, da.Array]:
    """(n, y, x, band) + (n, 2) shifts -> lazy ``(sum(w*v), sum(w))``, each (Y, X, band).

    For every output block and every image chunk, the input region that can
    land in the block is sliced out and deposited by one task; the partial sums
    of each output block are tree-reduced over the stack.
    """
    n, ny, nx, _ = arr.shape
    if method == "fourier":  # the Fourier shift needs whole frames
        arr = arr.rechunk({1: -1, 2: -1})
        out_chunks = ((out_shape[0],), (out_shape[1],))
    cap = _frames_per_task(arr, (1, 2, 3))
    if max(arr.chunks[0]) > cap:
        arr = arr.rechunk({0: cap})
    finite = np.isfinite(shifts).all(axis=1)
    anchor = np.floor(np.where(finite[:, None], shifts, 0) + (0.5 if method == "nearest" else 0.0))
    extent = 0 if method == "nearest" else 1  # bilinear reaches one pixel further
    bounds = np.cumsum((0, *arr.chunks[0]))
    band_chunks = arr.chunks[3]
    rows = []
    for y_lo, y_hi in _edges(out_chunks[0]):
        row = []
        for x_lo, x_hi in _edges(out_chunks[1]):
            parts = []
            for i0, i1 in zip(bounds[:-1], bounds[1:], strict=True):
                ok = finite[i0:i1]
                if not ok.any():
                    continue
                if method == "fourier":  # whole frames: the FFT is periodic over the frame
                    ya, yb, xa, xb = 0, ny, 0, nx
                else:
                    ya, yb = _source_range(y_lo, y_hi, anchor[i0:i1, 0][ok], extent, ny)
                    xa, xb = _source_range(x_lo, x_hi, anchor[i0:i1, 1][ok], extent, nx)
                if ya >= yb or xa >= xb:
                    continue
                sub = arr[i0:i1, ya:yb, xa:xb].rechunk({1: -1, 2: -1})
                parts.append(
                    sub.map_blocks(
                        _deposit_block,
                        shifts=shifts[i0:i1],
                        origin=(ya, xa),
                        out_origin=(y_lo, x_lo),
                        out_size=(y_hi - y_lo, x_hi - x_lo),
                        method=method,
                        new_axis=4,
                        chunks=((1,), (y_hi - y_lo,), (x_hi - x_lo,), band_chunks, (2,)),
                        dtype=np.float64,
                        meta=np.empty((0, 0, 0, 0, 0), np.float64),
                    )
                )
            if parts:
                deposits = da.concatenate(parts, axis=0)  # the partial sums
                block = reduce_blocks(
                    deposits, Reduction(None, sum_parts), axis=0, dtype=np.float64, name="stack"
                )[0]
            else:
                block = da.zeros(
                    (y_hi - y_lo, x_hi - x_lo, arr.shape[3], 2), chunks=(-1, -1, band_chunks, -1)
                )
            row.append(block)
        rows.append(row)
    sums = da.concatenate([da.concatenate(row, axis=1) for row in rows], axis=0)
    return sums[..., 0], sums[..., 1]


def _edges(chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    b = np.cumsum((0, *chunks))
    return [(int(lo), int(hi)) for lo, hi in zip(b[:-1], b[1:], strict=True)]


# ============================================================ validation helpers
def _check_stack(stack: Any, dim: str) -> None:
    check_image(stack, "stack", required=())
    if not isinstance(dim, str):
        raise TypeError(f"dim must be a str, got {dim!r}")
    if dim in (*_AXES, "band"):
        raise ValueError(f"dim must name the stack's image dim, not {dim!r}")
    missing = [d for d in (dim, *_AXES) if d not in stack.dims]
    if missing:
        raise ValueError(
            f"stack is missing dim(s) {missing!r} (dim={dim!r}); it has dims {stack.dims!r}"
        )
    extra = [d for d in stack.dims if d not in (dim, *_AXES, "band")]
    if extra:
        raise ValueError(
            f"stack has unexpected dim(s) {extra!r}; expected ({dim!r}, 'y', 'x'[, 'band'])"
        )
    if not np.issubdtype(stack.dtype, np.number) or np.issubdtype(stack.dtype, np.complexfloating):
        raise TypeError(f"stack must hold real numbers, got dtype {stack.dtype}")


def _as_4d(stack: xr.DataArray, dim: str) -> da.Array:
    """Dask array (image, y, x, band) in the float dtype of the output."""
    obj = with_band(stack)
    obj = obj.transpose(dim, "y", "x", "band")
    data = obj.data if isinstance(obj.data, da.Array) else da.from_array(obj.data, chunks=-1)
    return data.astype(float_dtype(stack.dtype))


def _select_band(stack: xr.DataArray, band: Any) -> xr.DataArray:
    if band is None:
        return stack
    if isinstance(band, (bool, np.bool_)):
        raise TypeError(f"band must be a band label or index, got {band!r}")
    if "band" not in stack.dims:
        raise ValueError(f"band={band!r} given but stack has no 'band' dim: {stack.dims!r}")
    if "band" in stack.coords:
        if band not in stack["band"].values:
            raise ValueError(
                f"band {band!r} is not a label of the stack's band coord "
                f"{stack['band'].values.tolist()!r}"
            )
        return stack.sel(band=[band])
    if not isinstance(band, numbers.Integral) or not 0 <= int(band) < stack.sizes["band"]:
        raise ValueError(
            f"band must be an index in [0, {stack.sizes['band']}) (the stack has no band "
            f"coord), got {band!r}"
        )
    return stack.isel(band=[int(band)])


def _check_upsample(upsample_factor: Any) -> float:
    if not isinstance(upsample_factor, numbers.Real) or isinstance(upsample_factor, bool):
        raise TypeError(f"upsample_factor must be a number, got {upsample_factor!r}")
    # (typeshed's numbers.Real has no __ge__, so `1 <= Real` fails to type-check)
    if not math.isfinite(upsample_factor) or not 1 <= upsample_factor <= MAX_UPSAMPLE:  # type: ignore[operator]
        raise ValueError(
            f"upsample_factor must be a finite number in [1, {MAX_UPSAMPLE:g}] (1e-6 px), "
            f"got {upsample_factor!r}"
        )
    return float(upsample_factor)


def _check_window(stack: xr.DataArray, window: Any) -> tuple[int, int] | None:
    if window is None:
        return None
    sizes = per_dim(stack, window, "window")
    if isinstance(window, Mapping):
        bad = [d for d in window if d not in _AXES]
        if bad:
            raise ValueError(f"window may only name 'y' and 'x', got {bad!r}")
    out = []
    for d in _AXES:
        v = sizes[stack.get_axis_num(d)]
        if v != int(v) or v == 1:
            raise ValueError(f"window[{d!r}] must be an integer >= 2 (0 = whole axis), got {v!r}")
        out.append(int(v))
    return out[0], out[1]


def _check_reference(reference: Any, frame_shape: tuple[int, int], band: Any) -> np.ndarray:
    """Reference as an in-memory (y, x) array (band-collapsed or picked); computes."""
    if isinstance(reference, xr.DataArray):
        missing = [d for d in _AXES if d not in reference.dims]
        extra = [d for d in reference.dims if d not in (*_AXES, "band")]
        if missing or extra:
            raise ValueError(
                f"reference must have dims ('y', 'x'[, 'band']), got {reference.dims!r}"
            )
        ref = reference
        if "band" in ref.dims:
            ref = _select_band(ref, band) if band is not None else ref
            arr = _collapse_band(np.asarray(ref.transpose("y", "x", "band").values))
        else:
            arr = np.asarray(ref.transpose("y", "x").values)
    elif isinstance(reference, np.ndarray | da.Array):
        arr = np.asarray(reference)
        if arr.ndim == 3:
            if band is not None:
                if not isinstance(band, numbers.Integral):
                    raise TypeError(
                        f"band must be an int index for a numpy reference, got {band!r}"
                    )
                arr = arr[:, :, int(band)]
            else:
                arr = _collapse_band(arr)
        elif arr.ndim != 2:
            raise ValueError(
                f"reference must be 2-D (y, x) or 3-D (y, x, band), got shape {arr.shape}"
            )
    else:
        raise TypeError(
            f"reference must be None, a numpy array or an xarray.DataArray, got {type(reference).__name__}"
        )
    if tuple(arr.shape) != tuple(frame_shape):
        raise ValueError(
            f"reference has shape {arr.shape[:2]}, the stack's frames are {frame_shape}"
        )
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"reference must hold real numbers, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
    return arr


def _check_out_blocks(shape: tuple[int, int], data: da.Array, method: str) -> None:
    """Refuse an ``out_shape`` whose output blocks are too many or too large (before any graph)."""
    if method == "fourier":  # whole frames: the output is one block
        step = shape
    else:
        step = (min(max(data.chunks[1]), shape[0]), min(max(data.chunks[2]), shape[1]))
    block_bytes = step[0] * step[1] * max(data.chunks[3]) * 16
    if block_bytes > MAX_BLOCK_BYTES:
        raise ValueError(
            f"out_shape={shape} with method={method!r} makes output blocks of "
            f"{block_bytes / 2**30:.1f} GiB of partial sums per task, more than "
            f"{MAX_BLOCK_BYTES // 2**30} GiB; ask a smaller out_shape"
            + ("" if method == "fourier" else " or rechunk y and x smaller")
        )
    blocks = math.ceil(shape[0] / step[0]) * math.ceil(shape[1] / step[1])
    if blocks > MAX_OUT_BLOCKS:
        raise ValueError(
            f"out_shape={shape} in blocks of the stack's y/x chunks {step[0]}x{step[1]} is "
            f"{blocks} output blocks, more than the {MAX_OUT_BLOCKS} bigimg builds; rechunk "
            "y and x larger or ask a smaller out_shape"
        )


def _check_shifts(shifts: Any, stack: xr.DataArray, dim: str) -> np.ndarray:
    """Shifts as a float64 (N, 2) numpy array of (y, x); reads them into memory."""
    if isinstance(shifts, xr.DataArray):
        if "axis" in shifts.dims and dim in shifts.dims and shifts.ndim == 2:
            if "axis" in shifts.coords:
                shifts = shifts.sel(axis=list(_AXES))
            shifts = shifts.transpose(dim, "axis")
        values = np.asarray(shifts.values)
    else:
        try:
            values = np.asarray(shifts)
        except Exception as e:  # noqa: BLE001
            raise TypeError(f"shifts must be an (N, 2) array of numbers, got {shifts!r}") from e
    if values.dtype.kind not in "iuf":
        raise TypeError(f"shifts must be an (N, 2) array of real numbers, got dtype {values.dtype}")
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(
            f"shifts must have shape (N, 2) of (y, x) shifts, got shape {values.shape}"
        )
    n = stack.sizes[dim]
    if values.shape[0] != n:
        raise ValueError(
            f"shifts has {values.shape[0]} rows but the stack has {n} images along {dim!r}"
        )
    if np.isinf(values).any():
        raise ValueError("shifts must be finite (NaN marks an image to skip), got inf")
    # a shift past +-2**53 px lands outside any grid just the same, and stays exact as int64
    return np.clip(values.astype(np.float64), -_FAR, _FAR)


def _warn_skipped(which: np.ndarray, stack: xr.DataArray, dim: str, what: str) -> None:
    if which.any():
        labels = (stack[dim].values if dim in stack.coords else np.arange(which.size))[which]
        warnings.warn(
            f"{what}: {int(which.sum())} image(s) along {dim!r} {labels.tolist()!r} have no "
            "valid pixel or a NaN shift; their shift is NaN and they get weight 0 when stacked",
            BigimgWarning,
            stacklevel=3,
        )


def _warn_undetermined(
    which: np.ndarray, stack: xr.DataArray, dim: str, window: tuple[int, int] | None
) -> None:
    if which.any():
        labels = (stack[dim].values if dim in stack.coords else np.arange(which.size))[which]
        where = " inside the window (a constant crop is all zeros once mean-subtracted)"
        warnings.warn(
            f"register: {int(which.sum())} image(s) along {dim!r} {labels.tolist()!r}: the image "
            f"or the reference is all zeros{where if window else ''}, so there is no correlation "
            "peak; their shift is 0 and their error NaN (as skimage's phase_cross_correlation)",
            BigimgWarning,
            stacklevel=3,
        )


def _compute(*arrays: da.Array) -> list[Any]:
    """Compute on the active scheduler with one BLAS thread per task.

    The parallelism is over frames; BLAS threads inside each task's matrix
    products (the upsampled DFT) would only oversubscribe the cores (dask's
    distributed workers already run with ``OPENBLAS_NUM_THREADS=1``).
    """
    with one_blas_thread_per_task():
        return compute_with_progress(list(arrays), desc="registering")


# ============================================================ public API
def register(
    stack: xr.DataArray,
    *,
    reference: Any = None,
    upsample_factor: float = 100,
    dim: str = "image",
    band: Hashable | None = None,
    window: Mapping[str, int] | int | None = None,
    iterations: int = 1,
    normalization: Literal["phase"] | None = "phase",
) -> xr.DataArray:
    """Sub-pixel shift of every image of a stack against a reference (computes).

    Parameters
    ----------
    stack : xarray.DataArray
        ``(image, y, x[, band])``, any chunking; NaN marks NoData.
    reference : numpy.ndarray or xarray.DataArray, optional
        ``(y, x)`` or ``(y, x, band)`` image of the frames' shape. Default: the
        stack's NaN-mean composite (one out-of-core pass over the stack).
    upsample_factor : float, default 100
        Register to within ``1 / upsample_factor`` px (matrix-multiply DFT
        refinement around the correlation peak); in ``[1, MAX_UPSAMPLE]``
        (1e6: beyond it the refinement costs seconds and GiB per frame).
    dim : str, default "image"
        The stack dim.
    band : hashable, optional
        Band label (or index when there is no band coord) to register on;
        default: the NaN-mean over ``band``.
    window : int or dict, optional
        Register on a central crop: ``{"y": 256, "x": 256}`` or one int for
        both; 0 keeps an axis whole. Faster on large frames. The crops of the
        reference and of each frame are mean-subtracted and tapered by a 2-D
        Tukey window (alpha 0.25) so that their edges do not pull the peak
        to zero shift.
    iterations : int, default 1
        With 2 or more, re-register against the shift-and-add composite of the
        previous iteration (sharper than the unaligned mean); at most
        ``MAX_ITERATIONS`` (100), each being a pass over the stack.
    normalization : {"phase", None}, default "phase"
        As in skimage: ``"phase"`` correlates the whitened spectra (phase
        correlation, robust to illumination changes); ``None`` the plain
        spectra (more robust to noise and to large NoData areas).

    Returns
    -------
    xarray.DataArray
        float64 ``(dim, axis)`` with ``axis = ["y", "x"]``: the shift that
        registers each image onto the reference (``skimage``'s convention, so
        :func:`shift_and_add` with it aligns the stack), the stack's ``dim``
        coords, and the per-image registration error as coord ``error``.
        Images with no valid pixel get NaN (and a ``BigimgWarning``). Images
        that are all zeros, or registered against an all-zero reference, have
        no correlation peak: shift 0, error NaN (and a ``BigimgWarning``).

    Raises
    ------
    TypeError
        ``stack`` is not a DataArray, or ``reference`` / ``upsample_factor`` of
        a wrong type.
    ValueError
        ``stack`` lacks ``dim``, ``y`` or ``x``; ``upsample_factor`` outside
        ``[1, 1e6]``; bad ``window``, ``band``, ``iterations`` or reference shape.

    Notes
    -----
    Each image chunk is one task that registers its frames in turn against
    the reference's FFT, computed once. NaN pixels are filled with the frame's
    valid mean before the FFT. Phase correlation whitens the spectrum, so on
    smooth scenes with large NoData areas the filled edges can dominate it and
    bias the shift: use ``normalization=None`` or a ``window`` inside the
    valid area there. The result equals ``skimage.registration.phase_cross_correlation(reference,
    frame, upsample_factor=...)`` on the NaN-filled, band-collapsed frames. The
    sub-pixel peak is searched coarse (``sqrt(upsample_factor)`` samples per px)
    then fine around the coarse peak, 4x fewer flops than skimage's full
    1.5 px region at ``upsample_factor=100`` and the same peak whenever the
    correlation has a single peak in that region.

    References
    ----------
    .. [1] M. Guizar-Sicairos, S. T. Thurman and J. R. Fienup, "Efficient
       subpixel image registration algorithms", Opt. Lett. 33, 156-158 (2008).

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> scene = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 2)
    >>> moved = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(scene), (1.5, -2.25))).real
    >>> stack = bi.from_array(np.stack([scene, moved])[..., None], chunks={"image": 1})
    >>> shifts = bi.register(stack, reference=scene)
    >>> shifts.dims, shifts["axis"].values.tolist()
    (('image', 'axis'), ['y', 'x'])
    >>> bool(np.allclose(shifts, [[0, 0], [-1.5, 2.25]], atol=0.02))  # minus the move
    True
    """
    _check_stack(stack, dim)
    factor = _check_upsample(upsample_factor)
    win = _check_window(stack, window)
    if (
        not isinstance(iterations, numbers.Integral)
        or isinstance(iterations, bool)
        or not 1 <= iterations <= MAX_ITERATIONS
    ):
        raise ValueError(
            f"iterations must be an int in [1, {MAX_ITERATIONS}] (each is a pass over the "
            f"stack), got {iterations!r}"
        )
    if normalization not in ("phase", None):
        raise ValueError(f"normalization must be one of {{'phase', None}}, got {normalization!r}")
    picked = _select_band(stack, band)
    frame_shape = (stack.sizes["y"], stack.sizes["x"])
    data = _as_4d(picked, dim)
    if reference is None:
        (ref,) = _compute(_nanmean_chunked(data))
    else:
        ref = _check_reference(reference, frame_shape, band)
    ref = ref.astype(data.dtype, copy=False)
    measure = _register_chunked(
        data, ref, upsample_factor=factor, window=win, normalization=normalization
    )
    (result,) = _compute(measure)
    for _ in range(int(iterations) - 1):  # re-register on the sharp, aligned composite
        total, weight = _shift_and_add_chunked(
            data,
            result[:, :2],
            method="fourier",
            out_shape=frame_shape,
            out_chunks=((frame_shape[0],), (frame_shape[1],)),
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = _collapse_band(np.divide(*_compute(total, weight)).astype(data.dtype))
        measure = _register_chunked(
            data, ref, upsample_factor=factor, window=win, normalization=normalization
        )
        (result,) = _compute(measure)
    _warn_skipped(np.isnan(result[:, 0]), stack, dim, "register")
    _warn_undetermined(np.isnan(result[:, 2]) & ~np.isnan(result[:, 0]), stack, dim, win)
    coords: dict[Hashable, Any] = {
        name: c for name, c in stack.coords.items() if c.dims == (dim,) or name == dim
    }
    coords["axis"] = list(_AXES)
    coords["error"] = ((dim,), result[:, 2])
    return xr.DataArray(
        result[:, :2],
        dims=(dim, "axis"),
        coords=coords,
        name="shift",
        attrs={"upsample_factor": factor, "iterations": int(iterations)},
    )


def shift_and_add(
    stack: xr.DataArray,
    shifts: Any,
    *,
    method: Literal["bilinear", "nearest", "fourier"] = "bilinear",
    dim: str = "image",
    out_shape: tuple[int, int] | None = None,
) -> xr.Dataset:
    """Deposit every image at its shifted position and average over the stack (lazy).

    Parameters
    ----------
    stack : xarray.DataArray
        ``(image, y, x[, band])``, any chunking; NaN marks NoData.
    shifts : xarray.DataArray or array-like
        :func:`register`'s output, or an ``(N, 2)`` array of ``(y, x)``
        shifts, one row per image. Pixel ``(y, x)`` of image ``i`` lands at
        ``(y + shifts[i, 0], x + shifts[i, 1])``. A NaN row skips its image.
        The ``N x 2`` numbers are read into memory; shifts beyond
        ``+-2**53`` px are clipped there (the image lands outside the grid
        either way).
    method : {"bilinear", "nearest", "fourier"}, default "bilinear"
        ``"bilinear"``: cloud-in-cell, each valid pixel's value split over
        the four nearest output pixels with sub-pixel weights; ``"nearest"``:
        the whole pixel to the nearest output pixel; ``"fourier"``: each frame
        (NaN -> 0) and its valid mask shifted by the sub-pixel part with the
        Fourier shift theorem (periodic at the frame edges), then placed at
        the whole-pixel offset; the shifted mask is the weight.
    dim : str, default "image"
        The stack dim.
    out_shape : (int, int), optional
        ``(y, x)`` size of the output grid, whose origin is the input's.
        Default: the frames' shape (and the stack's ``y``/``x`` coords). Its
        blocks have the stack's largest y/x chunk (the whole grid for
        ``"fourier"``); at most ``MAX_OUT_BLOCKS`` (1e6) blocks of at most
        ``MAX_BLOCK_BYTES`` (2 GiB) of partial sums each.

    Returns
    -------
    xarray.Dataset
        ``composite``: ``sum(w * v) / sum(w)`` (NaN where no image lands) and
        ``weight``: ``sum(w)`` (coverage, in images), both with the stack's
        dims but ``dim``, lazy, in bigimg's float dtype.

    Raises
    ------
    TypeError
        ``stack`` not a DataArray, ``shifts`` not numeric.
    ValueError
        ``stack`` without ``dim``/``y``/``x``, shifts not ``(N, 2)`` with N the
        stack's length, unknown ``method``, bad or too large ``out_shape``.

    Notes
    -----
    Every (image chunk, output block) pair is one task that reads only the
    input region that can land in that block and returns float64 partial sums
    ``(sum(w*v), sum(w))``; those are summed over the stack by a tree reduction
    (fan-in 8), so memory holds a few frames per worker whatever the stack's
    length. ``fourier`` works on whole frames.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> stack = bi.from_array(np.ones((3, 4, 5, 1), "float32"), chunks={"image": 1})
    >>> out = bi.shift_and_add(stack, [[0, 0], [0, 1], [0.5, 0]])
    >>> out.weight.sel(band=0).values[:2]  # row 0 gets half of image 2's row 0
    array([[1.5, 2.5, 2.5, 2.5, 2.5],
           [2. , 3. , 3. , 3. , 3. ]], dtype=float32)
    >>> float(out.composite.mean())
    1.0
    """
    _check_stack(stack, dim)
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {{'bilinear', 'nearest', 'fourier'}}, got {method!r}"
        )
    values = _check_shifts(shifts, stack, dim)
    frame_shape = (stack.sizes["y"], stack.sizes["x"])
    if out_shape is None:
        shape = frame_shape
    else:
        if (
            not isinstance(out_shape, tuple | list | np.ndarray)
            or np.ndim(out_shape) != 1
            or len(out_shape) != 2
            or not all(
                isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_) and v > 0
                for v in out_shape
            )
        ):
            raise ValueError(f"out_shape must be two positive ints (y, x), got {out_shape!r}")
        shape = (int(out_shape[0]), int(out_shape[1]))
    data = _as_4d(stack, dim)
    if shape == frame_shape:
        out_chunks = (data.chunks[1], data.chunks[2])
    else:
        _check_out_blocks(shape, data, method)
        out_chunks = tuple(
            da.core.normalize_chunks(max(data.chunks[a]), (n,))[0]
            for a, n in ((1, shape[0]), (2, shape[1]))
        )
    _warn_skipped(np.isnan(values).any(axis=1), stack, dim, "shift_and_add")
    total, weight = _shift_and_add_chunked(
        data, values, method=method, out_shape=shape, out_chunks=out_chunks
    )
    dtype = data.dtype
    with np.errstate(invalid="ignore", divide="ignore"):
        composite = da.where(weight > 0, total / da.where(weight > 0, weight, 1), np.nan)
    dims = [d for d in stack.dims if d != dim]
    order = [("y", "x", "band").index(d) for d in dims] if "band" in stack.dims else [0, 1]
    if "band" not in stack.dims:
        composite, weight = composite[..., 0], weight[..., 0]
    composite = composite.astype(dtype).transpose(order)
    weight = weight.astype(dtype).transpose(order)
    keep = {d for d in dims if d == "band" or shape == frame_shape}
    coords = {
        name: c for name, c in stack.coords.items() if set(c.dims) <= keep and dim not in c.dims
    }
    return xr.Dataset(
        {"composite": (dims, composite, stack.attrs), "weight": (dims, weight)},
        coords=coords,
    )


__all__ = ["register", "shift_and_add"]
