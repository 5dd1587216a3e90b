"""What a store holds, read from its metadata and key listing alone.

Light on purpose: zarr and fsspec, no dask or xarray, so that ``bigimg info``
(:mod:`bigimg.io.info`) starts at once. :mod:`~bigimg.io.store`,
:mod:`~bigimg.io.read` and :mod:`~bigimg.io.pyramid` build on it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from bigimg.errors import CorruptStoreError
from bigimg.io.location import Location

VAR = "image"
MARKERS = ("zarr.json", ".zgroup", ".zarray")
LEVELS_GROUP = "levels"  # pyramid levels: <store>/levels/<k>

StoreLike = str | os.PathLike[str] | Location


def is_zarr_store(where: str | os.PathLike[str] | Location) -> bool:
    """True when ``where`` holds Zarr metadata at its root (never raises for a missing path)."""
    loc = Location.of(where)
    if loc.local:
        return loc.path.is_dir() and any((loc.path / m).exists() for m in MARKERS)
    return any(loc.exists(m) for m in MARKERS)


@contextmanager
def storage_errors(loc: Location) -> Iterator[None]:
    """Turn a remote store's connection, permission and missing-bucket errors into one line.

    The message names the URL (never the storage options) and the error's
    first line; it is an ``OSError``, so the CLI reports it and exits 2.
    """
    if loc.local:
        yield
        return
    try:
        yield
    except (CorruptStoreError, ValueError, TypeError, KeyError):
        raise
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:300]
        raise OSError(f"store: cannot access {loc}: {type(e).__name__}: {first}") from e


def check_bucket(loc: Location) -> None:
    """Raise when the bucket holding ``loc`` is missing, forbidden or unreachable (one request)."""
    if loc.scheme in ("memory", "http", "https"):
        return
    fs, path = loc.filesystem()
    bucket = path.strip("/").split("/", 1)[0]
    try:
        with storage_errors(loc):
            fs.info(bucket)
    except OSError as e:
        if isinstance(e.__cause__, FileNotFoundError):
            raise FileNotFoundError(
                f"store: bucket {bucket!r} of {str(loc)!r} does not exist"
            ) from None
        raise


def stored_chunks(loc: Location, name: str) -> set[tuple[int, ...]]:
    """Block indices of the objects (chunks, or shards) of array ``name`` that are stored.

    A listed key is complete (see the module notes). Read-only: a local
    ``*.partial`` file (a chunk being written, or one whose write was killed)
    is skipped, never removed here; see :func:`bigimg.io.store.write`. So is
    any key that is not a chunk's (a Finder ``.DS_Store``, a ``0.bak``), as
    zarr ignores them.
    """
    prefix = f"{name}/c/"
    found: set[tuple[int, ...]] = set()
    with storage_errors(loc):
        for key in loc.keys(prefix):
            parts = key[len(prefix) :].split("/")
            if all(p.isdigit() for p in parts):
                found.add(tuple(int(p) for p in parts))
    return found


def dim_names(arr: Any) -> tuple[str, ...]:
    """An array's dim names: Zarr v3 metadata, or xarray's ``_ARRAY_DIMENSIONS`` in v2."""
    names = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS")
    return tuple(names or ())


def existing_store(loc: Location) -> Location:
    """``loc``, checked to hold a Zarr store; clear errors otherwise."""
    if loc.local:
        if not loc.path.exists():
            raise FileNotFoundError(f"store: no such Zarr store: {str(loc)!r}")
        if not is_zarr_store(loc):
            raise ValueError(f"store: {str(loc)!r} is not a Zarr store")
        return loc
    check_bucket(loc)
    with storage_errors(loc):
        if is_zarr_store(loc):
            return loc
        empty = loc.is_empty()
    if empty:
        raise FileNotFoundError(f"store: no such Zarr store: {str(loc)!r}")
    raise ValueError(f"store: {str(loc)!r} is not a Zarr store")


def level_states(loc: Location) -> dict[int, bool]:
    """Pyramid levels found under ``levels/``: level -> complete (read-only)."""
    import zarr

    out: dict[int, bool] = {}
    for name in loc.children(LEVELS_GROUP):
        child = loc.child(LEVELS_GROUP, name)
        if name.isdigit() and is_zarr_store(child):
            try:
                store = child.zarr_store(read_only=True)
                attrs = zarr.open_group(store, mode="r", use_consolidated=False).attrs
                out[int(name)] = bool(attrs.get("bigimg_complete"))
            except Exception:
                out[int(name)] = False
    return dict(sorted(out.items()))


def ome_multiscale(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first OME-NGFF multiscale image of a group: 0.5 in ``ome``, 0.4 at the top level."""
    ome = attrs.get("ome")
    found = ome.get("multiscales") if isinstance(ome, dict) else attrs.get("multiscales")
    # a dict `multiscales` is the zarr-conventions one (bigimg writes both), not OME's list
    if isinstance(found, list) and found and isinstance(found[0], dict):
        first = found[0]
        if isinstance(first.get("datasets"), list) and first["datasets"]:
            return first
    return None


def ome_axes_names(axes: Any) -> list[str]:
    """Names of OME axes (dicts with ``name``, or plain names in OME 0.3)."""
    return [str(a["name"]) if isinstance(a, Mapping) else str(a) for a in axes]
