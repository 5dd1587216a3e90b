"""One bigimg store: layout, provenance, completeness, resumable writes, checked reads.

A bigimg store is a Zarr v3 group holding one data variable, ``image``, written
through xarray so that ``xr.open_zarr(path)["image"]`` reads it with nothing
else. It lives at any :class:`~bigimg.io.location.Location` (a local path or
an object-store URL), and everything here goes through zarr's store API:
listing keys, ``exists``, ``get`` and ``set``.

Objects are written one task per stored object (a chunk, or a whole shard
when the store is sharded), and each is complete once listed: zarr's local
store renames a temporary ``*.partial`` file into place, and an object
store's PUT replaces a whole object at once. ``bigimg_complete`` is set only
after every object is stored; ``resume=True`` writes just the missing ones.
Every chunk (the inner chunks of a shard too) carries a CRC32C checksum, so a
damaged one fails to decode and the error names it.

On disk the image is in OME-NGFF order, ``(band, y, x)`` (a stack:
``(image, band, y, x)``; a plain ``(y, x)`` image stays ``(y, x)``), with
those ``dimension_names``, so OME-Zarr tools (validators, napari's reader)
accept a pyramid store; bigimg's readers transpose it back to ``(y, x, band)``
lazily (see :func:`disk_order`). Chunk keys, and the chunk indices that
error messages name, are in that on-disk order: ``image/c/<band>/<y>/<x>``.
Stores written before the change, ``(y, x, band)`` on disk, still read.
"""

from __future__ import annotations

import errno
import functools
import itertools
import json
import os
import time
import uuid
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import xarray as xr

from bigimg._version import __version__
from bigimg.compute import compute_with_progress
from bigimg.errors import CorruptStoreError, unreadable_metadata
from bigimg.files import check_disjoint, note_read, path_parts, read_paths
from bigimg.image import STACK_DIMS, check_dims
from bigimg.io.chunks import read_in_chunks
from bigimg.io.fingerprint import check_fingerprint, of_computation, source_of
from bigimg.io.layout import (
    VAR,
    check_bucket,
    existing_store,
    is_zarr_store,
    storage_errors,
    stored_chunks,
)
from bigimg.io.location import Location
from bigimg.io.lock import check_unlocked, writer_lock

#: The group attrs that record a store's provenance; an input's are never carried to an output.
PROVENANCE = frozenset(
    {"bigimg_version", "bigimg_source", "bigimg_config", "bigimg_fingerprint", "bigimg_complete"}
)
_STACK_LABELS = "image_label"


@dataclass(frozen=True)
class WriteResult:
    """What :func:`to_zarr` did: the store, and chunks written vs already there.

    ``also``: the computed values of the collections passed as ``also`` to
    :func:`write`, or None when they were not computed with the write.
    """

    path: Path | str  # a Path for a local store, else the URL
    chunks_written: int
    chunks_skipped: int
    seconds: float
    also: tuple[Any, ...] | None = None


StoreLike = str | os.PathLike[str] | Location


