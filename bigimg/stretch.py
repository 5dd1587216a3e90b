"""Gaussian stretch: map values through the normal CDF of each band.

``out = out_min + (out_max - out_min) * ndtr((v - mean) / (n * std))`` with
the exact normal CDF (:func:`scipy.special.ndtr`). Layers: the numpy kernels
(``_stretch_kernel``; the per-band moments ``_band_moments``,
``_merge_band_moments`` and ``_mean_std``, a chunk -> combine -> finalize
:class:`~bigimg.compute.Reduction`; the check ``_checked_stats``), the lazy
statistics and graph wiring in :func:`_band_stats`, and the public
:func:`gaussian_stretch`.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import scipy.special
import xarray as xr
from dask.base import tokenize
from dask.graph_manipulation import bind

from bigimg.compute import Reduction, reduce_blocks
from bigimg.image import check_image, float_dtype, like

_Moments = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


# ---------------------------------------------------------------- kernels
def _stretch_kernel(
    v: np.ndarray, mean: np.ndarray, std: np.ndarray, *, n: float, lo: float, hi: float, dtype: Any
) -> np.ndarray:
    """``lo + (hi - lo) * Phi((v - mean) / (n * std))``, computed in float64."""
    with np.errstate(over="ignore", divide="ignore"):  # a tiny std: z = +-inf, Phi = 0 or 1
        z = (v.astype(np.float64) - mean) / (n * std)
    return (lo + (hi - lo) * scipy.special.ndtr(z)).astype(dtype, copy=False)


def _band_moments(block: np.ndarray, *, axes: tuple[int, ...]) -> _Moments:
    """Per band (``axes`` reduced, kept as length 1): float64 ``(count, mean, M2, n_inf)``.

    ``count`` counts the non-NaN values, ``M2 = Σ (v - mean)²`` over them and
    ``n_inf`` the ±inf ones (which make ``mean`` and ``M2`` non-finite). A
    band with no valid value has ``mean = M2 = 0``.
    """
    x = np.asarray(block, dtype=np.float64)
    valid = ~np.isnan(x)
    count = valid.sum(axis=axes, keepdims=True)
    total = np.where(valid, x, 0.0).sum(axis=axes, keepdims=True)
    with np.errstate(invalid="ignore"):  # inf - inf: n_inf says why
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        dev = np.where(valid, x - mean, 0.0)
    m2 = (dev * dev).sum(axis=axes, keepdims=True)  # overflow warns: _checked_stats raises
    return count, mean, m2, np.isinf(x).sum(axis=axes, keepdims=True)


def _merge_band_moments(parts: list[_Moments]) -> _Moments:
    """Chan et al.'s pairwise update of per-band ``(count, mean, M2, n_inf)``, in order."""
    count, mean, m2, n_inf = parts[0]
    for count_b, mean_b, m2_b, n_inf_b in parts[1:]:
        total = count + count_b
        weight = np.divide(count_b, total, out=np.zeros(total.shape), where=total > 0)
        with np.errstate(invalid="ignore"):  # inf - inf: n_inf says why
            delta = mean_b - mean
            mean = mean + delta * weight
            m2 = m2 + m2_b + delta * delta * (count * weight)
        count, n_inf = total, n_inf + n_inf_b
    return count, mean, m2, n_inf


def _mean_std(part: _Moments) -> np.ndarray:
    """``(mean, std, n_inf, count)`` per band on a trailing axis; population std (ddof=0).

    A band with no valid value gets NaN, with numpy's RuntimeWarning for it.
    """
    count, mean, m2, n_inf = part
    std = np.sqrt(m2 / count)
    return np.stack([np.where(count > 0, mean, np.nan), std, n_inf, count], axis=-1)


def _checked_stats(stats: np.ndarray, *, labels: np.ndarray) -> np.ndarray:
    """``(mean, std)`` rows from :func:`_mean_std`'s ``(band, 4)`` output; raises naming the band."""
    mean, std, n_inf, n_valid = stats.T
    for i, label in enumerate(labels.tolist()):
        if n_inf[i]:
            raise ValueError(
                f"gaussian_stretch: band {label!r} holds {int(n_inf[i])} infinite value(s), "
                "so its mean and std are not finite; mask them as NoData first, e.g. "
                "img.where(np.isfinite(img)), or pass mean= and std="
            )
        if not n_valid[i]:
            raise ValueError(f"gaussian_stretch: band {label!r} has no valid (non-NaN) pixel")
        if not (np.isfinite(mean[i]) and np.isfinite(std[i])):
            raise ValueError(
                f"gaussian_stretch: band {label!r} has mean {float(mean[i])!r} and std "
                f"{float(std[i])!r}: its values are too large for float64 moments; "
                "pass mean= and std="
            )
        if not std[i] > 0:
            raise ValueError(
                f"gaussian_stretch: band {label!r} has std {float(std[i])!r}; std must be > 0 "
                "(a constant band cannot be stretched)"
            )
    return np.stack([mean, std])


