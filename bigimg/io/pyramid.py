"""Pyramids: coarsened levels (OME-NGFF ``multiscales``) inside a bigimg store.

A pyramid lives inside the store it summarises. Level 0 is the store's own
``image``; level ``k`` (k >= 1) is the bigimg store ``levels/<k>`` nested in it,
the NaN-aware 2 x 2 block mean of level ``k - 1`` in ``y`` and ``x``. Every
level is written as a bigimg store (:func:`bigimg.to_zarr`), so it carries its own
provenance and ``bigimg_complete`` flag, resumes after an interruption, and
opens with plain xarray::

    xr.open_zarr("out.zarr/levels/2")["image"]              # or
    xr.open_zarr("out.zarr", group="levels/2")["image"]

The root group's ``ome`` attribute lists the levels in the OME-NGFF 0.5
``multiscales`` layout (axes, datasets with ``path`` and
``coordinateTransformations``), updated after each level is complete, so a
reader never sees a level that is still being written, and the root store's
own ``bigimg_complete`` flag is never touched. The axes are in the on-disk
order, ``band`` (type ``channel``) before ``y`` and ``x`` (type ``space``)
(see :mod:`bigimg.io.store`), so OME-NGFF validators and readers (napari's
ome-zarr-py) accept the store. The root also carries the zarr-conventions
``multiscales`` attribute (declared in ``zarr_conventions``), through which
GDAL >= 3.13 sees the levels as overviews.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bigimg.errors import unreadable_metadata
from bigimg.io.fingerprint import of_config
from bigimg.io.layout import LEVELS_GROUP
from bigimg.io.location import Location
from bigimg.io.store import (
    PROVENANCE,
    VAR,
    StoreLike,
    disk_order,
    is_zarr_store,
    open_store,
    quiet_zarr,
    write,
)
from bigimg.resample import check_size, coarsen_mean

NGFF_VERSION = "0.5"
_AXIS_TYPES = {"y": "space", "x": "space", "band": "channel"}
# group attrs that open_zarr merges into the DataArray: each level records its own
_STORE_ATTRS = PROVENANCE | {"ome", "multiscales", "zarr_conventions"}
# https://github.com/zarr-conventions/multiscales (v1), read by GDAL >= 3.13
_MULTISCALES_CONVENTION = {
    "uuid": "d35379db-88df-4056-af3a-620245f8e347",
    "name": "multiscales",
    "schema_url": (
        "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v1/schema.json"
    ),
    "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v1/README.md",
}


# ---------------------------------------------------------------- public API
def write_pyramid(
    store: StoreLike,
    *,
    max_size: int = 1024,
    progress: bool | None = None,
    root_pending: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[Path | str]:
    """Add coarsened levels to a complete bigimg store (computes).

    Levels are halved in ``y`` and ``x`` (NaN-aware 2 x 2 means of the
    previous level) until the longest side is at most ``max_size``. Each is
    written, chunk by chunk on the active Dask scheduler, as the nested bigimg
    store ``levels/<k>``; the root's OME-NGFF ``multiscales`` metadata lists a
    level only once it is complete. Running it again skips complete levels
    and resumes an interrupted one.

    Parameters
    ----------
    store : str, path-like or URL
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
    storage_options : dict, optional
        For a URL: how to reach it (see :func:`bigimg.to_zarr`).

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
    >>> from bigimg.io.pyramid import write_pyramid, open_level
    >>> path = os.path.join(tempfile.mkdtemp(), "big.zarr")
    >>> _ = bi.to_zarr(bi.from_array(np.ones((40, 30))), path, progress=False)
    >>> [p.name for p in write_pyramid(path, max_size=10, progress=False)]
    ['1', '2']
    >>> open_level(path, 2).shape
    (10, 8, 1)
    """
    check_size(max_size, "max_size")
    root = Location.of(store, storage_options)
    base = open_store(root, allow_incomplete=root_pending)  # validates: exists, bigimg store
    chunks = {d: c[0] for d, c in zip(base.dims, base.chunks or (), strict=True)}
    _ensure_levels_group(root)
    paths: list[Path | str] = []
    prev, k = base, 0
    while max(prev.sizes["y"], prev.sizes["x"]) > max_size:
        k += 1
        level = coarsen_mean(prev, 2)
        level = level.chunk({d: min(chunks[d], level.sizes[d]) for d in ("y", "x")})
        level.attrs = {a: v for a, v in level.attrs.items() if a not in _STORE_ATTRS}
        path = root.child(LEVELS_GROUP, str(k))
        config = [{"op": "coarsen_mean", "factor": 2, "level": k}]
        source = f"{root}#{_level_path(k - 1)}"
        write(  # a config fingerprint: the level it reads is rewritten as levels complete
            level,
            path,
            resume=is_zarr_store(path),
            config=config,
            source=source,
            fingerprint=of_config(source, None, config),
            progress=progress,
            level=True,
        )
        paths.append(path.path if path.local else str(path))
        _write_multiscales(root, base, k)
        prev = open_store(path)
    if k == 0:
        _write_multiscales(root, base, 0)
    return paths


def open_level(
    store: StoreLike,
    level: int,
    *,
    chunks: Any = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.DataArray:
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
    root = Location.of(store, storage_options)
    if level == 0:
        return open_store(root, chunks=chunks)
    available = pyramid_levels(root)
    if level not in available:
        raise ValueError(
            f"level: store {str(root)!r} has no complete level {level}; it has levels "
            f"{available} (add levels with bigimg.write_pyramid)"
        )
    return open_store(root.child(LEVELS_GROUP, str(level)), chunks=chunks)


def pyramid_levels(store: StoreLike, storage_options: Mapping[str, Any] | None = None) -> list[int]:
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
        loc = Location.of(store, storage_options)
        group = zarr.open_group(loc.zarr_store(read_only=True), mode="r", use_consolidated=False)
    except Exception as e:
        raise unreadable_metadata(str(store), e) from e
    ome = group.attrs.get("ome", {})
    multiscales = ome.get("multiscales", []) if isinstance(ome, dict) else []
    paths = (
        [str(ds.get("path")) for ds in multiscales[0].get("datasets", [])] if multiscales else []
    )
    if not paths or any(p != _level_path(_level_of(p)) for p in paths):
        return [0]  # no pyramid, or another tool's OME-Zarr layout (not bigimg's levels)
    return [_level_of(p) for p in paths]


def best_level(store: StoreLike, max_size: int) -> int:
    """The coarsest level whose longest side is still at least ``max_size`` (0 if none).

    A quick-look of ``max_size`` pixels read from this level reads the least
    data without upsampling.
    """
    check_size(max_size, "max_size")
    best = 0
    for k in pyramid_levels(store):
        shape = open_level(store, k).sizes
        if max(shape["y"], shape["x"]) >= max_size:
            best = max(best, k)
    return best


# ---------------------------------------------------------------- internals
def _level_path(k: int) -> str:
    """Path of level ``k``'s array inside the root store."""
    return VAR if k == 0 else f"{LEVELS_GROUP}/{k}/{VAR}"


