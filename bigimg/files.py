"""One policy for every file or store bigimg writes.

* An existing path is refused unless ``overwrite`` is given.
* An output never overlaps an input (the same path, an ancestor or a
  descendant of it), whatever the flags.
* A file is written under a temporary name in its folder and renamed into
  place only when complete, so an interrupted write never looks complete.

Capability modules import only this module for writing files; it imports
nothing from bigimg.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PathLike = str | os.PathLike[str]
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(where: object) -> bool:
    """True for ``scheme://...`` strings other than ``file://`` (a local path).

    >>> is_url("s3://bucket/x.zarr"), is_url("file:///tmp/x.zarr"), is_url("/tmp/x.zarr")
    (True, False, False)
    """
    if not isinstance(where, str):
        return False
    m = _SCHEME.match(where)
    return m is not None and m.group(1).lower() != "file"


def path_parts(path: PathLike) -> tuple[str, ...]:
    """``(scheme, *segments)``: a local path resolved (symlinks, ``..``, also for paths not
    yet created), a URL split on ``/``."""
    text = os.fspath(path)
    if text.lower().startswith("file://"):
        text = text[len("file://") :]
    if is_url(text):
        scheme, rest = text.split("://", 1)
        return (scheme.lower(), *[s for s in rest.split("/") if s])
    return ("file", *Path(os.path.realpath(os.path.expanduser(text))).parts)


def overlaps(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` are the same path or URL, or one lies inside the other.

    >>> overlaps("/data/in.zarr", "/data/in.zarr/image")
    True
    >>> overlaps("/data/in.zarr", "/data/out.zarr")
    False
    >>> overlaps("s3://bucket/in.zarr", "s3://bucket/in.zarr/levels/1")
    True
    """
    pa, pb = path_parts(a), path_parts(b)
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def check_disjoint(output: PathLike, inputs: Iterable[PathLike | None], *, what: str) -> None:
    """Refuse an ``output`` that overlaps any of ``inputs`` (whatever ``overwrite`` says).

    Raises
    ------
    ValueError
        Naming ``what`` (the argument or config key of the output) and the input.
    """
    for inp in inputs:
        if inp is not None and overlaps(output, inp):
            raise ValueError(
                f"{what}: {os.fspath(output)!r} overlaps the input {os.fspath(inp)!r}; "
                "writing it would destroy the input, so bigimg refuses (choose another path)"
            )


def check_new_file(path: PathLike, *, overwrite: bool, what: str) -> Path:
    """Check that a file may be written at ``path`` without touching anything.

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is false.
    IsADirectoryError
        ``path`` is a folder (never replaced by a file, even with ``overwrite``).
    FileNotFoundError
        The parent folder does not exist.
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_dir():
        raise IsADirectoryError(
            f"{what}: {str(p)!r} is a folder, not a file; refusing to replace it"
        )
    if p.exists() and not overwrite:
        raise FileExistsError(
            f"{what}: {str(p)!r} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    if not p.parent.is_dir():
        raise FileNotFoundError(f"{what}: folder {str(p.parent)!r} does not exist")
    return p


@contextmanager
def new_file(path: PathLike, *, overwrite: bool = False, what: str = "path") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The existing file (if any, and only with ``overwrite``) is replaced
    atomically; on error the temporary file is removed and ``path`` is left
    as it was.

    >>> import tempfile, os
    >>> target = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with new_file(target) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> open(target).read()
    'hello'
    """
    p = check_new_file(path, overwrite=overwrite, what=what)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if p.exists() and not overwrite:  # created by someone else meanwhile
            raise FileExistsError(f"{what}: {str(p)!r} appeared while writing; not replaced")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a new file gets the usual mode
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# dask layer name -> the path its tasks read; filled by the readers, consulted by writers
_READS: dict[str, str] = {}


def note_read(layer: str, path: PathLike) -> str:
    """Record that the dask layer ``layer`` reads ``path``; returns ``layer``.

    Writers call :func:`read_paths` on the graph they are about to compute, so
    an output that overlaps any input it reads is refused, however the data
    was transformed in between (attrs and encodings do not survive every
    xarray operation; graph layers do).
    """
    _READS[layer] = os.fspath(path)
    return layer


def read_paths(graph: Any) -> set[str]:
    """The paths read by the layers of ``graph`` (a dask collection or HighLevelGraph)."""
    graph = graph.__dask_graph__() if hasattr(graph, "__dask_graph__") else graph
    layers = getattr(graph, "layers", None)
    names = (
        layers.keys()
        if layers is not None
        else {k[0] if isinstance(k, tuple) else k for k in graph}
    )
    return {_READS[n] for n in names if n in _READS}
