"""A store's fingerprint: what determined its content, so that a resume can check it.

Every store bigimg writes records ``bigimg_fingerprint``, and ``resume``
refuses a store whose fingerprint differs from the computation about to
finish it (:func:`check_fingerprint`), naming what differs. There are two
kinds, chosen by the writer:

* **The computation** (:func:`of_computation`, every :func:`bigimg.to_zarr`
  from Python): the dask token of the graph being written (its keys are
  tokens of every function, parameter and in-memory array that made it), the
  identity of every file or store the graph reads, and the bigimg version.
  Any change of op, parameter, in-memory data, chunking or input file
  changes it, whichever way the image was made (``open_image``,
  ``open_zarr``, ``from_array``, an op chain, ``bi.plan``).
* **A config** (:func:`of_config`, ``bigimg run`` and ``bigimg noise``,
  pyramid levels): the input's path and identity, the options it was opened
  with and the steps. A config names its computation fully, and unlike a
  graph it does not change when a run reads its own scratch stores.

An input's identity is cheap (no chunk is read): a file's size and mtime, an
object's size and ETag, a store's metadata digest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from bigimg._version import __version__
from bigimg.errors import unreadable_metadata
from bigimg.files import read_paths
from bigimg.io.layout import MARKERS, is_zarr_store
from bigimg.io.location import Location


def of_computation(obj: xr.DataArray, loc: Location | None = None) -> dict[str, Any]:
    """The fingerprint of the computation that gives ``obj`` (see the module notes).

    ``loc`` (the output) lends its storage options to reach URL inputs.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> a = bi.from_array(np.zeros((4, 4)))
    >>> of_computation(a) == of_computation(bi.from_array(np.zeros((4, 4))))
    True
    >>> of_computation(a) == of_computation(bi.from_array(np.ones((4, 4))))
    False
    """
    from dask.base import is_dask_collection, tokenize

    def token(var: xr.Variable) -> str:
        data = var.data
        return str(tokenize(data if is_dask_collection(data) else np.asarray(data)))

    coords = {str(k): (list(map(str, v.dims)), token(v.variable)) for k, v in obj.coords.items()}
    reads = set()
    for v in (obj.variable, *(c.variable for c in obj.coords.values())):
        if is_dask_collection(v.data):
            reads |= read_paths(v.data)
    return {
        "bigimg_version": __version__,
        "graph": tokenize([str(d) for d in obj.dims], token(obj.variable), sorted(coords.items())),
        "reads": {p: identity(p, loc) for p in sorted(reads)},
    }


def source_of(obj: xr.DataArray) -> str:
    """What ``obj`` was read from, for the ``bigimg_source`` attr of a store written from it.

    The paths its graph reads, else the name a generator gave it
    (``attrs["bigimg_source"]`` of an image that reads nothing, such as
    :func:`bigimg.correlated_noise`), else ``"in-memory"``. An input store's own
    provenance (merged into the attrs by :func:`bigimg.open_zarr`) is never taken
    for this store's.
    """
    reads = read_paths(obj.data) if obj.chunks is not None else set()
    if reads:
        return ", ".join(sorted(reads))
    return str(obj.attrs.get("bigimg_source") or "in-memory")


def of_config(
    source: str,
    inputs: Mapping[str, Any] | None,
    config: Any,
    storage_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The fingerprint of a config: its input, the input's options and its steps.

    ``source`` is the input (a path, a URL, or a source name), ``inputs`` the
    options it was opened with, ``config`` the steps (recorded as
    ``bigimg_config``); ``storage_options`` reach a URL source (they are not
    recorded).
    """
    source_loc = Location.of(source, storage_options) if _is_location(source) else None
    return {
        "bigimg_version": __version__,
        "source": source,
        "source_identity": identity(source, source_loc),
        "inputs": json.loads(json.dumps(dict(inputs or {}), default=str)),
        "steps": json.dumps(config),
    }


def check_fingerprint(loc: Location, fingerprint: Mapping[str, Any]) -> None:
    """Refuse to resume the store at ``loc`` unless it was written from the same computation.

    ``fingerprint`` is the computation about to resume; the message names
    every part that differs.
    """
    import zarr

    try:
        group = zarr.open_group(loc.zarr_store(read_only=True), mode="r", use_consolidated=False)
    except Exception as e:
        raise unreadable_metadata(str(loc), e) from e
    stored = group.attrs.get("bigimg_fingerprint")
    if not isinstance(stored, dict):
        raise ValueError(
            f"resume: {str(loc)!r} has no bigimg fingerprint (not written by this bigimg); "
            "use overwrite to start again"
        )
    differs = [
        k for k in sorted(set(stored) | set(fingerprint)) if stored.get(k) != fingerprint.get(k)
    ]
    if differs:
        raise ValueError(
            f"resume: {str(loc)!r} was written from another computation ("
            + "; ".join(_difference(k, stored.get(k), fingerprint.get(k)) for k in differs)
            + "); use overwrite to start again"
        )


def _difference(key: str, stored: Any, now: Any) -> str:
    """One part of a refused resume's message: what the store holds and what it would get."""
    if key == "graph":
        return "graph: the operations, their parameters or the in-memory data differ"
    if key == "reads" and isinstance(stored, dict) and isinstance(now, dict):
        changed = sorted(p for p in set(stored) | set(now) if stored.get(p) != now.get(p))
        return "inputs changed or differ: " + ", ".join(
            f"{p!r} ({'changed' if p in stored and p in now else 'not read now' if p in stored else 'newly read'})"
            for p in changed
        )
    return f"{key}: stored {stored!r}, now {now!r}"


def _is_location(source: str) -> bool:
    return bool(source) and (not Location.of(source).local or Path(source).exists())


def identity(source: str, loc: Location | None = None) -> str | None:
    """A cheap identity of an input: a file's size and mtime, a store's metadata digest.

    Chunks are not read (that would cost a full pass), so an edit that
    changes only chunk objects of a Zarr input goes unnoticed; any rewrite
    through zarr or bigimg rewrites the metadata, whose bytes (and, on local
    disk, mtimes) are digested. A URL is reached with ``loc``'s storage
    options (the input's, or the output's when the input's are not known).
    """
    if not source:
        return None
    if Location.of(source).local:
        return _local_identity(Path(source))
    loc = Location(Location.of(source).url, loc.options_json if loc is not None else "{}")
    try:
        if is_zarr_store(loc):
            digest = hashlib.sha256()
            # the root's and its arrays' metadata, never the chunks': one listing of the
            # root (a full listing would walk every chunk of a terabyte store)
            names = loc.children("")
            candidates = [
                *MARKERS,
                *(f"{n}/{m}" for n in names if n not in MARKERS for m in MARKERS),
            ]
            for key in sorted(candidates):
                meta = loc.get(key)
                if meta is not None:
                    digest.update(f"{key}\0".encode() + meta)
            return f"store metadata sha256={digest.hexdigest()}"
        fs, path = loc.filesystem()
        info = fs.info(path)
        return f"object size={info.get('size')} etag={info.get('ETag') or info.get('etag')}"
    except Exception:
        return None


def _local_identity(p: Path) -> str | None:
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
