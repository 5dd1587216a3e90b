"""ZCA whitening and per-image standardization of image datasets, out of core.

A dataset is a stack of images with a *sample* dim (``"image"`` by default);
every other dim is a *feature* dim. The features of one sample are its pixel
values flattened in C order over the feature dims **in the order they appear
in the input** (``(y, x, band)`` for ``(image, y, x, band)``, ``(band, y, x)``
for ``(image, band, y, x)``). A fitted :class:`ZCA` records the feature dims by
name, so it transforms either layout and the output keeps the input's layout.

Layers, as everywhere in bigimg:

* kernels (``_chunk_moments``, ``_merge_moments``, ``_whiten_block``,
  ``_standardize_block``): plain numpy on one block;
* chunked builders (``_stack_matrix``, ``_fit_moments``, ``_apply_gemm``):
  the only code here that touches dask;
* public API: :class:`ZCA`, :func:`standardize` and the pipeline ops
  ``standardize``, ``zca_fit`` and ``zca_transform``.
"""

from __future__ import annotations

import functools
import io
import json
import math
import numbers
import os
import threading
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr

from bigimg import files
from bigimg._version import __version__
from bigimg.compute import Reduction, one_blas_thread_per_task, reduce_blocks
from bigimg.image import check_image, check_known_sizes, float_dtype, like

MAX_FEATURES = 16_384
"""Largest feature count :class:`ZCA` accepts (a 16,384² float64 covariance is 2 GiB)."""

_NAN_POLICIES = ("raise", "omit")
_FORMAT = "bigimg.ZCA"
_FORMAT_VERSION = 1
_ARRAYS = ("mean", "components", "explained_variance", "whitening")
_MAX_METADATA_CHARS = 2**16
_GEMM_ROWS = 8192  # rows per BLAS product in fit and transform (fewer if features are many)
_SCRATCH_BYTES = 128 * 2**20  # largest per-thread scratch array kept across tasks
_TARGET_CHUNK_BYTES = 256 * 2**20
_Moments = tuple[int, np.ndarray, np.ndarray]  # (n, mean, M2) of some rows
_SPLIT_EVERY = 4  # fan-in of the fit's merge tree: a merge holds 4 features² float64 matrices


