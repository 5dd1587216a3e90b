"""Multiscale outputs: NaN-aware block means and OME-NGFF pyramids in a bigimg store.

A pyramid lives inside the store it summarises. Level 0 is the store's own
``image``; level ``k`` (k >= 1) is the bigimg store ``levels/<k>`` nested in it,
the NaN-aware 2 x 2 block mean of level ``k - 1`` in ``y`` and ``x``. Every
level is written by :func:`bigimg.io.to_zarr`, so it carries its own
provenance and ``bigimg_complete`` flag, resumes after an interruption, and
opens with plain xarray::

    xr.open_zarr("out.zarr/levels/2")["image"]              # or
    xr.open_zarr("out.zarr", group="levels/2")["image"]

The root group's ``ome`` attribute lists the levels in the OME-NGFF 0.5
``multiscales`` layout (axes, datasets with ``path`` and
``coordinateTransformations``), updated after each level is complete, so a
reader never sees a level that is still being written, and the root store's
own ``bigimg_complete`` flag is never touched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np
import xarray as xr

from bigimg.errors import unreadable_metadata
from bigimg.image import check_image, float_dtype, per_dim
from bigimg.io import VAR, open_zarr, to_zarr
from bigimg.pipeline import Params, register_op

LEVELS_GROUP = "levels"
NGFF_VERSION = "0.5"
_AXIS_TYPES = {"y": "space", "x": "space", "band": "channel"}
# group attrs that open_zarr merges into the DataArray: each level records its own
_STORE_ATTRS = {"bigimg_version", "bigimg_source", "bigimg_config", "bigimg_complete", "ome"}


# ---------------------------------------------------------------- public API
def coarsen_mean(obj: xr.DataArray, factor: int | Mapping[Hashable, int] = 2) -> xr.DataArray:
    """NaN-aware block mean: each output pixel is the mean of the valid input pixels of its block.

    The last block along a dim is smaller when the size is not a multiple of
    the factor (xarray's ``boundary="pad"``: padded with NaN, which the mean
    skips). A block with no valid pixel is NaN. Lazy.

    Parameters
    ----------
    obj : xarray.DataArray
        Image with dims ``y`` and ``x`` (any others, such as ``band`` or
        ``image``, are kept).
    factor : int or dict, default 2
        Block size: an int applies to ``y`` and ``x``; a dict names dims
        (dims left out get 1). A factor larger than its dim's size makes one
        block of the whole dim, as xarray's ``boundary="pad"`` does.

    Returns
    -------
    xarray.DataArray
        float32 (float64 stays float64), coords along the coarsened dims are
        block means (pixel centres), attrs kept.

    Raises
    ------
    TypeError
        ``obj`` is not a DataArray or not real numbers, or ``factor`` is
        neither int nor dict.
    ValueError
        A factor is not a positive integer, names an unknown dim, or would
        average a non-numeric coord (such as band names).

    Notes
    -----
    This is ``obj.coarsen(..., boundary="pad").mean()``. Chunks are first
    aligned to multiples of the factor, so each output chunk reads one input
    chunk and memory stays bounded by the chunk size.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> from bigimg.multiscale import coarsen_mean
    >>> img = bi.from_array(np.array([[1.0, 3.0, 5.0], [np.nan, 2.0, np.nan]], "float32"))
    >>> coarsen_mean(img, 2).isel(band=0).values
    array([[2., 5.]], dtype=float32)
    """
    check_image(obj, "obj")
    if obj.dtype.kind not in "biuf":
        raise TypeError(f"obj must have a real numeric dtype (bool, int or float), got {obj.dtype}")
    factors = _factors(obj, factor)
    windows = {d: f for d, f in factors.items() if f > 1}
    _check_coords(obj, windows)
    data = obj.astype(float_dtype(obj.dtype))
    if not windows:
        return data
    pad = {d: (0, -data.sizes[d] % f) for d, f in windows.items() if data.sizes[d] % f}
    if pad:  # NaN-pad to whole blocks (what boundary="pad" does), before aligning chunks
        data = data.pad(pad, mode="constant", keep_attrs=True)
    if data.chunks is not None:  # align chunk boundaries with block boundaries
        aligned = {}
        for d, f in windows.items():
            chunks = data.chunks[data.get_axis_num(d)]
            if any(c % f for c in chunks):
                aligned[d] = max(f, round(max(chunks) / f) * f)
        if aligned:
            data = data.chunk(aligned)
    return data.coarsen(windows, boundary="exact").mean()


def write_pyramid(
    store: str | os.PathLike[str],
    *,
    max_size: int = 1024,
    progress: bool | None = None,
    root_pending: bool = False,
) -> list[Path]:
    """Add coarsened levels to a complete bigimg store (computes).

    Levels are halved in ``y`` and ``x`` (NaN-aware 2 x 2 means of the
    previous level) until the longest side is at most ``max_size``. Each is
    written, chunk by chunk on the active Dask scheduler, as the nested bigimg
    store ``levels/<k>``; the root's OME-NGFF ``multiscales`` metadata lists a
    level only once it is complete. Running it again skips complete levels
    and resumes an interrupted one.

    Parameters
    ----------
    store : str or path-like
        A complete store written by :func:`bigimg.to_zarr`.
    max_size : int, default 1024
        The coarsest level's longest side is at most this many pixels.
    progress : bool, optional
        Progress bar on stderr; default: only when stderr is a TTY.
    root_pending : bool, default False
        The root's own chunks are all written but it is not yet marked
        complete: :func:`bigimg.to_zarr` with ``pyramid=True`` marks it
        complete only after the last level, so a killed pyramid write never
        leaves a store that says complete.

    Returns
    -------
    list of pathlib.Path
        The level stores, finest first (empty when the image already fits).

    Raises
    ------
    FileNotFoundError, ValueError
        ``store`` is missing, not a bigimg store, or incomplete.
    TypeError, ValueError
        ``max_size`` is not a positive int.

    Notes
    -----
    Each level reads only the previous one, so the full resolution is read
    once whatever the number of levels; every task holds one output chunk and
    the input chunks it covers. Axis order stays bigimg's (``y, x, band``):
    NGFF readers that follow the ``axes`` names read the levels, strict
    validators flag the channel axis coming last.

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os
    >>> from bigimg.multiscale import write_pyramid, open_level
    >>> path = os.path.join(tempfile.mkdtemp(), "big.zarr")
    >>> _ = bi.to_zarr(bi.from_array(np.ones((40, 30))), path, progress=False)
    >>> [p.name for p in write_pyramid(path, max_size=10, progress=False)]
    ['1', '2']
    >>> open_level(path, 2).shape
    (10, 8, 1)
    """
    _check_size(max_size, "max_size")
    root = Path(store)
    base = open_zarr(root, allow_incomplete=root_pending)  # validates: exists, bigimg store
    chunks = {d: c[0] for d, c in zip(base.dims, base.chunks or (), strict=True)}
    _ensure_levels_group(root)
    paths: list[Path] = []
    prev, k = base, 0
    while max(prev.sizes["y"], prev.sizes["x"]) > max_size:
        k += 1
        level = coarsen_mean(prev, 2)
        level = level.chunk({d: min(chunks[d], level.sizes[d]) for d in ("y", "x")})
        level.attrs = {a: v for a, v in level.attrs.items() if a not in _STORE_ATTRS}
        path = _level_store(root, k)
        to_zarr(
            level,
            path,
            resume=path.exists(),
            config=[{"op": "coarsen_mean", "factor": 2, "level": k}],
            source=f"{root}#{_level_path(k - 1)}",
            progress=progress,
        )
        paths.append(path)
        _write_multiscales(root, base, k)
        prev = open_zarr(path)
    if k == 0:
        _write_multiscales(root, base, 0)
    return paths


def open_level(store: str | os.PathLike[str], level: int, *, chunks: Any = None) -> xr.DataArray:
    """Open level ``level`` of a store's pyramid (0 = full resolution), lazily.

    Parameters
    ----------
    store : str or path-like
        A bigimg store with a pyramid written by :func:`write_pyramid`.
    level : int
        0 for the full image, ``k`` for the level coarsened ``2**k`` times.
    chunks : dict, optional
        Dask chunks; default: the stored chunks.

    Returns
    -------
    xarray.DataArray
        As :func:`bigimg.open_zarr` returns it.

    Raises
    ------
    TypeError
        ``level`` is not an int.
    ValueError
        ``level`` is negative or the store has no such complete level.

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os
    >>> store = os.path.join(tempfile.mkdtemp(), "img.zarr")
    >>> _ = bi.to_zarr(bi.from_array(np.arange(64.0).reshape(8, 8)), store, progress=False)
    >>> _ = bi.write_pyramid(store, max_size=4, progress=False)
    >>> bi.open_level(store, 1).values[0, :, 0]  # means of 2 x 2 blocks
    array([ 4.5,  6.5,  8.5, 10.5])
    """
    if not isinstance(level, int | np.integer) or isinstance(level, bool):
        raise TypeError(f"level must be an int, got {level!r}")
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level!r}")
    root = Path(store)
    if level == 0:
        return open_zarr(root, chunks=chunks)
    available = pyramid_levels(root)
    if level not in available:
        raise ValueError(
            f"level: store {str(root)!r} has no complete level {level}; it has levels "
            f"{available} (add levels with bigimg.multiscale.write_pyramid)"
        )
    return open_zarr(_level_store(root, level), chunks=chunks)


def pyramid_levels(store: str | os.PathLike[str]) -> list[int]:
    """The complete levels listed in the store's ``multiscales`` metadata (``[0]`` if none).

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "small.zarr")
    >>> _ = bi.to_zarr(bi.from_array(np.ones((4, 4))), path, progress=False)
    >>> pyramid_levels(path)
    [0]
    """
    import zarr

    try:
        group = zarr.open_group(str(store), mode="r", use_consolidated=False)
    except Exception as e:
        raise unreadable_metadata(store, e) from e
    ome = group.attrs.get("ome", {})
    multiscales = ome.get("multiscales", []) if isinstance(ome, dict) else []
    if not multiscales:
        return [0]
    return [_level_of(ds["path"]) for ds in multiscales[0]["datasets"]]


def best_level(store: str | os.PathLike[str], max_size: int) -> int:
    """The coarsest level whose longest side is still at least ``max_size`` (0 if none).

    A quick-look of ``max_size`` pixels read from this level reads the least
    data without upsampling.
    """
    _check_size(max_size, "max_size")
    best = 0
    for k in pyramid_levels(store):
        shape = open_level(store, k).sizes
        if max(shape["y"], shape["x"]) >= max_size:
            best = max(best, k)
    return best


# ---------------------------------------------------------------- pipeline op
class CoarsenParams(Params):
    factor: dict[str, int] | int = 2


@register_op("coarsen_mean", CoarsenParams)
def _coarsen_op(img: xr.DataArray, *, factor: dict[str, int] | int = 2) -> xr.DataArray:
    return coarsen_mean(img, cast("int | Mapping[Hashable, int]", factor))


# ---------------------------------------------------------------- internals
def _check_size(value: Any, name: str) -> None:
    if not isinstance(value, int | np.integer) or isinstance(value, bool):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _factors(obj: xr.DataArray, factor: Any) -> dict[Hashable, int]:
    values = per_dim(obj, factor, "factor", default=1.0)
    out = {}
    for d, v in zip(obj.dims, values, strict=True):
        if v < 1 or v != math.floor(v):
            raise ValueError(f"factor[{d!r}] must be a positive integer, got {v!r}")
        # beyond the dim's size, padding only adds NaN the mean skips: one block
        # of the whole dim is the same result, without padding to the factor
        out[d] = min(int(v), obj.sizes[d])
    return out


def _check_coords(obj: xr.DataArray, windows: Mapping[Hashable, int]) -> None:
    """Refuse coarsening a dim whose coords cannot be averaged (block means of labels)."""
    for name, coord in obj.coords.items():
        coarsened = [d for d in coord.dims if d in windows]
        if coarsened and coord.dtype.kind not in "biufmM":
            raise ValueError(
                f"factor[{coarsened[0]!r}]={windows[coarsened[0]]} would average the coord "
                f"{name!r} of dtype {coord.dtype}, which has no mean; drop it first "
                f"(obj.drop_vars({name!r})) or leave {coarsened[0]!r} out of factor"
            )


def _level_path(k: int) -> str:
    """Path of level ``k``'s array inside the root store."""
    return VAR if k == 0 else f"{LEVELS_GROUP}/{k}/{VAR}"