# ---------------------------------------------------------------- statistics
def _band_stats(img: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray]:
    """Lazy per-band global nan-mean and nan-std (one chunked pass, checked in the graph)."""
    data = img.data if isinstance(img.data, da.Array) else da.from_array(img.data)
    axes = tuple(i for i, d in enumerate(img.dims) if d != "band")
    nb = img.sizes.get("band", 1)
    moments = Reduction(
        chunk=functools.partial(_band_moments, axes=axes),
        combine=_merge_band_moments,
        finalize=_mean_std,
    )
    per_band = reduce_blocks(
        data, moments, axis=axes, dtype=np.float64, new_axes=(4,), name="band-moments"
    )
    if "band" not in img.dims:
        labels = np.array(["(all)"])
    else:
        labels = np.asarray(img["band"].values if "band" in img.coords else np.arange(nb))
    stats = da.map_blocks(
        _checked_stats,
        per_band.reshape((nb, 4)).rechunk(-1),
        labels=labels,
        chunks=((2,), (nb,)),
        dtype=np.float64,
        meta=np.empty((0, 0), np.float64),
    )
    if "band" not in img.dims:
        return xr.DataArray(stats[0, 0]), xr.DataArray(stats[1, 0])
    coords = {"band": img["band"]} if "band" in img.coords else None
    return (
        xr.DataArray(stats[0], dims=("band",), coords=coords),
        xr.DataArray(stats[1], dims=("band",), coords=coords),
    )


def _as_stat(value: Any, name: str, img: xr.DataArray, *, positive: bool) -> xr.DataArray:
    """A scalar, per-band sequence or DataArray -> DataArray broadcastable against ``img``."""
    if isinstance(value, xr.DataArray):
        unknown = [d for d in value.dims if d not in img.dims]
        if unknown:
            raise ValueError(
                f"{name} has dim(s) {unknown!r} that img lacks; img has dims {img.dims!r}"
            )
        for d in value.dims:
            if value.sizes[d] != img.sizes[d]:
                raise ValueError(
                    f"{name} has {value.sizes[d]} value(s) along {d!r}, img has {img.sizes[d]}"
                )
            if d in value.coords and d in img.coords and not value[d].equals(img[d]):
                raise ValueError(
                    f"{name}'s {d!r} labels {value[d].values.tolist()!r} differ from img's "
                    f"{img[d].values.tolist()!r}"
                )
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold real numbers, got dtype {value.dtype}")
        out = value.astype(np.float64)
        if isinstance(out.data, da.Array):  # checked when computed
            # (dask's Array.map_blocks is typed as da.map_blocks, by functools.wraps)
            checked = out.data.map_blocks(  # type: ignore[call-arg]
                _checked_block,  # type: ignore[arg-type]
                label=name,
                positive=positive,
                dtype=np.float64,
                meta=np.empty((0,) * out.ndim, np.float64),
            )
            return out.copy(data=checked)
        _check_values(np.asarray(out.values), name, positive=positive)
        return out
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        arr = np.asarray(float(value))
        _check_values(arr, name, positive=positive)
        return xr.DataArray(arr)
    if isinstance(value, (Sequence, np.ndarray)) and not isinstance(value, str):
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value):
            raise TypeError(f"{name} must hold numbers, got {value!r}")
        arr = np.asarray(value, dtype=np.float64) if len(value) else np.empty(0)
        nb = img.sizes.get("band", 1)
        if arr.ndim != 1 or len(arr) != nb or "band" not in img.dims:
            raise ValueError(f"{name} must have one value per band ({nb}), got {value!r}")
        _check_values(arr, name, positive=positive)
        return xr.DataArray(arr, dims=("band",))
    raise TypeError(f"{name} must be a number, a per-band sequence or a DataArray, got {value!r}")


def _checked_block(block: np.ndarray, *, label: str, positive: bool) -> np.ndarray:
    _check_values(block, label, positive=positive)
    return block


def _check_values(arr: np.ndarray, name: str, *, positive: bool) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()!r}")
    if positive and not np.all(arr > 0):
        raise ValueError(f"{name} must be > 0, got {arr.tolist()!r}")