def write(
    obj: xr.DataArray,
    loc: Location,
    *,
    overwrite: bool = False,
    resume: bool = False,
    config: Any = None,
    source: str | None = None,
    fingerprint: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    shards: Mapping[Hashable, int] | None = None,
    before_complete: Callable[[Location], object] | None = None,
    also: Sequence[Any] = (),
    compress: bool = True,
    level: bool = False,
) -> WriteResult:
    """Write ``obj`` as a bigimg store (computes); :func:`bigimg.to_zarr` documents the rest.

    ``fingerprint``: what determines the content (see :mod:`bigimg.io.fingerprint`);
    default: the computation of ``obj`` itself. A config passes its own.
    ``level``: ``loc`` is a pyramid level that :func:`bigimg.write_pyramid` writes
    inside the store it reads (any other write inside an input is refused).

    ``before_complete(location)`` runs, under the writer lock, after every
    object is stored and before the store is marked complete (the pyramid levels).
    ``also``: dask collections built on ``obj`` (statistics) to compute in the
    same graph as the write, so that each block of ``obj`` is computed once
    for both; their values are ``WriteResult.also``. They are computed only
    when every block is written now (a fresh store of one variable), else
    ``also`` is None and the caller computes them itself. ``compress=False``
    stores chunks uncompressed (still checksummed): for scratch stores, read
    back soon, where compression costs more time than the bytes it saves.
    """
    if not isinstance(obj, xr.DataArray):
        raise TypeError(f"obj must be an xarray.DataArray, got {type(obj).__name__}")
    sources = cast(
        "set[str]",  # None removed
        {obj.attrs.get("bigimg_source"), obj.encoding.get("source"), source} - {None, ""},
    )
    for v in obj.coords.variables.values():
        if v.chunks is not None:
            sources |= read_paths(v.data)
    if obj.chunks is not None:
        sources |= read_paths(obj.data)
    check_disjoint(
        loc.url,
        [s for s in sources if _may_exist(s) and not (level and is_level_of(loc, s))],
        what="store",
    )
    if fingerprint is None:
        fingerprint = of_computation(obj, loc)
    attrs = {
        "bigimg_version": __version__,
        "bigimg_source": str(source or source_of(obj)),
        "bigimg_config": json.dumps(config),
        "bigimg_fingerprint": fingerprint,
        "bigimg_complete": False,
    }
    # provenance belongs to the store that holds it: never an input's (open_zarr merges them)
    obj = obj.copy(deep=False)
    obj.attrs = {k: v for k, v in obj.attrs.items() if k not in PROVENANCE}
    ds, encoding = as_dataset(obj, shards, compress=compress)
    start = time.perf_counter()
    check_output(loc, overwrite=overwrite, resume=resume)
    with disk_errors(loc), writer_lock(loc) as lease:
        written, skipped, values = _write_store(
            ds, encoding, loc, attrs, fingerprint, resume, progress, also
        )
        if before_complete is not None:
            before_complete(loc)
        if lease is not None:
            lease.check()
        mark_complete(loc)
    return WriteResult(
        loc.path if loc.local else str(loc), written, skipped, time.perf_counter() - start, values
    )


def _may_exist(source: str) -> bool:
    """A local source that exists, or any URL (checking one would cost a request)."""
    return Location.of(source).local is False or Path(source).exists()


def _write_store(
    ds: xr.Dataset,
    encoding: dict[Hashable, Any],
    loc: Location,
    attrs: dict[str, Any],
    fingerprint: Mapping[str, Any],
    resume: bool,
    progress: bool | None,
    also: Sequence[Any] = (),
) -> tuple[int, int, tuple[Any, ...] | None]:
    """Create (or check and resume) the store and write its missing objects (and ``also``)."""
    fresh = _prepare(loc, resume=resume)
    if fresh:
        import zarr

        ds.attrs.update(attrs)
        with quiet_zarr(), storage_errors(loc):
            # the group first, with its attrs: xarray would create it bare and set them
            # after, and a store stopped in between would not say that bigimg made it
            zarr.open_group(loc.zarr_store(), mode="w-", attributes=attrs, zarr_format=3)
            ds.to_zarr(
                loc.zarr_store(),
                mode="a",
                compute=False,
                consolidated=True,
                zarr_format=3,
                write_empty_chunks=True,
                encoding=encoding,
            )
        chunked = [(str(k), v.data) for k, v in ds.variables.items() if v.chunks is not None]
        if also and len(chunked) == 1:
            return _write_with(chunked[0][1], chunked[0][0], loc, also, progress)
        return (*_write_chunks(ds, loc, progress=progress), None)
    check_fingerprint(loc, fingerprint)  # the same computation, before anything is touched
    if _unborn(loc, ds):  # interrupted before its arrays existed: no chunk stored
        with storage_errors(loc):
            loc.remove()
        return _write_store(ds, encoding, loc, attrs, fingerprint, False, progress, also)
    _check_resumable(loc, ds, encoding)
    if _read_attrs(loc).get("bigimg_complete"):  # every block (chunk or shard) is stored
        return 0, sum(v.data.npartitions for v in ds.variables.values() if v.chunks), None
    if loc.local:
        for name in ds.variables:
            _clean_partials(loc.path / str(name))
    return (*_write_chunks(ds, loc, progress=progress), None)