def _level_store(root: Path, k: int) -> Path:
    """Level ``k`` (k >= 1) as a bigimg store of its own, nested in ``root``."""
    return root / LEVELS_GROUP / str(k)


def _level_of(path: str) -> int:
    return 0 if path == VAR else int(path.split("/")[1])


def _ensure_levels_group(root: Path) -> None:
    import zarr

    group = zarr.open_group(str(root), mode="r+", use_consolidated=False)
    if LEVELS_GROUP not in group:
        group.create_group(LEVELS_GROUP, attributes={"bigimg_pyramid": True})


def _multiscales(base: xr.DataArray, n_levels: int) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attribute for levels 0..n_levels."""
    axes = []
    for d in base.dims:
        axis: dict[str, Any] = {"name": str(d)}
        if d in _AXIS_TYPES:
            axis["type"] = _AXIS_TYPES[d]
        axes.append(axis)
    datasets = []
    for k in range(n_levels + 1):
        s = 2**k
        scale = [float(s) if d in ("y", "x") else 1.0 for d in base.dims]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if k:  # a level-k pixel covers level-0 pixels [s*i, s*i + s): its centre
            shift = [(s - 1) / 2 if d in ("y", "x") else 0.0 for d in base.dims]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append({"path": _level_path(k), "coordinateTransformations": transforms})
    return {
        "version": NGFF_VERSION,
        "multiscales": [
            {
                "name": VAR,
                "axes": axes,
                "datasets": datasets,
                "type": "mean",
                "metadata": {
                    "description": "NaN-aware 2x2 block mean of the previous level",
                    "method": "xarray.DataArray.coarsen(boundary='pad').mean",
                },
            }
        ],
    }


def _write_multiscales(root: Path, base: xr.DataArray, n_levels: int) -> None:
    import zarr

    from bigimg.io import _quiet_zarr

    with _quiet_zarr():
        group = zarr.open_group(str(root), mode="r+", use_consolidated=False)
        group.attrs["ome"] = _multiscales(base, n_levels)
        zarr.consolidate_metadata(str(root))
