"""The public store API: write an image with its pyramid, open it, describe it.

:mod:`bigimg.io.store` handles one store (layout, completeness, resume,
checked reads) and :mod:`bigimg.io.pyramid` the levels inside it; the
functions here put the two together.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any, cast

import numpy as np
import xarray as xr

from bigimg.errors import unreadable_metadata
from bigimg.io.fingerprint import of_computation
from bigimg.io.location import Location
from bigimg.io.pyramid import best_level, level_states, open_level, pyramid_levels, write_pyramid
from bigimg.io.read import ome_axes_names, ome_multiscale, open_image
from bigimg.io.store import (
    VAR,
    StoreLike,
    WriteResult,
    dim_names,
    existing_store,
    is_zarr_store,
    open_store,
    stored_chunks,
    write,
)
from bigimg.resample import check_size


def to_zarr(
    obj: xr.DataArray,
    store: StoreLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    shards: Mapping[Hashable, int] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    config: Any = None,
    source: str | None = None,
    progress: bool | None = None,
    pyramid: bool = False,
    inputs: Mapping[str, Any] | None = None,
    fingerprint: Mapping[str, Any] | None = None,
) -> WriteResult:
    """Compute ``obj`` and write it to a Zarr store (computes).

    Parameters
    ----------
    obj : xarray.DataArray
        The (lazy) image to write; it becomes the store's ``image`` variable.
    store : str, path-like or URL
        Where the Zarr v3 store goes: a local path, or a URL that fsspec
        reaches (``s3://bucket/out.zarr``, ``gs://``, ``az://``,
        ``memory://``, ``file://``).
    storage_options : dict, optional
        How to reach a URL (passed to fsspec): for S3 ``{"endpoint_url": ...,
        "anon": ..., "profile": ..., "client_kwargs": {"region_name": ...}}``;
        without them the standard environment applies (``AWS_*`` variables,
        ``~/.aws``). They are never recorded or printed.
    shards : dict, optional
        Shard size per dim (Zarr v3 sharding), each a multiple of the chunk
        size, e.g. ``{"y": 8192, "x": 8192}``: one object per shard instead of
        per chunk. Each dask task writes one whole shard; resume works per
        shard; checksums stay per chunk.
    overwrite : bool, default False
        Replace an existing store. Without it an existing path is an error.
    resume : bool, default False
        Finish an interrupted store: chunks already stored are not recomputed.
    config : object, optional
        The pipeline steps recorded as ``bigimg_config`` (JSON).
    source : str, optional
        Recorded as ``bigimg_source``; default: the paths ``obj``'s graph reads
        (an input store's own ``bigimg_source``, which :func:`open_zarr` merges
        into the attrs, is never taken for this store's).
    progress : bool, optional
        Show a progress bar on stderr; default: only when stderr is a TTY.
    pyramid : bool, default False
        Also write coarsened levels (OME-NGFF ``multiscales``) into the
        store, see :func:`bigimg.write_pyramid`. The store is marked
        complete only once every level is.
    inputs : mapping, optional
        Anything else that determines the content, recorded in the store's
        fingerprint so that a resume with others is refused (the graph
        already holds how the input was opened).
    fingerprint : mapping, optional
        What determines the content, for a caller that describes its
        computation itself (a pipeline config, see
        :func:`bigimg.io.fingerprint.of_config`); default: the computation
        of ``obj`` (:func:`bigimg.io.fingerprint.of_computation`).

    Returns
    -------
    WriteResult

    Raises
    ------
    FileExistsError
        The store exists and neither ``overwrite`` nor ``resume`` was given.
    ValueError
        The path is a file or a non-Zarr directory, it overlaps the input
        (``obj.attrs["bigimg_source"]``, whatever ``overwrite`` says), or
        ``resume`` found a store written from another computation (its
        fingerprint differs: the message names what).

    Notes
    -----
    Group attrs ``bigimg_version``, ``bigimg_source``, ``bigimg_config`` and
    ``bigimg_complete`` record provenance; ``bigimg_complete`` becomes true
    last, after every chunk is written, and the metadata is re-consolidated.
    ``bigimg_fingerprint`` records everything that determines the output:
    the dask token of ``obj``'s graph (every op, parameter, chunking and
    in-memory array that made it), the identity of every input it reads (a
    file's size and mtime, an object's ETag, a store's metadata digest) and
    the bigimg version; ``resume`` refuses a store whose fingerprint
    differs, complete or not, and names what differs. The ``bigimg_*``
    attrs of an input (merged by :func:`open_zarr`) are never copied to the
    output: each store records its own provenance.

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os, xarray as xr
    >>> path = os.path.join(tempfile.mkdtemp(), "out.zarr")
    >>> img = bi.from_array(np.ones((8, 8)), chunks={"y": 4, "x": 4})
    >>> bi.to_zarr(img, path, progress=False).chunks_written
    4
    >>> bool(xr.open_zarr(path).attrs["bigimg_complete"])
    True
    """
    finish = None
    if pyramid:
        # resumes too: complete levels are skipped; the root stays incomplete until all are done
        def finish(loc: Location) -> None:
            write_pyramid(loc, progress=progress, root_pending=True)

    if not isinstance(obj, xr.DataArray):
        raise TypeError(f"obj must be an xarray.DataArray, got {type(obj).__name__}")
    loc = Location.of(store, storage_options)
    if fingerprint is None:
        fingerprint = of_computation(obj, loc)
        if inputs:
            fingerprint["inputs"] = json.loads(json.dumps(dict(inputs), default=str))
    return write(
        obj,
        loc,
        shards=shards,
        overwrite=overwrite,
        resume=resume,
        config=config,
        source=source,
        fingerprint=fingerprint,
        progress=progress,
        before_complete=finish,
    )


def open_zarr(
    store: StoreLike,
    *,
    allow_incomplete: bool = False,
    chunks: Any = None,
    level: int = 0,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Open a bigimg output store as its ``image`` DataArray (lazy).

    Parameters
    ----------
    store : str, path-like or URL
        A store written by :func:`to_zarr`.
    allow_incomplete : bool, default False
        Open a store whose write was interrupted (missing chunks read as NaN).
    chunks : dict, optional
        Dask chunks; default: the store's own chunks.
    level : int, default 0
        Pyramid level to open (0 = full resolution), see :func:`bigimg.open_level`.
    storage_options : dict, optional
        How to reach a URL (see :func:`to_zarr`).

    Returns
    -------
    xarray.DataArray
        With the store's provenance attrs merged into ``attrs``.

    Raises
    ------
    FileNotFoundError
        No such path.
    ValueError
        Not a bigimg store, or incomplete and ``allow_incomplete`` is false.

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "out.zarr")
    >>> _ = bi.to_zarr(bi.from_array(np.eye(4)), path, progress=False)
    >>> bi.open_zarr(path).dims
    ('y', 'x', 'band')
    """
    loc = Location.of(store, storage_options)
    if level:
        return open_level(loc, level, chunks=chunks)
    return open_store(loc, allow_incomplete=allow_incomplete, chunks=chunks)


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
    total = int(
        np.prod(
            [len(range(0, s, c)) for s, c in zip(arr.shape, arr.shards or arr.chunks, strict=True)]
        )
    )
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


def open_for_quicklook(
    path: StoreLike, max_size: int, storage_options: Mapping[str, Any] | None = None
) -> xr.DataArray:
    """Open an image file for a preview, from a pyramid level when the store has one.

    For a bigimg store with a pyramid (:func:`bigimg.write_pyramid`)
    this is the coarsest level still at least ``max_size`` pixels on its
    longest side, so the preview reads a fraction of the data (the stretch
    percentiles then come from that level); any other image opens with
    :func:`bigimg.open_image`. The result's ``encoding["source"]`` is
    ``path``, so that :func:`bigimg.quicklook` refuses to write its PNG into it.
    """
    check_size(max_size, "max_size")
    loc = Location.of(path, storage_options)
    if is_zarr_store(loc) and loc.exists(f"{VAR}/zarr.json") and pyramid_levels(loc) != [0]:
        out = open_level(loc, best_level(loc, max_size))
    else:
        out = open_image(loc)
    out.encoding["source"] = loc.url
    return out
