"""One bigimg store: layout, provenance, completeness, resumable writes, checked reads.

A bigimg store is a Zarr v3 group holding one data variable, ``image``, written
through xarray so that ``xr.open_zarr(path)["image"]`` reads it with nothing
else. Chunks are written one task per chunk; zarr's local store writes each
chunk file atomically (a temporary ``*.partial`` file renamed into place), so a
chunk file that exists is complete. ``bigimg_complete`` is set only after every
chunk is stored; ``resume=True`` writes just the chunks that are missing.
Every chunk carries a CRC32C checksum, so a damaged chunk fails to decode.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
import warnings
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import dask
import numpy as np
import xarray as xr

from bigimg._version import __version__
from bigimg.compute import compute_with_progress
from bigimg.errors import CorruptStoreError, unreadable_metadata
from bigimg.files import check_disjoint, note_read, read_paths
from bigimg.io.chunks import read_in_chunks

VAR = "image"
_STACK_LABELS = "image_label"
_MARKERS = ("zarr.json", ".zgroup", ".zarray")


@dataclass(frozen=True)
class WriteResult:
    """What :func:`to_zarr` did: the store, and chunks written vs already there."""

    path: Path
    chunks_written: int
    chunks_skipped: int
    seconds: float


def is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in _MARKERS)


def write(
    obj: xr.DataArray,
    store: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    resume: bool = False,
    config: Any = None,
    source: str | None = None,
    progress: bool | None = None,
    inputs: Mapping[str, Any] | None = None,
    before_complete: Callable[[Path], object] | None = None,
) -> WriteResult:
    """Write ``obj`` as a bigimg store (computes); :func:`bigimg.to_zarr` documents the rest.

    ``before_complete(path)`` runs, under the writer lock, after every chunk
    is stored and before the store is marked complete (the pyramid levels).
    """
    if not isinstance(obj, xr.DataArray):
        raise TypeError(f"obj must be an xarray.DataArray, got {type(obj).__name__}")
    path = Path(store)
    config_json = json.dumps(config if config is not None else obj.attrs.get("bigimg_config"))
    source = str(source or obj.attrs.get("bigimg_source", ""))
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
        path, [s for s in sources if Path(s).exists() and not is_level_of(path, s)], what="store"
    )
    fingerprint = fingerprint_json(source, inputs, config_json)
    attrs = {
        "bigimg_version": __version__,
        "bigimg_source": source,
        "bigimg_config": config_json,
        "bigimg_fingerprint": fingerprint,
        "bigimg_complete": False,
    }
    ds = as_dataset(obj)
    start = time.perf_counter()
    check_output(path, overwrite=overwrite, resume=resume)
    with writer_lock(path):
        written, skipped = _write_store(ds, path, attrs, fingerprint, resume, progress)
        if before_complete is not None:
            before_complete(path)
        mark_complete(path)
    return WriteResult(path, written, skipped, time.perf_counter() - start)


def _write_store(
    ds: xr.Dataset,
    path: Path,
    attrs: dict[str, Any],
    fingerprint: dict[str, Any],
    resume: bool,
    progress: bool | None,
) -> tuple[int, int]:
    """Create (or check and resume) the store and write its missing chunks."""
    fresh = _prepare_path(path, resume=resume)
    if fresh:
        ds.attrs.update(attrs)
        with quiet_zarr():
            ds.to_zarr(
                path,
                mode="w-",
                compute=False,
                consolidated=True,
                zarr_format=3,
                write_empty_chunks=True,
                encoding=_encoding(ds),
            )
        return _write_chunks(ds, path, progress=progress)
    _check_resumable(path, ds, fingerprint)
    if _read_attrs(path).get("bigimg_complete"):
        return 0, 0
    for name in ds.variables:
        _clean_partials(path / str(name))
    return _write_chunks(ds, path, progress=progress)


@contextmanager
def writer_lock(path: Path) -> Iterator[None]:
    """Hold the store's writer lock: a second writer (even with overwrite) is refused.

    The lock is an ``flock`` on the hidden file ``.<store name>.bigimg-lock``
    beside the store (inside it, zarr would list it as a foreign object), held
    by the process that runs :func:`to_zarr` for the whole write. The kernel
    releases it when that process ends, however it ends, so a killed writer
    never leaves a stale lock; the file is removed after a finished write.
    """
    import fcntl

    lock = path.parent / f".{path.name}.bigimg-lock"
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(
                f"store: {str(path)!r} is being written by another bigimg process; wait for "
                "it to finish or stop it first"
            ) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def open_dataset(
    store: str | os.PathLike[str], *, allow_incomplete: bool
) -> tuple[Path, xr.Dataset]:
    """The store's path and lazy Dataset; clear errors unless it is a (complete) bigimg store."""
    path = existing_store(store)
    try:
        with quiet_zarr():
            ds = xr.open_zarr(path, consolidated=None, chunks={})
    except Exception as e:
        raise unreadable_metadata(path, e) from e
    if VAR not in ds.variables:
        raise ValueError(
            f"store: {str(path)!r} has no {VAR!r} variable (found {list(ds.data_vars)!r}); "
            "it was not written by bigimg"
        )
    if not ds.attrs.get("bigimg_complete") and not allow_incomplete:
        raise ValueError(
            f"store: {str(path)!r} is incomplete (its write was interrupted); finish it with "
            "`bigimg run --resume` or bi.to_zarr(..., resume=True), or pass allow_incomplete=True"
        )
    return path, ds