def _level_of(path: str) -> int:
    """The level of an OME dataset path written by bigimg; -1 for any other path."""
    if path == VAR:
        return 0
    parts = path.split("/")
    ok = len(parts) == 3 and parts[0] == LEVELS_GROUP and parts[1].isdigit() and parts[2] == VAR
    return int(parts[1]) if ok else -1


def _ensure_levels_group(root: Location) -> None:
    import zarr

    group = zarr.open_group(root.zarr_store(), mode="r+", use_consolidated=False)
    if LEVELS_GROUP not in group:
        group.create_group(LEVELS_GROUP, attributes={"bigimg_pyramid": True})


def _multiscales(base: xr.DataArray, n_levels: int) -> dict[str, Any]:
    """OME-NGFF 0.5 ``ome`` attribute for levels 0..n_levels (axes in on-disk order)."""
    dims = disk_order(base.dims)
    axes = []
    for d in dims:
        axis: dict[str, Any] = {"name": str(d)}
        if d in _AXIS_TYPES:
            axis["type"] = _AXIS_TYPES[d]
        axes.append(axis)
    datasets = []
    for k in range(n_levels + 1):
        s = 2**k
        scale = [float(s) if d in ("y", "x") else 1.0 for d in dims]
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": scale}]
        if k:  # a level-k pixel covers level-0 pixels [s*i, s*i + s): its centre
            shift = [(s - 1) / 2 if d in ("y", "x") else 0.0 for d in dims]
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


def _conventions(base: xr.DataArray, n_levels: int) -> dict[str, Any]:
    """zarr-conventions ``multiscales`` root attributes for levels 0..n_levels.

    Each level ``levels/<k>`` is derived from the previous one: scale 2 in
    ``y`` and ``x``, and a level-k pixel's centre is half a level-(k-1) pixel
    in (the OME translation ``(2**k - 1) / 2`` in level-0 pixels, step by step).
    """
    dims = disk_order(base.dims)
    layout: list[dict[str, Any]] = [{"asset": VAR, "transform": {"scale": [1.0] * len(dims)}}]
    for k in range(1, n_levels + 1):
        transform = {
            "scale": [2.0 if d in ("y", "x") else 1.0 for d in dims],
            "translation": [0.5 if d in ("y", "x") else 0.0 for d in dims],
        }
        layout.append(
            {
                "asset": f"{LEVELS_GROUP}/{k}",
                "derived_from": VAR if k == 1 else f"{LEVELS_GROUP}/{k - 1}",
                "transform": transform,
            }
        )
    return {
        "zarr_conventions": [_MULTISCALES_CONVENTION],
        "multiscales": {"layout": layout, "resampling_method": "average"},
    }


def _write_multiscales(root: Location, base: xr.DataArray, n_levels: int) -> None:
    import zarr

    store = root.zarr_store()
    with quiet_zarr():
        group = zarr.open_group(store, mode="r+", use_consolidated=False)
        group.attrs.update({"ome": _multiscales(base, n_levels), **_conventions(base, n_levels)})
        zarr.consolidate_metadata(store)
