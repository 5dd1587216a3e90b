"""``store_info``: describe a store from its metadata (what ``bigimg info`` prints).

Imports zarr and numpy only (through :mod:`~bigimg.io.layout`), never dask or
xarray, so ``bigimg info`` answers in a fraction of a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from bigimg.errors import unreadable_metadata
from bigimg.io.layout import (
    VAR,
    StoreLike,
    dim_names,
    existing_store,
    level_states,
    ome_axes_names,
    ome_multiscale,
    stored_chunks,
)
from bigimg.io.location import Location


def store_info(
    store: StoreLike, storage_options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Describe a store without reading its chunks: dims, chunks, completeness, provenance.

    Reads metadata and lists chunk files only: it never modifies the store, so
    it is safe to run on a store that is being written. ``damaged`` names
    what is wrong with a store marked complete (missing chunks, interrupted
    pyramid levels), or is None. ``dims``, ``shape`` and ``chunks`` describe
    the stored array, in its on-disk order (``band, y, x``: see
    :mod:`bigimg.io.store`); :func:`open_zarr` reads it as ``(y, x, band)``.

    An OME-Zarr image written by another tool (ome-zarr-py, ngff-zarr) is
    described from its OME metadata: level 0's dims (the OME axes), shape,
    chunks and dtype, its ``datasets`` and ``levels``; ``complete`` is None,
    as such a store carries no completeness flag, and ``damaged`` is None.
    """
    import zarr

    loc = existing_store(Location.of(store, storage_options))
    try:
        node = zarr.open(loc.zarr_store(read_only=True), mode="r", use_consolidated=False)
        attrs = dict(node.attrs)
        arr = cast(
            "zarr.Array | None",
            node[VAR] if isinstance(node, zarr.Group) and VAR in node else None,
        )
    except Exception as e:
        raise unreadable_metadata(str(loc), e) from e
    ome = ome_multiscale(attrs) if arr is None and isinstance(node, zarr.Group) else None
    if ome is not None:
        return _ome_info(loc, node, attrs, ome)
    if arr is None and "bigimg_complete" in attrs:
        return _unborn_info(loc, attrs)
    if arr is None:
        raise ValueError(
            f"store: {str(loc)!r} has no {VAR!r} array, so it was not written by bigimg; "
            "bigimg.open_image (and bigimg run, quicklook) read it as an input"
        )
    stored = len(stored_chunks(loc, VAR))
    total = 1
    for s, c in zip(arr.shape, arr.shards or arr.chunks, strict=True):
        total *= len(range(0, s, c))
    complete = bool(attrs.get("bigimg_complete", False))
    problems = []
    if complete and stored < total:
        problems.append(f"{total - stored} of {total} chunks missing from a store marked complete")
    levels = level_states(loc)
    pending = [k for k, done in levels.items() if not done]
    if pending:
        problems.append(f"pyramid level(s) {pending} interrupted")
    return {
        "path": str(loc),
        "dims": list(dim_names(arr)),
        "shape": list(arr.shape),
        "chunks": list(arr.chunks),
        "shards": list(arr.shards) if arr.shards else None,
        "dtype": str(arr.dtype),
        "complete": complete,
        "damaged": "; ".join(problems) or None,
        "chunks_stored": stored,
        "chunks_total": total,
        "levels": [k for k, done in levels.items() if done],
        "bigimg_version": attrs.get("bigimg_version"),
        "bigimg_source": attrs.get("bigimg_source"),
        "bigimg_config": attrs.get("bigimg_config"),
    }


def _unborn_info(loc: Location, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`store_info` of a bigimg store whose write stopped before its array was made.

    The group (with ``bigimg_complete: false``) is created before the arrays,
    so a write interrupted in between leaves no array: incomplete, nothing stored.
    """
    return {
        "path": str(loc),
        "dims": None,
        "shape": None,
        "chunks": None,
        "shards": None,
        "dtype": None,
        "complete": bool(attrs.get("bigimg_complete")),
        "damaged": f"interrupted before its {VAR!r} array was created",
        "chunks_stored": 0,
        "chunks_total": None,
        "levels": [],
        "bigimg_version": attrs.get("bigimg_version"),
        "bigimg_source": attrs.get("bigimg_source"),
        "bigimg_config": attrs.get("bigimg_config"),
    }


def _ome_info(
    loc: Location, group: Any, attrs: Mapping[str, Any], ome: Mapping[str, Any]
) -> dict[str, Any]:
    """:func:`store_info` of an OME-Zarr image written by another tool: level 0 and the levels.

    Not a bigimg store, so there is no completeness flag or provenance to
    report (``complete`` is None), and nothing is called damaged.
    """
    level0 = str(ome["datasets"][0].get("path", ""))
    try:
        arr = group[level0]
        dims = ome_axes_names(ome.get("axes") or dim_names(arr))
        shape, chunks = list(arr.shape), list(arr.chunks)
        shards = list(arr.shards) if getattr(arr, "shards", None) else None
        dtype = str(arr.dtype)
    except Exception as e:
        raise unreadable_metadata(str(loc), e) from e
    version = attrs["ome"].get("version") if isinstance(attrs.get("ome"), dict) else None
    return {
        "path": str(loc),
        "format": f"OME-Zarr {version or ome.get('version', '')}".strip(),
        "dims": dims,
        "shape": shape,
        "chunks": chunks,
        "shards": shards,
        "dtype": dtype,
        "complete": None,
        "damaged": None,
        "datasets": [str(d.get("path")) for d in ome["datasets"]],
        "levels": list(range(1, len(ome["datasets"]))),
    }
