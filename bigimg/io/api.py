"""The public store API: write an image with its pyramid, open it, describe it.

:mod:`bigimg.io.store` handles one store (layout, completeness, resume,
checked reads) and :mod:`bigimg.io.pyramid` the levels inside it; the
functions here put the two together.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import Any

import xarray as xr

from bigimg.io.fingerprint import of_computation
from bigimg.io.location import Location
from bigimg.io.pyramid import best_level, open_level, pyramid_levels, write_pyramid
from bigimg.io.read import open_image
from bigimg.io.store import (
    VAR,
    StoreLike,
    WriteResult,
    is_zarr_store,
    open_store,
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