def _unborn(loc: Location, ds: xr.Dataset) -> bool:
    """True for a store whose write stopped before all its arrays were made.

    xarray creates the group (with bigimg's attrs) first, then each array's
    metadata, and writes chunks only after that, so such a store holds no data.
    """
    import zarr

    group = zarr.open_group(loc.zarr_store(read_only=True), mode="r", use_consolidated=False)
    return any(v.chunks is not None and str(k) not in group for k, v in ds.variables.items())


#: A local disk that refuses a write: full, over quota, read-only, not permitted.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@contextmanager
def disk_errors(loc: Location) -> Iterator[None]:
    """A local store's refused write as one line naming the store and what to do next.

    The store is left as it is, incomplete (``bigimg_complete`` is set last),
    so the write can be finished with ``resume`` once the disk takes it.
    """
    try:
        yield
    except OSError as e:
        if not loc.local or e.errno not in _DISK_ERRNOS:
            raise
        then = (
            "; it is incomplete: free the space (or make it writable) and finish it with "
            "--resume (resume=True)"
            if is_zarr_store(loc)
            else ""
        )
        err = OSError(f"store: cannot write {str(loc)!r}: {e.strerror}{then}")
        err.errno = e.errno
        raise err from e


def open_dataset(loc: Location, *, allow_incomplete: bool) -> tuple[Location, xr.Dataset]:
    """The store's location and lazy Dataset; clear errors unless it is a (complete) bigimg store."""
    existing_store(loc)
    try:
        with quiet_zarr():
            ds = xr.open_zarr(loc.zarr_store(read_only=True), consolidated=None, chunks={})
    except Exception as e:
        raise unreadable_metadata(str(loc), e) from e
    if VAR not in ds.variables and "bigimg_complete" in ds.attrs:
        raise ValueError(
            f"store: {str(loc)!r} is incomplete (its write was interrupted before the "
            f"{VAR!r} array was created, so it holds no data); finish it with "
            "`bigimg run --resume` or bi.to_zarr(..., resume=True), or start again with overwrite"
        )
    if VAR not in ds.variables:
        raise ValueError(
            f"store: {str(loc)!r} has no {VAR!r} variable (found {list(ds.data_vars)!r}); "
            "it was not written by bigimg"
        )
    if not ds.attrs.get("bigimg_complete") and not allow_incomplete:
        raise ValueError(
            f"store: {str(loc)!r} is incomplete (its write was interrupted); finish it with "
            "`bigimg run --resume` or bi.to_zarr(..., resume=True), or read what is stored with "
            "bi.open_zarr(..., allow_incomplete=True)"
        )
    return loc, ds


def stored_image(loc: Location, ds: xr.Dataset) -> tuple[xr.DataArray, Callable[[Any], Any]]:
    """The store's image in its own chunks, and how to read it in others (see ``read_in_chunks``)."""
    var = ds.variables[VAR]
    coords = {k: c for k, c in ds.coords.items() if k != VAR and set(c.dims) <= set(var.dims)}
    if _STACK_LABELS in coords:  # a stack's `image` labels, stored aside (see as_dataset)
        coords[VAR] = coords.pop(_STACK_LABELS).rename(VAR)
    complete = bool(ds.attrs.get("bigimg_complete"))
    view = view_order(var.dims)
    coords = {k: c.transpose(*[d for d in view if d in c.dims]) for k, c in coords.items()}
    perm = tuple(var.dims.index(d) for d in view)  # view axis i is disk axis perm[i]
    disk_chunks = cast("tuple[tuple[int, ...], ...]", var.chunks)  # opened with chunks={}

    def read(chunks: tuple[tuple[int, ...], ...]) -> Any:
        """The image in ``chunks`` (view order); each task reads on disk and transposes.

        The transpose happens inside the read task, so the read layer's keys
        are in view order: one layer, and a block's tasks share its index
        (the filters' halo recomputation follows them).
        """
        return _checked_read(loc, VAR, var, chunks, complete=complete, perm=perm)

    out = xr.DataArray(
        read(tuple(disk_chunks[p] for p in perm)),
        dims=view,
        coords=coords,
        name=VAR,
        attrs={**var.attrs, **ds.attrs},
    )
    return out, read