# ================================================================ kernels
def _chunk_moments(
    x: np.ndarray,
    *,
    offset: Sequence[int] = (0, 0),
    nan_policy: str = "raise",
    sample_dim: str = "image",
) -> _Moments:
    """``(n, mean, M2)`` of the rows of one ``(samples, features)`` block.

    ``M2 = Σ (x - mean)ᵀ (x - mean)`` is a float64 matrix, upper triangle
    only (the lower one holds garbage). The block is centred on its own mean
    first (so large pixel means cost no precision). float64 input, and
    integers of 32 bits or more (not exact in float32), take one float64 BLAS
    product ``xcᵀ xc`` (numpy hands it to ``syrk``); anything else float32
    products over at most :func:`_gemm_rows` rows at a time, summed into
    ``M2``, redone in float64 if a float32 product overflowed. numpy's matmul,
    not scipy's ``?syrk`` wrapper: the f2py wrapper holds the GIL, which
    serialized dask's threads.

    Rows holding NaN or ±inf raise a ``ValueError`` naming them (``offset``
    is the block's first ``(row, column)`` index), or are dropped under
    ``nan_policy="omit"``.
    """
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            if nan_policy == "raise":
                _raise_nonfinite_rows(x, bad, offset[0], sample_dim)
            x = x[~bad]
    n, f = x.shape
    if n == 0:
        return 0, np.zeros(f, dtype=np.float64), np.zeros((f, f), dtype=np.float64)
    mean = x.mean(axis=0, dtype=np.float64)
    if _needs_float64(x.dtype):  # one float64 product, straight into M2
        xc = x - mean
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: fit raises
            return n, mean, xc.T @ xc
    # a float32 shift's rounding moves M2 by n·δδᵀ, |δ| < 1e-7·|mean|: ignored
    shift = mean.astype(np.float32)
    prod = _scratch("prod", (f, f), np.float32)
    m2 = np.empty((f, f), dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        for i, xc in _centred_slices(x, shift, np.float32):
            np.matmul(xc.T, xc, out=prod)
            if i == 0:
                np.copyto(m2, prod)
            else:
                m2 += prod
    if not np.isfinite(np.diagonal(m2)).all():  # |x - mean| beyond ~1e17: float32 overflowed
        xc = x - mean
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: fit raises
            m2 = xc.T @ xc
    return n, mean, m2


def _raise_nonfinite_rows(x: np.ndarray, bad: np.ndarray, offset: int, sample_dim: str) -> None:
    """The ``ValueError`` of :meth:`ZCA.fit` under ``nan_policy="raise"``: ±inf first, then NaN."""
    rows = np.flatnonzero(bad)
    inf = rows[np.isinf(x[rows]).any(axis=1)]
    if len(inf):
        rows, what = inf, "infinite values (±inf)"
        fix = (
            "infinite values are not NoData: set them to NaN (stack.where(np.isfinite(stack))) "
            "and pass nan_policy='omit' to drop those samples, or fix the data"
        )
    else:
        what, fix = "NaN", "pass nan_policy='omit' to drop them from the fit"
    raise ValueError(
        f"ZCA.fit: {len(rows)} sample(s) along {sample_dim!r} contain {what} "
        f"(first indices: {(rows[:5] + offset).tolist()}); {fix}"
    )


def _needs_float64(dtype: np.dtype) -> bool:
    """float64, or integers that float32 does not hold exactly (32 bits or more)."""
    return dtype == np.float64 or (dtype.kind in "iu" and dtype.itemsize >= 4)


def _centred_slices(
    x: np.ndarray, shift: np.ndarray, dtype: Any
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, x[start:stop] - shift)`` in ``dtype`` for slices of :func:`_gemm_rows` rows.

    Every slice is a view of the same per-thread scratch array, overwritten
    by the next one. The subtraction runs in ``shift``'s dtype when that is
    wider (float64 ``shift`` for wide integers: exact centring, then rounded).
    """
    n, f = x.shape
    rows = _gemm_rows(f, dtype)
    buf = _scratch("centred", (min(n, rows), f), dtype)
    work = np.promote_types(dtype, shift.dtype)
    for start in range(0, n, rows):
        xc = buf[: min(rows, n - start)]
        np.subtract(x[start : start + rows], shift, out=xc, dtype=work, casting="same_kind")
        yield start, xc


def _gemm_rows(f: int, dtype: Any) -> int:
    """Rows per BLAS product: ``_GEMM_ROWS``, fewer if the slice would exceed ``_SCRATCH_BYTES``."""
    return max(1, min(_GEMM_ROWS, _SCRATCH_BYTES // (f * np.dtype(dtype).itemsize)))


_THREAD_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialized ``shape`` array that later calls in the same thread reuse.

    Freshly touched memory is the slow part of a task here (page faults at a
    fraction of the memory bandwidth), so fit and transform keep their
    scratch across tasks instead of mapping it anew every time. A thread
    keeps one array per ``(name, dtype)``, and only arrays of at most
    ``_SCRATCH_BYTES``: for 3,072 features, 96 MiB of centred rows and a
    36 MiB product.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape)
    cache = cast("dict[tuple[str, str], np.ndarray]", _THREAD_SCRATCH.__dict__)
    buf = cache.get((name, dtype.str))
    if buf is None or buf.size < size:
        buf = np.empty(size, dtype)
        if buf.nbytes <= _SCRATCH_BYTES:
            cache[(name, dtype.str)] = buf
    return buf[:size].reshape(shape)


def _merge_moments(
    parts: Sequence[_Moments],
) -> _Moments:
    """Chan et al.'s pairwise update of ``(n, mean, M2)`` triples.

    Accumulates into the first non-empty part's ``M2`` in place (each part
    feeds exactly one merge of the tree; a read-only one is copied first),
    with a BLAS rank-1 update for the mean-difference term: no new
    ``features²`` array per part.
    """
    from scipy.linalg.blas import dger

    n, mean, m2 = parts[0]
    for nb, meanb, m2b in parts[1:]:
        if nb == 0:
            continue
        if n == 0:
            n, mean, m2 = nb, meanb, m2b
            continue
        total = n + nb
        delta = meanb - mean
        if not m2.flags.writeable:  # e.g. received from another worker
            m2 = m2.copy()
        m2 += m2b
        # M2 is C-ordered, so M2ᵀ is Fortran-ordered and updated in place
        updated = dger(n * nb / total, delta, delta, a=m2.T, overwrite_a=True)
        if not np.shares_memory(updated, m2):
            m2.T[...] = updated
        mean = mean + delta * (nb / total)
        n = total
    return n, mean, m2


def _whiten_block(x: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``(x - mean) @ matrix`` in ``matrix``'s dtype: GEMMs straight into the output.

    The centred rows go to per-thread scratch (:func:`_centred_slices`), so
    the only new memory is the result. ``mean`` is float64: wide integers are
    centred exactly, everything else on ``mean`` rounded to ``matrix``'s
    dtype. A row holding NaN or ±inf comes out all NaN.
    """
    if not _needs_float64(x.dtype):
        mean = mean.astype(matrix.dtype)
    out = np.empty((x.shape[0], matrix.shape[1]), dtype=matrix.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        for start, xc in _centred_slices(x, mean, matrix.dtype):
            dst = out[start : start + len(xc)]
            np.matmul(xc, matrix, out=dst)
            dst[~np.isfinite(xc.sum(axis=1, dtype=np.float64))] = np.nan
    return out


def _unwhiten_block(x: np.ndarray, matrix: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """``x @ matrix + mean`` in ``matrix``'s dtype: one GEMM; rows with NaN or ±inf all NaN."""
    x = np.asarray(x, dtype=matrix.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        out = x @ matrix
        out += mean.astype(matrix.dtype)
        out[~np.isfinite(x.sum(axis=1, dtype=np.float64))] = np.nan
    return out


def _eig_whitening(m2: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending, clipped at 0) and eigenvectors as rows of ``M2 / (count - 1)``.

    Only the upper triangle of the C-ordered ``m2`` is read, and ``m2`` is
    destroyed: LAPACK works in place on its Fortran-ordered transpose, whose
    lower triangle that is. ``syevd`` (divide and conquer, what
    :func:`numpy.linalg.eigh` uses): measured here 2.9 s against 3.7 s for
    ``syevr`` on a 3072² float64 covariance.
    """
    from scipy.linalg import eigh

    m2 /= count - 1
    evals, evecs = eigh(m2.T, lower=True, driver="evd", overwrite_a=True, check_finite=False)
    order = slice(None, None, -1)
    return np.clip(evals[order], 0.0, None), np.ascontiguousarray(evecs[:, order].T)


def _symmetric_power(
    components: np.ndarray, evals: np.ndarray, eps: float, power: float
) -> np.ndarray:
    """``U diag((λ + eps) ** power) Uᵀ`` with ``U = components.T``.

    Written ``A Aᵀ`` with ``A = U diag((λ + eps) ** (power / 2))``, which numpy's
    matmul hands to BLAS ``syrk``: half the flops of a general product.
    """
    half = components.T * (evals + eps) ** (power / 2)
    return half @ half.T


def _image_stats(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image float64 ``mean``, population ``std`` and valid ``count`` over ``axes``.

    Reduced axes are kept as size 1. NaN pixels do not count; ±inf (or values
    whose squares overflow float64) make ``mean`` or ``std`` non-finite.
    """
    x64 = np.asarray(x, dtype=np.float64)
    valid = ~np.isnan(x64)
    count = valid.sum(axis=axes, keepdims=True)
    safe = np.maximum(count, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.where(valid, x64, 0.0).sum(axis=axes, keepdims=True) / safe
        dev = np.where(valid, x64 - mean, 0.0)
        std = np.sqrt((dev * dev).sum(axis=axes, keepdims=True) / safe)
    return mean, std, count


def _inv_sqrt_count(count: Any) -> Any:
    """``1/sqrt(N)``, ``inf`` where ``N == 0`` (numpy or dask, no warning)."""
    return 1.0 / np.sqrt(np.maximum(count, 1)) + np.where(count == 0, np.inf, 0.0)


def _checked_denominator(
    mean: np.ndarray,
    std: np.ndarray,
    count: np.ndarray,
    has_inf: np.ndarray | None = None,
    *,
    names: tuple[str | None, ...],
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """``max(std, 1/sqrt(N))``, or a ``ValueError`` naming the first image whose stats are not finite.

    ``names`` holds the dim name of every axis, ``None`` for the reduced
    ones; ``block_info`` (from dask) gives the block's position, so the error
    names the image by its index in the whole array. ``has_inf`` tells ±inf
    from overflow (both are reported as such).
    """
    bad = ~(np.isfinite(mean) & np.isfinite(std))
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        starts = (
            [0] * bad.ndim
            if block_info is None
            else [a for a, _ in block_info[0]["array-location"]]
        )
        where = {n: int(i + o) for n, i, o in zip(names, idx, starts, strict=True) if n is not None}
        image = f"the image at {where}" if where else "the image"
        if has_inf is None or has_inf[idx]:
            raise ValueError(
                f"standardize: obj holds infinite values (±inf) in {image}; they are not NoData "
                "(NaN is): set them to NaN first, e.g. obj.where(np.isfinite(obj))"
            )
        raise ValueError(
            f"standardize: obj holds values too large for float64 statistics in {image} "
            "(their squares overflow); rescale obj first"
        )
    return np.maximum(std, _inv_sqrt_count(count))


def _standardize_block(
    x: np.ndarray,
    axes: tuple[int, ...],
    out_dtype: np.dtype,
    *,
    names: tuple[str | None, ...] | None = None,
    block_info: dict[Any, Any] | None = None,
) -> np.ndarray:
    """``(x - mean) / max(std, 1/sqrt(N))`` over ``axes``, NaN ignored and kept.

    ±inf raise a ``ValueError`` (see :func:`_checked_denominator`; ``names``
    defaults to ``axis0``, ``axis1``, ... for the axes not reduced).
    """
    if names is None:
        names = tuple(None if a in axes else f"axis{a}" for a in range(x.ndim))
    mean, std, count = _image_stats(x, axes)
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        has_inf = np.isinf(x).any(axis=axes, keepdims=True)
        _checked_denominator(mean, std, count, has_inf, names=names, block_info=block_info)
    denom = np.maximum(std, _inv_sqrt_count(count))
    return ((np.asarray(x, dtype=np.float64) - mean) / denom).astype(out_dtype)


# ================================================================ chunked builders
def _stack_matrix(
    data: Any,
    sample_axis: int,
    feature_axes: Sequence[int],
    *,
    target_bytes: int = _TARGET_CHUNK_BYTES,
) -> da.Array:
    """A dask ``(samples, features)`` matrix: features in one chunk, samples chunked.

    The input's sample chunks are kept unless a merged chunk would exceed
    ``target_bytes``, in which case they are split.
    """
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    arr = arr.transpose((sample_axis, *feature_axes))
    n_features = math.prod(arr.shape[1:])
    itemsize = arr.dtype.itemsize
    sample_chunks: Any = arr.chunks[0]
    if max(sample_chunks) * n_features * itemsize > target_bytes:
        sample_chunks = max(1, target_bytes // (n_features * itemsize))
    arr = arr.rechunk((sample_chunks,) + (-1,) * (arr.ndim - 1))
    return arr.reshape((arr.shape[0], n_features))


def _fit_moments(mat: da.Array, *, nan_policy: str, sample_dim: str) -> _Moments:
    """One pass over ``mat`` (computes): per-chunk moments, tree of Chan merges."""
    moments: Reduction[_Moments, _Moments] = Reduction(
        chunk=functools.partial(_chunk_moments, nan_policy=nan_policy, sample_dim=sample_dim),
        combine=_merge_moments,
        with_offset=True,
    )
    with one_blas_thread_per_task():
        (result,) = dask.compute(
            reduce_blocks(mat, moments, split_every=_SPLIT_EVERY, name="zca-moments")
        )
    return result


def _apply_gemm(mat: da.Array, matrix: np.ndarray, mean: np.ndarray, *, inverse: bool) -> da.Array:
    """Lazy ``(mat - mean) @ matrix`` (or ``mat @ matrix + mean``), one GEMM per sample chunk."""
    dtype = matrix.dtype
    matrix_d = da.from_array(matrix, chunks=-1)
    mean_d = da.from_array(mean.astype(np.float64), chunks=-1)
    if inverse:
        args: tuple[Any, ...] = (_unwhiten_block, "ij", mat, "ik", matrix_d, "kj", mean_d, "j")
    else:
        args = (_whiten_block, "ij", mat, "ik", mean_d, "k", matrix_d, "kj")
    return da.blockwise(*args, dtype=dtype, meta=np.empty((0, 0), dtype=dtype), concatenate=True)


def _standardize_chunked(
    data: da.Array, axes: tuple[int, ...], dtype: np.dtype, names: tuple[str | None, ...]
) -> da.Array:
    """:func:`_standardize_block` for images split across chunks: tree reductions."""
    x64 = data.astype(np.float64)
    count = (~da.isnan(x64)).sum(axis=axes, keepdims=True)
    safe = da.maximum(count, 1)
    mean = da.nansum(x64, axis=axes, keepdims=True) / safe
    dev = x64 - mean
    std = da.sqrt(da.nansum(dev * dev, axis=axes, keepdims=True) / safe)
    has_inf = da.isinf(x64).any(axis=axes, keepdims=True)
    denom = da.map_blocks(
        _checked_denominator,
        mean,
        std,
        count,
        has_inf,
        names=names,
        dtype=np.float64,
        meta=np.empty((0,) * data.ndim, dtype=np.float64),
    )
    return (dev / denom).astype(dtype)


# ================================================================ public API
class ZCA:
    """ZCA ("Mahalanobis") whitening of an image dataset, fitted out of core.

    Parameters
    ----------
    eps : float, default 1e-5
        Regularization added to every eigenvalue:
        ``W = U diag(1 / sqrt(λ + eps)) Uᵀ``. In the data's units squared.
    sample_dim : str, default "image"
        The dim that indexes samples. Every other dim is a feature dim; the
        features are flattened in C order over the feature dims in the order
        they appear in the input given to :meth:`fit`.
    nan_policy : {"raise", "omit"}, default "raise"
        What :meth:`fit` does with samples holding NaN or ±inf: raise a
        ``ValueError`` naming them (±inf reported as infinite values), or
        drop those samples from the fit (±inf treated exactly like NaN).

    Attributes
    ----------
    mean_ : numpy.ndarray, shape (n_features,)
        Per-feature mean (float64).
    components_ : numpy.ndarray, shape (n_features, n_features)
        Eigenvectors of the covariance as rows, by decreasing variance
        (scikit-learn's PCA convention).
    explained_variance_ : numpy.ndarray, shape (n_features,)
        Eigenvalues of the covariance (denominator N-1), decreasing.
    whitening_ : numpy.ndarray, shape (n_features, n_features)
        ``W = U diag(1/sqrt(λ + eps)) Uᵀ``, symmetric; ``transform`` computes
        ``(x - mean_) @ W``.
    n_samples_ : int
        Samples used by the fit (NaN samples excluded under ``"omit"``).
    feature_dims_ : tuple of str
        Names of the feature dims, in flattening order.
    feature_shape_ : tuple of int
        Their sizes.
    dtype_ : numpy.dtype
        The fitted input's dtype.

    Notes
    -----
    :meth:`fit` reads the data once: each chunk along ``sample_dim`` yields
    its count, float64 mean and centred cross-product matrix ``Xcᵀ Xc`` (a
    BLAS GEMM; float32 for data that float32 holds exactly, over at most
    8192 rows at a time, summed in float64; float64 for float64 data and
    integers of 32 bits or more), and a tree of merges combines them with the
    pairwise update of Chan, Golub & LeVeque. Centring each chunk on its own
    mean keeps the result within about 1e-6 of a float64 two-pass
    computation even when pixel means are large. The covariance is then
    decomposed with :func:`numpy.linalg.eigh` in float64.

    :meth:`transform` and :meth:`inverse_transform` are lazy: one GEMM per
    chunk along ``sample_dim`` (features gathered into one chunk), in float32
    unless the input is float64 (integers of 32 bits or more are centred
    in float64 first). A sample holding NaN or ±inf becomes all NaN: NoData,
    whatever ``nan_policy`` says.

    References
    ----------
    .. [1] A. J. Bell and T. J. Sejnowski, "The 'independent components' of
       natural scenes are edge filters", Vision Research 37(23), 1997.
    .. [2] T. F. Chan, G. H. Golub and R. J. LeVeque, "Updating formulae and a
       pairwise algorithm for computing sample variances", 1979.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> rng = np.random.default_rng(0)
    >>> arr = rng.normal(size=(200, 4, 4, 1)).cumsum(axis=1).astype("float32")
    >>> stack = bi.from_array(arr, chunks={"image": 50})
    >>> zca = bi.ZCA(eps=1e-6).fit(stack)
    >>> white = zca.transform(stack)  # lazy
    >>> white.dims == stack.dims, white.dtype
    (True, dtype('float32'))
    >>> flat = white.values.reshape(200, -1)
    >>> bool(np.allclose(np.cov(flat, rowvar=False), np.eye(16), atol=1e-3))
    True
    """

    eps: float
    sample_dim: str
    nan_policy: str

    def __init__(
        self,
        eps: float = 1e-5,
        *,
        sample_dim: str = "image",
        nan_policy: Literal["raise", "omit"] = "raise",
    ) -> None:
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool):
            raise TypeError(f"eps must be a number, got {eps!r}")
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be finite and >= 0, got {eps!r}")
        if not isinstance(sample_dim, str):
            raise TypeError(f"sample_dim must be a str, got {sample_dim!r}")
        if nan_policy not in _NAN_POLICIES:
            raise ValueError(f"nan_policy must be one of {{'raise', 'omit'}}, got {nan_policy!r}")
        self.eps = float(eps)
        self.sample_dim = sample_dim
        self.nan_policy = nan_policy
        self._dewhitening: np.ndarray | None = None

    def __repr__(self) -> str:
        fitted = (
            f", fitted on {dict(zip(self.feature_dims_, self.feature_shape_, strict=True))}"
            if self.is_fitted
            else ""
        )
        return f"ZCA(eps={self.eps!r}, sample_dim={self.sample_dim!r}, nan_policy={self.nan_policy!r}{fitted})"

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "whitening_")

    # ------------------------------------------------------------ fit
    def fit(self, stack: xr.DataArray) -> ZCA:
        """Fit mean and whitening matrix on ``stack`` (computes: one pass).

        Parameters
        ----------
        stack : xarray.DataArray
            Has ``sample_dim`` and at least one feature dim; numpy- or
            dask-backed, any chunking.

        Returns
        -------
        ZCA
            ``self``, fitted.

        Raises
        ------
        TypeError
            ``stack`` is not a DataArray, not numeric, or has a dim name
            that is not a str.
        ValueError
            ``sample_dim`` is missing, fewer than 2 samples, no feature dim,
            more than 16,384 features, unknown chunk sizes (all raised before
            any compute); after the pass, a sample holds NaN or ±inf under
            ``nan_policy="raise"`` (the message names the first ones, in the
            first chunk holding any), fewer than 2 samples left, values
            whose squares overflow float64, or a singular covariance with
            ``eps=0`` (smallest eigenvalue within numpy's ``matrix_rank``
            tolerance of 0).
        """
        feature_dims = self._check_input(stack, "stack")
        n = stack.sizes[self.sample_dim]
        if n < 2:
            raise ValueError(
                f"stack has {n} sample(s) along sample_dim={self.sample_dim!r}; ZCA needs at least 2"
            )
        shape = tuple(stack.sizes[d] for d in feature_dims)
        n_features = math.prod(shape)
        if n_features > MAX_FEATURES:
            raise ValueError(
                f"stack has {n_features} features ({dict(zip(feature_dims, shape, strict=True))}); "
                f"ZCA supports at most {MAX_FEATURES} (the covariance is features x features). "
                "Whiten patches (e.g. tile y and x into a new sample dim) or coarsen the images first"
            )
        mat = _stack_matrix(
            stack.data, stack.get_axis_num(self.sample_dim), stack.get_axis_num(feature_dims)
        )
        count, mean, m2 = _fit_moments(mat, nan_policy=self.nan_policy, sample_dim=self.sample_dim)
        if count < 2:
            raise ValueError(
                f"stack has {count} sample(s) without NaN or ±inf along {self.sample_dim!r}; "
                "ZCA needs at least 2"
            )
        if not (np.isfinite(mean).all() and np.isfinite(np.diagonal(m2)).all()):
            raise ValueError(
                "stack holds values too large for a float64 covariance (its squares overflow); "
                "rescale the data first"
            )
        evals, comps = _eig_whitening(m2, count)
        tol = evals[0] * len(evals) * np.finfo(np.float64).eps  # numpy.linalg.matrix_rank's
        if self.eps == 0 and evals[-1] <= tol:
            raise ValueError(
                f"the covariance is singular (smallest eigenvalue {evals[-1]:.3g} <= {tol:.3g}: "
                "constant or linearly dependent features, or fewer samples than features); "
                "pass eps > 0"
            )
        self.mean_ = mean
        self.components_ = comps
        self.explained_variance_ = evals
        self.whitening_ = _symmetric_power(comps, evals, self.eps, -0.5)
        self.n_samples_ = int(count)
        self.feature_dims_ = tuple(str(d) for d in feature_dims)
        self.feature_shape_ = shape
        self.dtype_ = np.dtype(stack.dtype)
        self._dewhitening = None
        return self

    def fit_transform(self, stack: xr.DataArray) -> xr.DataArray:
        """:meth:`fit` (computes) then the lazy :meth:`transform` of the same ``stack``."""
        return self.fit(stack).transform(stack)

    # ------------------------------------------------------------ transform
    def transform(self, stack: xr.DataArray) -> xr.DataArray:
        """Whiten ``stack``: ``(x - mean_) @ whitening_`` per sample (lazy).

        Parameters
        ----------
        stack : xarray.DataArray
            Same feature dims and sizes as the fitted data, in any order.

        Returns
        -------
        xarray.DataArray
            Same dims, order, coords and attrs as ``stack``; float32 unless
            ``stack`` is float64. Chunked along ``sample_dim`` like ``stack``
            (its chunks are split if needed), feature dims in one chunk. A
            sample holding NaN or ±inf is all NaN.

        Raises
        ------
        ValueError
            Not fitted, ``sample_dim`` missing, or other feature dims/sizes.
        """
        return self._apply(stack, inverse=False)

    def inverse_transform(self, stack: xr.DataArray) -> xr.DataArray:
        """Undo :meth:`transform`: ``x @ W⁻¹ + mean_`` (lazy).

        ``W⁻¹ = U diag(sqrt(λ + eps)) Uᵀ``; parameters, returns and errors as
        in :meth:`transform`.
        """
        return self._apply(stack, inverse=True)

    def _apply(self, stack: xr.DataArray, *, inverse: bool) -> xr.DataArray:
        if not self.is_fitted:
            raise ValueError("this ZCA is not fitted yet; call fit(stack) or ZCA.load(path) first")
        feature_dims = self._check_input(stack, "stack")
        if set(feature_dims) != set(self.feature_dims_) or any(
            stack.sizes[d] != s
            for d, s in zip(self.feature_dims_, self.feature_shape_, strict=True)
        ):
            got = {str(d): stack.sizes[d] for d in feature_dims}
            want = dict(zip(self.feature_dims_, self.feature_shape_, strict=True))
            raise ValueError(
                f"stack has feature dims {got}, but this ZCA was fitted on {want} "
                f"(sample_dim={self.sample_dim!r})"
            )
        dtype = float_dtype(stack.dtype)
        mat = _stack_matrix(
            stack.data, stack.get_axis_num(self.sample_dim), stack.get_axis_num(self.feature_dims_)
        )
        if inverse:
            if self._dewhitening is None:
                self._dewhitening = _symmetric_power(
                    self.components_, self.explained_variance_, self.eps, 0.5
                )
            matrix = self._dewhitening
        else:
            matrix = self.whitening_
        out = _apply_gemm(mat, matrix.astype(dtype), self.mean_, inverse=inverse)
        order = (self.sample_dim, *self.feature_dims_)
        out = out.reshape((out.shape[0], *self.feature_shape_))
        out = out.transpose([order.index(d) for d in stack.dims])
        return like(stack, out)

    def _check_input(self, stack: Any, name: str) -> tuple[str, ...]:
        check_image(stack, name, required=())
        if not all(isinstance(d, str) for d in stack.dims):
            raise TypeError(
                f"{name}'s dims must be str (they name the features), got {stack.dims!r}"
            )
        check_known_sizes(stack, name)
        if self.sample_dim not in stack.dims:
            raise ValueError(
                f"sample_dim={self.sample_dim!r} is not a dim of {name}; it has dims {stack.dims!r}"
            )
        if stack.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {stack.dtype}")
        feature_dims = tuple(d for d in stack.dims if d != self.sample_dim)
        if not feature_dims:
            raise ValueError(
                f"{name} has only sample_dim={self.sample_dim!r}; it needs feature dims too"
            )
        return feature_dims

    # ------------------------------------------------------------ persistence
    def save(
        self,
        path: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        what: str = "path",
        storage_options: Mapping[str, Any] | None = None,
    ) -> Path | str:
        """Write the fitted model to exactly ``path`` (an ``.npz`` archive), a file or a URL.

        The archive holds ``mean``, ``components``, ``explained_variance``,
        ``whitening`` (float64, uncompressed) and a JSON ``metadata`` string
        (format and format_version, eps, sample_dim, nan_policy, feature dims
        and shape, dtype, n_samples); it never uses pickle, nor records any
        storage option. A local file is written under a temporary name in the
        same folder and renamed to ``path`` when complete; an object at a URL
        (``s3://bucket/model.npz``, ``memory://...``, any fsspec filesystem)
        is sent in one put of the finished archive, which an object store
        applies atomically (:func:`bigimg.files.new_object`).

        Parameters
        ----------
        path : str or os.PathLike
            The file to write, exactly (no suffix is added), or a URL.
        overwrite : bool, default False
            Replace an existing file or object at ``path``.
        what : str, default "path"
            The name of the argument or config key, for error messages.
        storage_options : dict, optional
            fsspec options for a URL (endpoint, credentials, ...); never
            printed or stored. Not for a local path.

        Returns
        -------
        pathlib.Path or str
            The local path (``~`` expanded), or the URL as given.

        Raises
        ------
        ValueError
            This ZCA is not fitted, or ``storage_options`` given for a local
            path.
        TypeError
            ``path`` is not a str or path.
        FileExistsError
            ``path`` exists and ``overwrite`` is false.
        IsADirectoryError
            ``path`` is a folder (never replaced).
        FileNotFoundError
            ``path``'s folder does not exist (local paths).
        OSError
            A URL's storage cannot be reached or refuses the write (one line,
            naming the URL, never the storage options).
        """
        if not self.is_fitted:
            raise ValueError("this ZCA is not fitted yet; nothing to save")
        target = _as_target(path, what)
        meta = {
            "format": _FORMAT,
            "format_version": _FORMAT_VERSION,
            "bigimg_version": __version__,
            "eps": self.eps,
            "sample_dim": self.sample_dim,
            "nan_policy": self.nan_policy,
            "feature_dims": list(self.feature_dims_),
            "feature_shape": list(self.feature_shape_),
            "dtype": self.dtype_.str,
            "n_samples": self.n_samples_,
        }
        with files.new_object(
            target, overwrite=overwrite, what=what, storage_options=storage_options
        ) as fh:  # a file object: numpy appends no ".npz"
            np.savez(
                fh,
                metadata=np.array(json.dumps(meta)),
                **{name: getattr(self, name + "_") for name in _ARRAYS},
            )
        return target

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        what: str = "path",
        storage_options: Mapping[str, Any] | None = None,
    ) -> ZCA:
        """Read a model written by :meth:`save` at exactly ``path`` (a file or a URL).

        Every array's ``.npy`` header (dtype and shape) is checked against the
        metadata before the array is read, so a damaged or hostile file never
        makes this allocate more than the file holds, nor unpickle anything.
        A URL (``s3://bucket/model.npz``, any fsspec filesystem) is read whole
        with ``storage_options``. Errors name ``what`` (the argument or config
        key that gave the path) and never the storage options.

        Parameters
        ----------
        path : str or os.PathLike
            The model file, or its URL.
        what : str, default "path"
            The name of the argument or config key, for error messages.
        storage_options : dict, optional
            fsspec options for a URL (endpoint, credentials, ...). Not for a
            local path.

        Raises
        ------
        TypeError
            ``path`` is not a str or path.
        FileNotFoundError
            No such file or object.
        IsADirectoryError
            ``path`` is a folder.
        ValueError
            The file is not a bigimg ZCA model (not a zip archive, truncated,
            a member or metadata key missing or of the wrong type, shapes or
            dtypes that disagree with the metadata, non-finite values, or a
            ``format_version`` this bigimg does not read); the message names
            the file and what is wrong. Also ``storage_options`` given for a
            local path.
        OSError
            A URL's storage cannot be reached or refuses the read (one line).
        """
        target = _as_target(path, what)
        source: Path | io.BytesIO
        if isinstance(target, Path):
            files.check_local_only(target, storage_options, what)
            if target.is_dir():
                raise IsADirectoryError(
                    f"{what}: {str(target)!r} is a folder, not a ZCA model file"
                )
            if not target.is_file():
                raise FileNotFoundError(f"{what}: no such ZCA model file: {str(target)!r}")
            source, size, shown = target, target.stat().st_size, str(target)
        else:
            blob = files.read_object(
                target, what=what, kind="ZCA model file", storage_options=storage_options
            )
            source, size, shown = io.BytesIO(blob), len(blob), files.redact(target)
        try:
            with zipfile.ZipFile(source) as zf:
                text = _read_member(zf, size, "metadata", None, np.dtype("U"))
                meta = _check_metadata(_parse_json(str(text)))
                f = math.prod(meta["feature_shape"])
                shapes = {
                    "mean": (f,),
                    "components": (f, f),
                    "explained_variance": (f,),
                    "whitening": (f, f),
                }
                arrays = {
                    name: _read_member(zf, size, name, shapes[name], np.dtype(np.float64))
                    for name in _ARRAYS
                }
        except zipfile.BadZipFile as e:
            raise ValueError(
                f"{what}: {shown!r} is not a bigimg ZCA model: not an .npz (zip) archive, "
                f"or a truncated or damaged one ({e})"
            ) from None
        except (ValueError, EOFError, zlib.error, NotImplementedError) as e:
            raise ValueError(f"{what}: {shown!r} is not a bigimg ZCA model: {e}") from None
        for name, arr in arrays.items():
            if not np.isfinite(arr).all():
                raise ValueError(
                    f"{what}: {shown!r} is not a usable ZCA model: {name!r} holds NaN or ±inf"
                )
        if (arrays["explained_variance"] < 0).any():
            raise ValueError(
                f"{what}: {shown!r} is not a usable ZCA model: "
                "'explained_variance' holds negative values"
            )
        self = cls(meta["eps"], sample_dim=meta["sample_dim"], nan_policy=meta["nan_policy"])
        for name, arr in arrays.items():
            setattr(self, name + "_", arr)
        self.n_samples_ = meta["n_samples"]
        self.feature_dims_ = tuple(meta["feature_dims"])
        self.feature_shape_ = tuple(meta["feature_shape"])
        self.dtype_ = meta["dtype"]
        return self


def _as_target(path: Any, what: str) -> Path | str:
    """A URL as given, else a :class:`~pathlib.Path` with ``~`` expanded; ``TypeError`` naming ``what``."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{what} must be a str or os.PathLike, got {type(path).__name__}")
    text = os.fspath(path)
    if files.is_url(text):
        return text
    return Path(os.path.expanduser(text))


def _read_member(
    zf: zipfile.ZipFile,
    size: int,
    name: str,
    shape: tuple[int, ...] | None,
    dtype: np.dtype,
) -> np.ndarray:
    """Array ``name`` of a model archive, after checking its ``.npy`` header.

    ``shape`` ``None`` means a 0-d string (the metadata, at most
    ``_MAX_METADATA_CHARS`` long). Raises ``ValueError`` (the reason only)
    before anything is allocated when the member is missing, compressed,
    larger than the file holds, or of another dtype or shape.
    """
    try:
        info = zf.getinfo(name + ".npy")
    except KeyError:
        raise ValueError(f"it has no {name!r} array") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"its {name!r} array is compressed (bigimg writes models uncompressed)")
    if info.header_offset + info.compress_size > size:
        raise ValueError(f"its {name!r} array runs past the end of the file (truncated?)")
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            got_shape, _, got_dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            got_shape, _, got_dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"its {name!r} array has .npy format version {version}")
        header_bytes = fh.tell()
    if shape is None:  # the metadata: a 0-d unicode string
        ok = (
            got_dtype.kind == "U"
            and got_shape == ()
            and got_dtype.itemsize <= 4 * _MAX_METADATA_CHARS
        )
        want = f"a str of at most {_MAX_METADATA_CHARS} characters"
    else:
        ok = got_dtype.kind == dtype.kind and got_dtype.itemsize == dtype.itemsize
        ok = ok and got_shape == shape
        want = f"{dtype} of shape {shape} (from the metadata)"
    if not ok:
        raise ValueError(f"its {name!r} array is {got_dtype} of shape {got_shape}, expected {want}")
    if info.file_size != header_bytes + math.prod(got_shape) * got_dtype.itemsize:
        raise ValueError(f"its {name!r} array's size disagrees with its header")
    with zf.open(info) as fh:
        arr = np.lib.format.read_array(fh, allow_pickle=False)
    return arr if shape is None else arr.astype(dtype, copy=False)


def _check_metadata(meta: Any) -> dict[str, Any]:
    """The model's metadata, validated and normalized; ``ValueError`` (the reason) otherwise."""
    if not isinstance(meta, dict):
        raise ValueError(f"its metadata is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != _FORMAT:
        raise ValueError(f"its metadata format is {meta.get('format')!r}, not {_FORMAT!r}")
    version = meta.get("format_version")
    if version != _FORMAT_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) and version > 1
        hint = f" (written by bigimg {meta.get('bigimg_version')}; upgrade bigimg)" if newer else ""
        raise ValueError(
            f"its format_version is {version!r}{hint}; this bigimg reads format_version "
            f"{_FORMAT_VERSION} only"
        )
    keys = (
        "eps",
        "sample_dim",
        "nan_policy",
        "feature_dims",
        "feature_shape",
        "dtype",
        "n_samples",
    )
    missing = [k for k in keys if k not in meta]
    if missing:
        raise ValueError(f"its metadata lacks key(s) {missing}")
    try:
        ZCA(meta["eps"], sample_dim=meta["sample_dim"], nan_policy=meta["nan_policy"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"its metadata is invalid: {e}") from None
    dims, shape, n = meta["feature_dims"], meta["feature_shape"], meta["n_samples"]
    if not (isinstance(dims, list) and dims and all(isinstance(d, str) for d in dims)):
        raise ValueError(f"its feature_dims must be a non-empty list of str, got {dims!r}")
    if len(set(dims)) != len(dims) or meta["sample_dim"] in dims:
        raise ValueError(
            f"its feature_dims {dims!r} repeat a dim or hold sample_dim {meta['sample_dim']!r}"
        )
    if not (
        isinstance(shape, list)
        and len(shape) == len(dims)
        and all(_is_int(s) and s >= 1 for s in shape)
    ):
        raise ValueError(
            f"its feature_shape must be {len(dims)} positive int(s), one per feature dim, got {shape!r}"
        )
    if math.prod(shape) > MAX_FEATURES:
        raise ValueError(f"its feature_shape {shape} has more than {MAX_FEATURES} features")
    if not (_is_int(n) and n >= 2):
        raise ValueError(f"its n_samples must be an int >= 2, got {n!r}")
    try:
        dtype = np.dtype(meta["dtype"]) if isinstance(meta["dtype"], str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise ValueError(f"its dtype must name a real numeric dtype, got {meta['dtype']!r}")
    return {**meta, "feature_shape": [int(s) for s in shape], "dtype": dtype}


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as e:
        raise ValueError(f"its metadata is not JSON ({e})") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def standardize(
    obj: xr.DataArray, *, dims: str | Iterable[str] = ("y", "x", "band")
) -> xr.DataArray:
    """Per-image standardization: ``(v - mean) / max(std, 1/sqrt(N))`` (lazy).

    Parameters
    ----------
    obj : xarray.DataArray
        An image or a stack; NaN marks NoData.
    dims : str or sequence of str, default ("y", "x", "band")
        The dims each mean and std run over; one result per index of the
        other dims (e.g. per ``image``). On an image without ``band`` (a
        plain 2-D DataArray), the default is ``("y", "x")``.

    Returns
    -------
    xarray.DataArray
        Same dims, chunks, coords and attrs; float32 unless ``obj`` is
        float64. NaN stays NaN and never enters the statistics.

    Raises
    ------
    TypeError
        ``obj`` is not a DataArray of real numbers, or ``dims`` is not str(s).
    ValueError
        ``dims`` is empty, repeats a dim, or names a dim ``obj`` lacks, or
        ``obj`` has unknown chunk sizes (all before any compute). When
        computed: an image holds ±inf, or values whose squares overflow
        float64; the message names the image by its index along the dims
        not in ``dims`` (e.g. ``{'image': 13}``).

    Notes
    -----
    TensorFlow's ``tf.image.per_image_standardization`` formula: ``N`` counts
    the valid pixels, ``std`` is the population std (ddof=0), and the floor
    ``1/sqrt(N)`` keeps a constant image finite (it becomes all zeros).
    NaN is NoData; ±inf is not, and is an error rather than a silently
    all-NaN image: mark such pixels NoData first with
    ``obj.where(np.isfinite(obj))``.
    Statistics are computed in float64. When the chunks along ``dims`` already
    hold whole images this is one ``map_blocks``; otherwise the chunks along
    ``dims`` are merged first (a per-image statistic needs the whole image).

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> img = bi.from_array(np.array([[0.0, 2.0], [4.0, np.nan]]))
    >>> bi.standardize(img).values[..., 0].round(4)
    array([[-1.2247,  0.    ],
           [ 1.2247,     nan]])
    """
    if isinstance(dims, str):
        dims = (dims,)
    if not isinstance(dims, Iterable):
        raise TypeError(f"dims must be a str or a sequence of str, got {dims!r}")
    dims = tuple(dims)
    if not all(isinstance(d, str) for d in dims):
        raise TypeError(f"dims must be a str or a sequence of str, got {dims!r}")
    if not dims:
        raise ValueError("dims must name at least one dim, got ()")
    if len(set(dims)) != len(dims):
        raise ValueError(f"dims must not repeat a dim, got {dims!r}")
    check_image(obj, "obj", required=())
    check_known_sizes(obj, "obj")
    if dims == ("y", "x", "band") and "band" not in obj.dims:  # the default, on a 2-D image
        dims = ("y", "x")
    missing = [d for d in dims if d not in obj.dims]
    if missing:
        raise ValueError(f"dims names dim(s) {missing!r} that obj lacks; obj has dims {obj.dims!r}")
    if obj.dtype.kind not in "biuf":
        raise TypeError(f"obj must hold real numbers, got dtype {obj.dtype}")
    dtype = float_dtype(obj.dtype)
    axes = tuple(sorted(obj.get_axis_num(dims)))
    names = tuple(None if d in dims else str(d) for d in obj.dims)
    data = obj.data if isinstance(obj.data, da.Array) else da.asarray(obj.data)
    if all(len(data.chunks[a]) == 1 for a in axes):  # whole images per chunk: one pass
        out = da.map_blocks(
            _standardize_block,
            data,
            axes=axes,
            out_dtype=dtype,
            names=names,
            dtype=dtype,
            meta=np.empty((0,) * data.ndim, dtype=dtype),
        )
    else:
        out = _standardize_chunked(data, axes, dtype, names)
    return like(obj, out)