def stored_image(path: Path, ds: xr.Dataset) -> tuple[xr.DataArray, Callable[[Any], Any]]:
    """The store's image in its own chunks, and how to read it in others (see ``read_in_chunks``)."""
    var = ds.variables[VAR]
    coords = {k: c for k, c in ds.coords.items() if k != VAR and set(c.dims) <= set(var.dims)}
    if _STACK_LABELS in coords:  # a stack's `image` labels, stored aside (see as_dataset)
        coords[VAR] = coords.pop(_STACK_LABELS).rename(VAR)
    complete = bool(ds.attrs.get("bigimg_complete"))
    out = xr.DataArray(
        _checked_read(path, VAR, var, var.chunks, complete=complete),
        dims=var.dims,
        coords=coords,
        name=VAR,
        attrs={**var.attrs, **ds.attrs},
    )
    return out, lambda chunks: _checked_read(path, VAR, var, chunks, complete=complete)


def open_store(
    store: str | os.PathLike[str], *, allow_incomplete: bool = False, chunks: Any = None
) -> xr.DataArray:
    """A bigimg store's ``image`` (lazy); :func:`bigimg.open_zarr` documents it."""
    path, ds = open_dataset(store, allow_incomplete=allow_incomplete)
    out, read = stored_image(path, ds)
    out.encoding["source"] = str(path)  # what to_zarr must never overwrite
    if chunks is None:
        return out
    if not isinstance(chunks, Mapping):
        return out.chunk(chunks)
    unknown = [d for d in chunks if d not in out.dims]
    if unknown:
        raise ValueError(
            f"chunks names unknown dim(s) {unknown!r}; the image has dims {out.dims!r}"
        )
    out_chunks = cast("tuple[tuple[int, ...], ...]", out.chunks)  # dask-backed
    target = {d: chunks.get(d, out_chunks[i]) for i, d in enumerate(out.dims)}
    return read_in_chunks(out, target, read)