# ---------------------------------------------------------------- public API
def gaussian_stretch(
    img: xr.DataArray,
    *,
    mean: Any = None,
    std: Any = None,
    n: float = 1.0,
    out_range: tuple[float, float] = (0.0, 1.0),
) -> xr.DataArray:
    """Stretch values through the normal CDF: ``lo + (hi - lo) * Phi((v - mean) / (n std))``.

    Parameters
    ----------
    img : xarray.DataArray
        Image with ``y`` and ``x`` dims (usually also ``band``).
    mean, std : float, sequence of float or DataArray, optional
        Centre and scale. A scalar applies to every band, a sequence gives
        one value per ``band``, a DataArray broadcasts by dim name. Default:
        each band's global nan-mean and nan-std (population, ``ddof=0``) over
        all other dims, computed lazily inside the graph.
    n : float, default 1.0
        Width of the stretch in standard deviations; must be > 0.
    out_range : (float, float), default (0.0, 1.0)
        ``(out_min, out_max)`` of the output; ``out_min > out_max`` inverts
        the stretch (high values map near ``out_min``).

    Returns
    -------
    xarray.DataArray
        Lazy stretched image, same dims/coords/attrs; float32 unless ``img``
        is float64. NaN stays NaN.

    Raises
    ------
    TypeError
        ``img`` is not a DataArray of real numbers (complex is refused), or
        an option has the wrong type.
    ValueError
        ``std <= 0``, ``n <= 0``, non-finite values (for a lazy DataArray:
        when computed), a per-band sequence or DataArray of the wrong length
        or with other ``band`` labels than ``img``, or ``out_range`` not two
        finite numbers. With the
        default statistics, a band that holds ``+inf``/``-inf`` (its mean and
        std would not be finite: mask them first, e.g.
        ``img.where(np.isfinite(img))``, or pass ``mean`` and ``std``), has
        no valid (non-NaN) pixel, zero spread, or moments too large for
        float64 raises a ValueError naming the band when the result is
        computed (it cannot be known earlier without computing).

    Notes
    -----
    NaN is NoData; infinities are values: with given ``mean`` and ``std``,
    ``+inf`` maps to ``out_max`` and ``-inf`` to ``out_min`` (the limits of
    the CDF), and with the default statistics they are an error (above).

    With the default statistics, the output graph reads ``img`` twice: one
    chunked pass for the per-band moments (float64, merged by Chan et al.'s
    pairwise update in a tree), then the stretch itself, whose input reads
    are bound to run after the statistics. Reading twice keeps memory
    bounded by the chunk size instead of holding the whole image while the
    statistics finish. Pass ``mean``/``std`` to read once.

    Examples
    --------
    >>> import numpy as np, scipy.stats, bigimg as bi
    >>> a = np.random.default_rng(0).normal(10, 2, (32, 32, 3)).astype("float32")
    >>> out = bi.gaussian_stretch(bi.from_array(a, chunks=16), mean=10.0, std=2.0)
    >>> bool(np.allclose(out.values, scipy.stats.norm.cdf(a, 10, 2), atol=1e-6))
    True
    """
    check_image(img)
    if img.dtype.kind not in "biuf":
        raise TypeError(f"img must hold real numbers (bool, int or float), got dtype {img.dtype}")
    if not isinstance(n, numbers.Real) or isinstance(n, bool):
        raise TypeError(f"n must be a number, got {n!r}")
    if not math.isfinite(n) or n <= 0:
        raise ValueError(f"n must be a finite number > 0, got {n!r}")
    try:
        if isinstance(out_range, (str, bytes)):
            raise TypeError
        lo, hi = (float(v) for v in out_range)
    except (TypeError, ValueError):
        raise TypeError(
            f"out_range must be two numbers (out_min, out_max), got {out_range!r}"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"out_range must be two finite numbers, got {out_range!r}")
    dtype = float_dtype(img.dtype)
    mean_da = None if mean is None else _as_stat(mean, "mean", img, positive=False)
    std_da = None if std is None else _as_stat(std, "std", img, positive=True)
    source = img
    if mean_da is None or std_da is None:
        est_mean, est_std = _band_stats(img)
        mean_da = est_mean if mean_da is None else mean_da
        std_da = est_std if std_da is None else std_da
        if isinstance(img.data, da.Array):  # second read of img, after the statistics
            parents = [s.data for s in (mean_da, std_da) if isinstance(s.data, da.Array)]
            # seeded, so the graph's token (a store's fingerprint) is the same in every process
            seed = tokenize(img.data, *parents)
            source = img.copy(data=bind(img.data, parents, seed=seed))
    out = xr.apply_ufunc(
        _stretch_kernel,
        source,
        mean_da,
        std_da,
        kwargs=dict(n=float(n), lo=lo, hi=hi, dtype=dtype),
        dask="parallelized",
        output_dtypes=[dtype],
        keep_attrs=False,
    )
    out = out.transpose(*img.dims)
    if not isinstance(out.data, da.Array):
        out = out.chunk(dict(zip(img.dims, img.chunks or (-1,) * img.ndim, strict=True)))
    return like(img, out.data)
