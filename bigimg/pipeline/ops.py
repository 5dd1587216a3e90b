"""Every pipeline op and input source, registered in this one place.

Adding an op: write the function in its capability module (it knows nothing
of configs), then add its parameter model and one :func:`registry.op` line
below. The model lists the config keys and their types; defaults come from
the function's signature. An op whose function is not ``func(img, **params)``
gets a small adapter here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Annotated, Literal

import xarray as xr
from pydantic import BeforeValidator

from bigimg.adapthist import equalize_adapthist, equalize_adapthist_passes
from bigimg.errors import BigimgWarning
from bigimg.files import check_new_object, is_url
from bigimg.filters import Mode, gaussian_filter
from bigimg.histogram import equalize_hist, equalize_hist_passes
from bigimg.image import with_band
from bigimg.noise import add_noise, correlated_noise
from bigimg.pipeline import registry
from bigimg.pipeline.registry import FloatPair, Params
from bigimg.register import register, shift_and_add
from bigimg.resample import coarsen_mean
from bigimg.stretch import gaussian_stretch
from bigimg.whiten import ZCA, standardize


# ---------------------------------------------------------------- parameter models
def _path_or_url(value: object) -> object:
    """A URL stays a str; any other str becomes a ``Path`` (resolved against the config's folder)."""
    if isinstance(value, str) and not is_url(value):
        return Path(value)
    return value


PathOrUrl = Annotated[Path | str, BeforeValidator(_path_or_url)]
"""A local file (a ``Path``) or a URL such as ``s3://bucket/model.npz`` (a ``str``)."""


class AstypeParams(Params):
    dtype: Literal["float32", "float64"]


class GaussianFilterParams(Params):
    sigma: dict[str, float] | float
    truncate: float
    mode: Mode
    cval: float
    nan_policy: Literal["omit", "propagate"]


class EqualizeHistParams(Params):
    bins: int | list[float]
    exclude: list[float]
    out_range: FloatPair
    dims: list[str] | None
    dtype: Literal["uint8", "uint16"] | None
    nodata: int | None


class EqualizeAdapthistParams(Params):
    kernel_size: dict[str, int] | int | None
    clip_limit: float
    nbins: int
    exclude: list[float]
    dims: list[str]


class GaussianStretchParams(Params):
    mean: list[float] | float | None
    std: list[float] | float | None
    n: float
    out_range: FloatPair


class CoarsenParams(Params):
    factor: dict[str, int] | int


class AddNoiseParams(Params):
    length_scale: dict[str, float] | float
    seed: int
    mean: float
    std: float
    truncate: float


class NoiseParams(Params):
    """``[input] noise = { shape = [1024, 1024], length_scale = 20, seed = 1 }``."""

    shape: list[int] | dict[str, int]
    length_scale: dict[str, float] | float
    seed: int
    mean: float
    std: float
    truncate: float
    dtype: Literal["float32", "float64"]


class StackParams(Params):
    """Register the stack, then shift-and-add it."""

    upsample_factor: float
    band: int | str | None
    window: dict[str, int] | int | None
    iterations: int
    normalization: Literal["phase"] | None
    method: Literal["bilinear", "nearest", "fourier"]


class StandardizeParams(Params):
    dims: list[str]


class ZcaFitParams(Params):
    model: PathOrUrl
    eps: float
    sample_dim: str
    nan_policy: Literal["raise", "omit"]
    transform: bool


class ZcaTransformParams(Params):
    model: PathOrUrl
    inverse: bool


# ---------------------------------------------------------------- adapters
def astype_op(img: xr.DataArray, *, dtype: str) -> xr.DataArray:
    """Cast to a floating dtype (the identity when already that dtype)."""
    return img.astype(dtype)


def noise_source(**params: object) -> xr.DataArray:
    """Pipeline input: a correlated noise field with a ``band`` dim, like any opened image."""
    out = correlated_noise(**params)  # type: ignore[arg-type]
    return with_band(out)


def stack_op(
    stack: xr.DataArray,
    *,
    method: Literal["bilinear", "nearest", "fourier"],
    band: Hashable | None,
    window: Mapping[str, int] | int | None,
    **register_options: object,
) -> xr.DataArray:
    """Register a stack and return its composite (registration computes).

    Returns the composite ``(y, x, band)`` with ``weight`` as a non-dimension
    coordinate and the shifts (``[[y, x], ...]``, null for skipped images) and
    errors in attrs ``bigimg_shifts`` / ``bigimg_shift_errors``.
    """
    shifts = register(stack, band=band, window=window, **register_options)  # type: ignore[arg-type]
    with warnings.catch_warnings():  # register already warned about skipped images
        warnings.simplefilter("ignore", BigimgWarning)
        ds = shift_and_add(stack, shifts, method=method)
    comp = ds["composite"].assign_coords(weight=ds["weight"])
    return comp.assign_attrs(
        bigimg_shifts=[[_json_float(v) for v in row] for row in shifts.values],
        bigimg_shift_errors=[_json_float(v) for v in shifts["error"].values],
    )


def _json_float(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def zca_fit_op(
    img: xr.DataArray,
    *,
    model: Path | str,
    eps: float,
    sample_dim: str,
    nan_policy: Literal["raise", "omit"],
    transform: bool = True,
    overwrite: bool = False,
) -> xr.DataArray:
    """Fit a ZCA on the step's input (computes), save it at ``model``, pass the data on.

    ``model`` is a local path or a URL (``s3://bucket/model.npz``; reached
    with fsspec's default credentials: environment, config files).
    ``overwrite`` (the run's ``--overwrite``, not a config key) lets ``model``
    replace an existing file; a refused ``model`` fails before the fit.
    """
    check_new_object(model, overwrite=overwrite, what="model")
    zca = ZCA(eps, sample_dim=sample_dim, nan_policy=nan_policy).fit(img)
    zca.save(model, overwrite=overwrite, what="model")
    return zca.transform(img) if transform else img


def zca_transform_op(
    img: xr.DataArray, *, model: Path | str, inverse: bool = False
) -> xr.DataArray:
    """Whiten (or un-whiten) with a model saved by ``zca_fit`` or :meth:`ZCA.save` (path or URL)."""
    zca = ZCA.load(model, what="model")
    return zca.inverse_transform(img) if inverse else zca.transform(img)


# ---------------------------------------------------------------- the registry
op = registry.op
OPS = registry.table(
    [
        op("astype", astype_op, AstypeParams, pointwise=True),
        op("gaussian_filter", gaussian_filter, GaussianFilterParams),
        op(
            "equalize_hist",
            equalize_hist,
            EqualizeHistParams,
            computes=True,
            passes=equalize_hist_passes,
            pointwise=True,
        ),
        op(
            "equalize_adapthist",
            equalize_adapthist,
            EqualizeAdapthistParams,
            computes=True,
            passes=equalize_adapthist_passes,
            pointwise=True,
        ),
        op(
            "gaussian_stretch",
            gaussian_stretch,
            GaussianStretchParams,
            computes=True,
            pointwise=True,
        ),
        op("coarsen_mean", coarsen_mean, CoarsenParams),
        op("add_noise", add_noise, AddNoiseParams),
        op("stack", stack_op, StackParams, defaults_from=[register, shift_and_add], computes=True),
        op("standardize", standardize, StandardizeParams),
        op(
            "zca_fit",
            zca_fit_op,
            ZcaFitParams,
            defaults_from=[ZCA],
            writes=("model",),
            computes=True,
        ),
        op("zca_transform", zca_transform_op, ZcaTransformParams),
    ]
)
SOURCES = registry.table(
    [op("noise", noise_source, NoiseParams, defaults_from=[correlated_noise])],
)