def open_store(
    loc: Location, *, allow_incomplete: bool = False, chunks: Any = None
) -> xr.DataArray:
    """A bigimg store's ``image`` (lazy); :func:`bigimg.open_zarr` documents it."""
    loc, ds = open_dataset(loc, allow_incomplete=allow_incomplete)
    out, read = stored_image(loc, ds)
    out.encoding["source"] = loc.url  # what to_zarr must never overwrite
    if chunks is None:
        return out
    if not isinstance(chunks, Mapping):
        return out.chunk(chunks)
    check_dims(out, chunks, "chunks")
    out_chunks = cast("tuple[tuple[int, ...], ...]", out.chunks)  # dask-backed
    target = {d: chunks.get(d, out_chunks[i]) for i, d in enumerate(out.dims)}
    return read_in_chunks(out, target, read)


@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's note that consolidated metadata is not in the v3 spec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def _checked_read(
    loc: Location,
    name: str,
    var: xr.Variable,
    chunks: Any,
    *,
    complete: bool = False,
    perm: tuple[int, ...] | None = None,
) -> Any:
    """The variable in ``chunks`` as a dask array whose read errors name the chunk.

    From a ``complete`` store every object must be present: zarr would read a
    missing one as the fill value, so each task checks its objects' keys first.
    With ``perm``, the array is the variable transposed (view axis ``i`` is
    disk axis ``perm[i]``; ``chunks`` in view order), each task transposing
    its own block.
    """
    import dask.array as da
    from dask.base import tokenize

    dtype = np.dtype(var.dtype)
    layer = note_read(f"read-zarr-{tokenize(loc, name, chunks, complete, perm)}", loc.url)
    return da.map_blocks(
        _read_chunk,
        dtype=dtype,
        chunks=chunks,
        meta=np.empty((0,) * var.ndim, dtype),
        name=layer,
        store=loc,
        var=name,
        complete=complete,
        opened=uuid.uuid4().hex,
        perm=perm,
    )


@functools.lru_cache(maxsize=32)
def _open_array(loc: Location, var: str, mode: str, opened: str) -> Any:
    """The zarr array, opened once per process and graph (``opened`` tells graphs apart).

    Opening reads the array's metadata: once per task would be one more
    request per chunk on object storage.
    """
    import zarr

    return zarr.open_array(loc.zarr_store(read_only=mode == "r"), path=var, mode=mode)


def _read_chunk(
    block_info: Any = None,
    *,
    store: Location,
    var: str,
    complete: bool = False,
    opened: str = "",
    perm: tuple[int, ...] | None = None,
) -> np.ndarray:
    info = block_info[None]
    view = tuple(slice(a, b) for a, b in info["array-location"])
    location = tuple(info["chunk-location"])
    region, where = view, location  # on disk
    if perm is not None:
        region, where = _to_disk(view, perm), _to_disk(location, perm)
    arr = None
    try:
        arr = _open_array(store, var, "r", opened)
        data = np.asarray(arr[region])
        if complete:
            _check_present(arr, store, var, region, data)
        return data if perm is None else np.transpose(data, perm)
    except CorruptStoreError:
        raise
    except Exception as e:
        found = _first_unreadable_chunk(arr, region) if arr is not None else None
        index, error = found or (where, e)
        raise CorruptStoreError(
            f"{store}: array {var!r} chunk {tuple(index)} cannot be read "
            f"({type(error).__name__}: {error}); the store is damaged"
        ) from e