# ---------------------------------------------------------------- internals
@contextmanager
def quiet_zarr() -> Iterator[None]:
    """Silence zarr's note that consolidated metadata is not in the v3 spec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def _checked_read(
    path: Path, name: str, var: xr.Variable, chunks: Any, *, complete: bool = False
) -> Any:
    """The variable in ``chunks`` as a dask array whose read errors name the chunk.

    From a ``complete`` store every chunk must be present: zarr would read a
    missing one as the fill value, so each task checks its chunks' keys first.
    """
    import dask.array as da
    from dask.base import tokenize

    dtype = np.dtype(var.dtype)
    layer = note_read(f"read-zarr-{tokenize(str(path), name, chunks, complete)}", path)
    return da.map_blocks(
        _read_chunk,
        dtype=dtype,
        chunks=chunks,
        meta=np.empty((0,) * var.ndim, dtype),
        name=layer,
        store=str(path),
        var=name,
        complete=complete,
    )


def _read_chunk(
    block_info: Any = None, *, store: str, var: str, complete: bool = False
) -> np.ndarray:
    import zarr

    info = block_info[None]
    region = tuple(slice(a, b) for a, b in info["array-location"])
    arr = None
    try:
        arr = zarr.open_array(store, path=var, mode="r")
        data = np.asarray(arr[region])
        if complete:
            _check_present(arr, store, var, region, data)
        return data
    except CorruptStoreError:
        raise
    except Exception as e:
        found = _first_unreadable_chunk(arr, region) if arr is not None else None
        index, error = found or (info["chunk-location"], e)
        raise CorruptStoreError(
            f"{store}: array {var!r} chunk {tuple(index)} cannot be read "
            f"({type(error).__name__}: {error}); the store is damaged"
        ) from e


def _region_chunks(arr: Any, region: tuple[slice, ...]) -> Iterator[tuple[int, ...]]:
    """Indices of the store chunks that ``region`` touches."""
    ranges = [range(r.start // c, -(-r.stop // c)) for r, c in zip(region, arr.chunks, strict=True)]
    return itertools.product(*ranges)


def _check_present(
    arr: Any, store: str, var: str, region: tuple[slice, ...], data: np.ndarray
) -> None:
    """Raise naming the first chunk of ``region`` missing from a complete store.

    zarr reads a missing chunk as the fill value, so a chunk whose first
    element read (in ``data``) is not the fill value is present; only the
    others are looked up in the store (a key lookup costs about as much as
    4% of decoding a 3 MiB chunk, so it is skipped where it cannot matter).
    """
    from zarr.core.sync import sync

    fill = arr.fill_value
    for index in _region_chunks(arr, region):
        first = data[
            tuple(
                max(i * c, r.start) - r.start
                for i, c, r in zip(index, arr.chunks, region, strict=True)
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
    """``(index, error)`` of the first store chunk in ``region`` that fails to read, or None.

    A task may read several store chunks (see :func:`bigimg.io.chunks.read_in_chunks`);
    on failure each is read alone, so the error names the damaged one.
    """
    for index in _region_chunks(arr, region):
        try:
            arr.get_block_selection(index)
        except Exception as e:
            return index, e
    return None


def as_dataset(obj: xr.DataArray) -> xr.Dataset:
    arr = obj.data
    if not hasattr(arr, "chunks") or arr.chunks is None:
        obj = obj.chunk()
    # zarr needs regular chunks: take the largest chunk along each dim
    chunks = cast("tuple[tuple[int, ...], ...]", obj.chunks)  # dask-backed now
    regular = {d: max(c) for d, c in zip(obj.dims, chunks, strict=True)}
    obj = obj.chunk(regular)
    if VAR in obj.coords:  # a stack: the `image` dim's labels cannot share the variable's name
        labels = obj.coords[VAR]
        obj = obj.drop_vars(VAR).assign_coords({_STACK_LABELS: (VAR, labels.values, labels.attrs)})
    # for a stack the variable is named like its first dim: xarray lists it under
    # coords, yet `xr.open_zarr(path)["image"]` is still the array
    ds = obj.to_dataset(name=VAR)
    for name, coord in ds.coords.items():  # dask coords: write them chunk by chunk too
        if coord.chunks is not None:
            ds = ds.assign_coords({name: coord.chunk({d: regular[d] for d in coord.dims})})
    return ds


def _encoding(ds: xr.Dataset) -> dict[Hashable, Any]:
    from zarr.codecs import BloscCodec, Crc32cCodec

    out = {}
    for name, var in ds.variables.items():
        if var.chunks is None:
            continue
        out[name] = {
            "chunks": tuple(c[0] for c in var.chunks),
            "compressors": [BloscCodec(cname="zstd", clevel=3), Crc32cCodec()],
        }
    return out


def check_output(
    store: str | os.PathLike[str],
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
    """
    path = Path(store)
    check_disjoint(path, inputs, what="store")
    if overwrite and resume:
        raise ValueError("overwrite and resume are exclusive: pass one of them")
    if not path.exists():
        if not path.parent.exists():
            raise FileNotFoundError(f"store: parent folder {str(path.parent)!r} does not exist")
        return "create"
    if not path.is_dir():
        raise ValueError(f"store: {str(path)!r} is a file, not a Zarr store")
    if not is_zarr_store(path):
        if any(path.iterdir()):
            raise ValueError(
                f"store: {str(path)!r} is a non-empty folder that is not a Zarr store; "
                "refusing to write into it"
            )
        return "create"
    if resume:
        return "resume"
    if overwrite:
        return "replace"
    raise FileExistsError(
        f"store: {str(path)!r} already exists; pass overwrite=True (--overwrite) to replace "
        "it or resume=True (--resume) to finish an interrupted write"
    )