def _to_disk(view: tuple[Any, ...], perm: tuple[int, ...]) -> tuple[Any, ...]:
    """Per-axis values in view order -> disk order (view axis ``i`` is disk axis ``perm[i]``)."""
    disk: list[Any] = [None] * len(perm)
    for i, p in enumerate(perm):
        disk[p] = view[i]
    return tuple(disk)


def _grid(arr: Any) -> tuple[int, ...]:
    """The shape of one stored object: a shard if the array is sharded, else a chunk."""
    return tuple(arr.shards or arr.chunks)


def _region_blocks(grid: tuple[int, ...], region: tuple[slice, ...]) -> Iterator[tuple[int, ...]]:
    """Indices of the blocks of shape ``grid`` that ``region`` touches."""
    ranges = [range(r.start // c, -(-r.stop // c)) for r, c in zip(region, grid, strict=True)]
    return itertools.product(*ranges)


def _check_present(
    arr: Any, store: Location, var: str, region: tuple[slice, ...], data: np.ndarray
) -> None:
    """Raise naming the first object of ``region`` missing from a complete store.

    zarr reads a missing object as the fill value, so one whose first element
    read (in ``data``) is not the fill value is present; only the others are
    looked up in the store (a key lookup costs about as much as 4% of
    decoding a 3 MiB chunk locally, so it is skipped where it cannot matter).
    """
    from zarr.core.sync import sync

    fill = arr.fill_value
    grid = _grid(arr)
    for index in _region_blocks(grid, region):
        first = data[
            tuple(
                max(i * c, r.start) - r.start for i, c, r in zip(index, grid, region, strict=True)
            )
        ]
        if not (first == fill or (first != first and fill != fill)):  # != itself: NaN
            continue
        key = f"{var}/{arr.metadata.encode_chunk_key(index)}"
        if not sync(arr.store.exists(key)):
            raise CorruptStoreError(
                f"{store}: array {var!r} chunk {index} is missing (key {key!r}) from a store "
                "marked complete; the store is damaged"
            )


def _first_unreadable_chunk(arr: Any, region: tuple[slice, ...]) -> Any:
    """``(index, error)`` of the first chunk in ``region`` that fails to read, or None.

    A task may read several chunks (see :func:`bigimg.io.chunks.read_in_chunks`,
    and the inner chunks of a shard); on failure each is read alone, so the
    error names the damaged one.
    """
    chunks = tuple(arr.chunks)
    for index in _region_blocks(chunks, region):
        where = tuple(
            slice(i * c, min((i + 1) * c, n))
            for i, c, n in zip(index, chunks, arr.shape, strict=True)
        )
        try:
            arr[where]
        except Exception as e:
            return index, e
    return None


def disk_order(dims: Iterable[Hashable]) -> list[Hashable]:
    """The on-disk (OME-NGFF) dim order: other dims (a stack's ``image``), ``band``, ``y``, ``x``.

    OME-NGFF 0.5 puts a channel axis before the space axes, so bigimg stores
    ``(y, x, band)`` as ``(band, y, x)`` and ``(image, y, x, band)`` as
    ``(image, band, y, x)``.

    Examples
    --------
    >>> disk_order(("image", "y", "x", "band"))
    ['image', 'band', 'y', 'x']
    """
    dims = list(dims)
    image = [d for d in ("band", "y", "x") if d in dims]
    return [d for d in dims if d not in image] + image


def view_order(dims: Iterable[Hashable]) -> list[Hashable]:
    """bigimg's dim order for a stored array: ``(image, y, x, band)``'s, other dims first.

    Examples
    --------
    >>> view_order(("band", "y", "x"))
    ['y', 'x', 'band']
    """
    dims = list(dims)
    known = [d for d in STACK_DIMS if d in dims]
    return [d for d in dims if d not in known] + known


def as_dataset(
    obj: xr.DataArray, shards: Mapping[Hashable, int] | None = None, *, compress: bool = True
) -> tuple[xr.Dataset, dict[Hashable, Any]]:
    """The Dataset to store, in dask chunks of one stored object each, and its encoding.

    Zarr chunks are regular: the largest dask chunk along each dim. With
    ``shards`` (shard size per dim, each a multiple of the chunk size; dims
    left out take one chunk), each dask chunk becomes one whole shard, so
    exactly one task writes each shard object.
    """
    arr = obj.data
    if not hasattr(arr, "chunks") or arr.chunks is None:
        obj = obj.chunk()
    # zarr needs regular chunks: take the largest chunk along each dim
    chunks = cast("tuple[tuple[int, ...], ...]", obj.chunks)  # dask-backed now
    regular = {d: max(c) for d, c in zip(obj.dims, chunks, strict=True)}
    shard = _shard_shape(obj, regular, shards)
    obj = obj.chunk(shard or regular).transpose(*disk_order(obj.dims))
    if VAR in obj.coords:  # a stack: the `image` dim's labels cannot share the variable's name
        labels = obj.coords[VAR]
        obj = obj.drop_vars(VAR).assign_coords({_STACK_LABELS: (VAR, labels.values, labels.attrs)})
    # for a stack the variable is named like its first dim: xarray lists it under
    # coords, yet `xr.open_zarr(path)["image"]` is still the array
    ds = obj.to_dataset(name=VAR)
    for name, coord in ds.coords.items():  # dask coords: write them chunk by chunk too
        if coord.chunks is not None:
            ds = ds.assign_coords({name: coord.chunk({d: regular[d] for d in coord.dims})})
    encoding = _encoding(ds, compress)
    if shard:
        encoding[VAR]["chunks"] = tuple(regular[d] for d in obj.dims)
        encoding[VAR]["shards"] = tuple(shard[d] for d in obj.dims)
    return ds, encoding


def _shard_shape(
    obj: xr.DataArray, chunks: Mapping[Hashable, int], shards: Mapping[Hashable, int] | None
) -> dict[Hashable, int] | None:
    """Shard size per dim (validated), or None when the store is not sharded."""
    if shards is None:
        return None
    if not isinstance(shards, Mapping):
        raise TypeError(f"shards must be a dict of shard size by dim, got {shards!r}")
    check_dims(obj, shards, "shards")
    out = {}
    for d in obj.dims:
        size = shards.get(d, chunks[d])
        if not isinstance(size, int | np.integer) or isinstance(size, bool) or size < 1:
            raise ValueError(f"shards[{d!r}] must be a positive int, got {size!r}")
        if size % chunks[d]:
            raise ValueError(
                f"shards[{d!r}]={size} must be a multiple of the chunk size {chunks[d]} along "
                f"{d!r} (rechunk the image, or pick a multiple)"
            )
        out[d] = int(size)
    return out


def _encoding(ds: xr.Dataset, compress: bool = True) -> dict[Hashable, Any]:
    """Blosc-zstd (unless not ``compress``) then a crc32c checksum, per chunk."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    codecs = [BloscCodec(cname="zstd", clevel=3)] if compress else []
    out = {}
    for name, var in ds.variables.items():
        if var.chunks is None:
            continue
        out[name] = {
            "chunks": tuple(c[0] for c in var.chunks),
            "compressors": [*codecs, Crc32cCodec()],
        }
    return out


def check_output(
    loc: Location,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> str:
    """Check that ``store`` may be written, without touching it.

    Returns what :func:`to_zarr` will do: ``"create"``, ``"replace"``
    (overwrite an existing store) or ``"resume"``. Call it before expensive
    work so that a refused output fails fast. A store that overlaps one of
    ``inputs`` (the same path, inside it, or holding it) is refused whatever
    the flags.

    Raises
    ------
    FileExistsError, FileNotFoundError, ValueError
        As :func:`to_zarr` would.
    OSError
        An object store that cannot be reached (endpoint, bucket, credentials).
    """
    check_disjoint(loc.url, inputs, what="store")
    if overwrite and resume:
        raise ValueError("overwrite and resume are exclusive: pass one of them")
    if loc.read_only:
        raise ValueError(f"store: {str(loc)!r} is read-only ({loc.scheme}://); write elsewhere")
    if loc.local:
        path = loc.path
        check_unlocked(loc)  # a running writer: refused now, not once a run has started work
        if not path.exists():
            if not path.parent.exists():
                raise FileNotFoundError(f"store: parent folder {str(path.parent)!r} does not exist")
            return "create"
        if not path.is_dir():
            raise ValueError(f"store: {str(path)!r} is a file, not a Zarr store")
        empty = not any(path.iterdir())
    else:
        check_bucket(loc)
        with storage_errors(loc):
            check_unlocked(loc)
            empty = loc.is_empty()
    if not is_zarr_store(loc):
        if not empty:
            raise ValueError(
                f"store: {str(loc)!r} is a non-empty folder that is not a Zarr store; "
                "refusing to write into it"
            )
        return "create"
    if resume:
        return "resume"
    if overwrite:
        return "replace"
    raise FileExistsError(
        f"store: {str(loc)!r} already exists; pass overwrite=True (--overwrite) to replace "
        "it or resume=True (--resume) to finish an interrupted write"
    )


def _prepare(loc: Location, *, resume: bool) -> bool:
    """Clear the (locked, checked) output if needed; True when a fresh store is made."""
    if resume and is_zarr_store(loc):
        return False
    if is_zarr_store(loc):  # replaced (check_output allowed it)
        with storage_errors(loc):
            loc.remove()
    elif loc.local and loc.path.is_dir():  # an empty folder
        loc.path.rmdir()
    return True


def is_complete(loc: Location) -> bool:
    """True when ``loc`` is a bigimg store whose write finished (``bigimg_complete``)."""
    return is_zarr_store(loc) and bool(_read_attrs(loc).get("bigimg_complete"))


def _read_attrs(loc: Location) -> dict[str, Any]:
    import zarr

    store = loc.zarr_store(read_only=True)
    return dict(zarr.open_group(store, mode="r", use_consolidated=False).attrs)


def _check_resumable(loc: Location, ds: xr.Dataset, encoding: Mapping[Hashable, Any]) -> None:
    """Refuse to resume a store (of this computation's fingerprint) whose arrays differ."""
    import zarr

    group = zarr.open_group(loc.zarr_store(read_only=True), mode="r", use_consolidated=False)
    for name, var in ds.variables.items():
        if var.chunks is None:
            continue
        key = cast(str, name)  # a Zarr store's variable names are str
        if key not in group:
            raise ValueError(f"resume: {str(loc)!r} has no array {name!r}")
        arr = cast("zarr.Array", group[key])
        enc = encoding[name]
        want = (tuple(var.shape), tuple(enc["chunks"]), np.dtype(var.dtype))
        have = (tuple(arr.shape), tuple(arr.chunks), np.dtype(arr.dtype))
        if want != have:
            raise ValueError(
                f"resume: {name!r} in {str(loc)!r} has (shape, chunks, dtype) {have}, "
                f"the computation gives {want}"
            )
        if (arr.shards and tuple(arr.shards)) != (enc.get("shards") and tuple(enc["shards"])):
            raise ValueError(
                f"resume: {name!r} in {str(loc)!r} has shards {arr.shards}, the computation "
                f"gives {enc.get('shards')}"
            )


def _clean_partials(array_path: Path) -> None:
    """Remove the temporaries of killed chunk writes; only the writer resuming a store calls it."""
    for partial in array_path.glob("c/**/*.partial"):
        partial.unlink(missing_ok=True)


def is_level_of(loc: Location, source: str) -> bool:
    """True when ``loc`` is a pyramid level (``<root>/levels/<k>``) of the store ``source``
    or of a coarser level's source: levels are written inside the store they summarise."""
    real, src = path_parts(loc.url), path_parts(source)
    return (
        len(real) > 2
        and real[-2] == "levels"
        and real[-1].isdigit()
        and (src == real[:-2] or (src[:-1] == real[:-1] and src[-1].isdigit()))
    )


def _write_block(
    block: np.ndarray, store: Location, name: str, region: tuple[slice, ...], opened: str
) -> int:
    import zarr

    with zarr.config.set({"array.write_empty_chunks": True}):
        _open_array(store, name, "r+", opened)[region] = block
    return 1


def _write_at(
    block: np.ndarray, block_info: Any = None, *, store: Location, var: str, opened: str
) -> np.ndarray:
    """Write one block where it belongs (from dask's ``block_info``): one 1 per block."""
    region = tuple(slice(a, b) for a, b in block_info[0]["array-location"])
    return np.full((1,) * block.ndim, _write_block(block, store, var, region, opened))


def block_writes(darr: da.Array, loc: Location, var: str) -> da.Array:
    """One task per block of ``darr`` that writes it into ``var`` of ``loc`` (lazy).

    A single layer (``map_blocks``): blockwise fusion can merge it into the
    block's own tasks, and the graph stays linear in the number of blocks.
    """
    return da.map_blocks(
        _write_at,
        darr,
        store=loc,
        var=var,  # map_blocks takes name= for the layer
        opened=uuid.uuid4().hex,
        chunks=(1,) * darr.ndim,
        dtype=np.int64,
        meta=np.empty((0,) * darr.ndim, np.int64),
    )


def _write_with(
    darr: da.Array, name: str, loc: Location, also: Sequence[Any], progress: bool | None
) -> tuple[int, int, tuple[Any, ...]]:
    """Write every block of ``darr`` and compute ``also`` in one graph (shared blocks once)."""
    done, *values = compute_with_progress(
        [block_writes(darr, loc, name), *also], progress=progress, desc=f"writing {loc.name}"
    )
    return int(done.sum()), 0, tuple(values)


def _write_chunks(ds: xr.Dataset, loc: Location, *, progress: bool | None) -> tuple[int, int]:
    tasks = []
    skipped = 0
    chunked = {name: var.data for name, var in ds.variables.items() if var.chunks is not None}
    # Array optimization fuses shared layers into each output: a dask coord built
    # from the image's graph (a stack's weight) would recompute it. Optimize only
    # a lone variable; several keep their shared keys, computed once.
    optimize = len(chunked) == 1
    writes = {name: block_writes(darr, loc, str(name)) for name, darr in chunked.items()}
    stored = {name: stored_chunks(loc, str(name)) for name in chunked}
    if not any(stored.values()):  # a fresh write: whole arrays, no per-block graph work
        compute_with_progress(list(writes.values()), progress=progress, desc=f"writing {loc.name}")
        return sum(w.npartitions for w in writes.values()), 0
    for name, w in writes.items():  # a resume: only the blocks not stored yet
        blocks = w.to_delayed(optimize_graph=optimize)
        for idx in np.ndindex(blocks.shape):
            if idx in stored[name]:
                skipped += 1
            else:
                tasks.append(blocks[idx])
    compute_with_progress(tasks, progress=progress, desc=f"writing {loc.name}")
    return len(tasks), skipped


def mark_complete(loc: Location) -> None:
    import zarr

    store = loc.zarr_store()
    with quiet_zarr(), storage_errors(loc):
        group = zarr.open_group(store, mode="r+", use_consolidated=False)
        group.attrs["bigimg_complete"] = True
        zarr.consolidate_metadata(store)