def _prepare_path(path: Path, *, resume: bool) -> bool:
    """Clear the (locked, checked) output path if needed; True when a fresh store is made."""
    if resume and is_zarr_store(path):
        return False
    if is_zarr_store(path):  # replaced (check_output allowed it)
        shutil.rmtree(path)
    elif path.is_dir():  # an empty folder
        path.rmdir()
    return True


def _read_attrs(path: Path) -> dict[str, Any]:
    import zarr

    return dict(zarr.open_group(str(path), mode="r", use_consolidated=False).attrs)


def _check_resumable(path: Path, ds: xr.Dataset, fingerprint: dict[str, Any]) -> None:
    """Refuse to resume a store written from another computation, naming what differs."""
    import zarr

    check_fingerprint(path, fingerprint)
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    for name, var in ds.variables.items():
        if var.chunks is None:
            continue
        key = cast(str, name)  # a Zarr store's variable names are str
        if key not in group:
            raise ValueError(f"resume: {str(path)!r} has no array {name!r}")
        arr = cast("zarr.Array", group[key])
        want = (tuple(var.shape), tuple(c[0] for c in var.chunks), np.dtype(var.dtype))
        have = (tuple(arr.shape), tuple(arr.chunks), np.dtype(arr.dtype))
        if want != have:
            raise ValueError(
                f"resume: {name!r} in {str(path)!r} has (shape, chunks, dtype) {have}, "
                f"the computation gives {want}"
            )


def check_fingerprint(store: str | os.PathLike[str], fingerprint: dict[str, Any]) -> None:
    """Refuse to resume ``store`` unless it was written from the same computation.

    ``fingerprint`` is :func:`fingerprint`'s value for the computation about to
    resume; the message names every part that differs.
    """
    import zarr

    path = Path(store)
    try:
        group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    except Exception as e:
        raise unreadable_metadata(path, e) from e
    stored = group.attrs.get("bigimg_fingerprint")
    if not isinstance(stored, dict):
        raise ValueError(
            f"resume: {str(path)!r} has no bigimg fingerprint (not written by this bigimg); "
            "use overwrite to start again"
        )
    differs = [
        k for k in sorted(set(stored) | set(fingerprint)) if stored.get(k) != fingerprint.get(k)
    ]
    if differs:
        what = "; ".join(
            f"{k}: stored {stored.get(k)!r}, now {fingerprint.get(k)!r}" for k in differs
        )
        raise ValueError(
            f"resume: {str(path)!r} was written from another config or input ({what}); "
            "use overwrite to start again"
        )


def fingerprint(source: str, inputs: Mapping[str, Any] | None, config: Any) -> dict[str, Any]:
    """Everything that determines a store's content, as JSON-able values.

    ``source`` is the input (a path, or a source name), ``inputs`` the options
    it was opened with, ``config`` the steps (recorded as ``bigimg_config``).
    """
    return fingerprint_json(source, inputs, json.dumps(config))


def fingerprint_json(
    source: str, inputs: Mapping[str, Any] | None, config_json: str
) -> dict[str, Any]:
    return {
        "bigimg_version": __version__,
        "source": source,
        "source_identity": _identity(source),
        "inputs": json.loads(json.dumps(dict(inputs or {}), default=str)),
        "steps": config_json,
    }


def _identity(source: str) -> str | None:
    """A cheap identity of an input path: a file's size and mtime, a store's metadata digest.

    Chunks are not read (that would cost a full pass), so an edit that
    changes only chunk files of a Zarr input goes unnoticed; any rewrite
    through zarr or bigimg rewrites the metadata, whose bytes and mtimes are
    digested.
    """
    if not source:
        return None
    p = Path(source)
    try:
        if p.is_file():
            st = p.stat()
            return f"file size={st.st_size} mtime_ns={st.st_mtime_ns}"
        if p.is_dir():
            digest = hashlib.sha256()
            metas = [
                m
                for pattern in ("zarr.json", ".z*")
                for m in (*p.glob(pattern), *p.glob(f"*/{pattern}"))
            ]
            for meta in sorted(metas):  # the root's and its arrays' metadata, not the chunks'
                stamp = f"{meta.relative_to(p)}\0{meta.stat().st_mtime_ns}\0".encode()
                digest.update(stamp + meta.read_bytes())
            return f"store metadata sha256={digest.hexdigest()}"
    except OSError:
        return None
    return None


def stored_chunks(array_path: Path) -> set[tuple[int, ...]]:
    """Block indices of chunk files present (complete: zarr writes atomically).

    Read-only: a ``*.partial`` file (a chunk being written, or one whose
    write was killed) is skipped, never removed here; see :func:`_clean_partials`.
    """
    root = array_path / "c"
    found: set[tuple[int, ...]] = set()
    if not root.exists():
        return found
    for dirpath, _dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        for f in files:
            if not f.endswith(".partial"):
                found.add(tuple(int(p) for p in (*rel, f)))
    return found


def _clean_partials(array_path: Path) -> None:
    """Remove the temporaries of killed chunk writes; only the writer resuming a store calls it."""
    for partial in array_path.glob("c/**/*.partial"):
        partial.unlink(missing_ok=True)


def is_level_of(path: Path, source: str) -> bool:
    """True when ``path`` is a pyramid level (``<root>/levels/<k>``) of the store ``source``
    or of a coarser level's source: levels are written inside the store they summarise."""
    real, src = Path(os.path.realpath(path)), Path(os.path.realpath(source))
    root = real.parent.parent
    return (
        real.parent.name == "levels"
        and real.name.isdigit()
        and (src == root or (src.parent == real.parent and src.name.isdigit()))
    )


def dim_names(arr: Any) -> tuple[str, ...]:
    """An array's dim names: Zarr v3 metadata, or xarray's ``_ARRAY_DIMENSIONS`` in v2."""
    names = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names or ())


def existing_store(store: str | os.PathLike[str]) -> Path:
    path = Path(store)
    if not path.exists():
        raise FileNotFoundError(f"store: no such Zarr store: {str(path)!r}")
    if not is_zarr_store(path):
        raise ValueError(f"store: {str(path)!r} is not a Zarr store")
    return path


def _write_block(block: np.ndarray, store: str, name: str, region: tuple[slice, ...]) -> int:
    import zarr

    with zarr.config.set({"array.write_empty_chunks": True}):
        arr = zarr.open_array(store, path=name, mode="r+")
        arr[region] = block
    return 1


def _write_chunks(ds: xr.Dataset, path: Path, *, progress: bool | None) -> tuple[int, int]:
    tasks = []
    skipped = 0
    chunked = {name: var.data for name, var in ds.variables.items() if var.chunks is not None}
    # Array optimization fuses shared layers into each output: a dask coord built
    # from the image's graph (a stack's weight) would recompute it. Optimize only
    # a lone variable; several keep their shared keys, computed once.
    optimize = len(chunked) == 1
    for name, darr in chunked.items():
        stored = stored_chunks(path / str(name))
        blocks = darr.to_delayed(optimize_graph=optimize)
        offsets = [np.concatenate([[0], np.cumsum(c)]) for c in darr.chunks]
        write = dask.delayed(_write_block, pure=True)
        for idx in np.ndindex(blocks.shape):
            if idx in stored:
                skipped += 1
                continue
            region = tuple(
                slice(int(o[i]), int(o[i + 1])) for o, i in zip(offsets, idx, strict=True)
            )
            tasks.append(write(blocks[idx], str(path), str(name), region))
    compute_with_progress(tasks, progress=progress, desc=f"writing {path.name}")
    return len(tasks), skipped


def mark_complete(path: Path) -> None:
    import zarr

    with quiet_zarr():
        group = zarr.open_group(str(path), mode="r+", use_consolidated=False)
        group.attrs["bigimg_complete"] = True
        zarr.consolidate_metadata(str(path))
