"""One policy for every file or store bigimg writes.

* An existing path is refused unless ``overwrite`` is given.
* An output never overlaps an input (the same path, an ancestor or a
  descendant of it), whatever the flags.
* A file is written under a temporary name in its folder and renamed into
  place only when complete, so an interrupted write never looks complete.
* A single file at a URL (``s3://``, ``memory://``, ...; :func:`new_object`)
  is sent in one put of the finished bytes: an object store replaces a whole
  object at once, so the object is either absent, the old one, or complete.
  Storage options (credentials) never appear in a message.

Capability modules import only this module for writing files; it imports
nothing from bigimg.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

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


def check_png_name(path: PathLike, *, what: str) -> None:
    """Refuse a PNG output (a path or URL) whose name does not end in ``.png``.

    Raises
    ------
    ValueError
        Naming ``what`` and the suffix found.

    Examples
    --------
    >>> check_png_name("s3://bucket/a.PNG", what="--hist")
    >>> check_png_name("h.txt", what="--hist")
    Traceback (most recent call last):
    ...
    ValueError: --hist: 'h.txt' must end in '.png' (the file written is a PNG), got suffix '.txt'
    """
    text = os.fspath(path)
    name = text.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] if is_url(text) else text
    suffix = Path(name).suffix
    if suffix.lower() != ".png":
        raise ValueError(
            f"{what}: {text!r} must end in '.png' (the file written is a PNG), "
            f"got suffix {suffix or '(none)'!r}"
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
    remove_leftovers(p)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".partial", dir=p.parent)
    tmp = Path(tmp_name)
    try:
        hold(fd)  # until the end: a later writer of `path` sees this file is in use
        yield tmp
        if p.exists() and not overwrite:  # created by someone else meanwhile
            raise FileExistsError(f"{what}: {str(p)!r} appeared while writing; not replaced")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a new file gets the usual mode
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)


def hold(fd: int) -> None:
    """Mark the temporary file open at ``fd`` as in use for as long as it stays open.

    An exclusive ``flock``, which the kernel drops when the process ends,
    however it ends (SIGKILL included): so :func:`remove_leftovers` can tell
    a killed writer's files from a running writer's. A writer that keeps
    more files beside its temporary one (``to_cog``'s tile spool) names them
    after it (``<temporary name>.<anything>``) and holds them too.
    """
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):  # not POSIX, or no flock here: its leftovers are kept
        pass


def remove_leftovers(path: PathLike) -> list[Path]:
    """Remove the temporary files that killed writers of ``path`` left beside it.

    :func:`new_file` writes ``.<name>.<random>.partial`` in ``path``'s folder
    and renames it into place; a writer killed by SIGKILL (or a power cut)
    leaves it there, with any file named after it (``to_cog``'s ``.spool``,
    as large as the compressed image). Each such file that no running
    writer holds (see :func:`hold`) is removed; the removed paths are
    returned. Only this exact pattern is touched, so a user's files are safe.
    """
    p = Path(os.path.expanduser(os.fspath(path)))
    mine = re.compile(rf"\.{re.escape(p.name)}\.[a-z0-9_]{{8}}\.partial(\..+)?")
    try:
        names = [n for n in os.listdir(p.parent) if mine.fullmatch(n)]
    except OSError:
        return []
    try:
        import fcntl
    except ImportError:
        return []
    removed = []
    for name in sorted(names):
        leftover = p.parent / name
        try:
            fd = os.open(leftover, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:  # gone meanwhile, a symlink, a folder, not ours to read
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a running writer holds it
            os.close(fd)
            continue
        try:
            if os.path.isfile(leftover):
                leftover.unlink(missing_ok=True)
                removed.append(leftover)
        finally:
            os.close(fd)
    return removed


# ---------------------------------------------------------------- single files at URLs
# S3 defaults unless the caller sets ``config_kwargs``: fail within seconds when the
# endpoint is unreachable, instead of botocore's 60 s timeouts times retries
_S3_DEFAULTS = {
    "config_kwargs": {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 3}}
}


def redact(url: str) -> str:
    """``url`` without a ``user:password@`` part (safe to print or record).

    >>> redact("s3://bucket/m.npz"), redact("https://user:pw@host/m.npz")
    ('s3://bucket/m.npz', 'https://host/m.npz')
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.hostname or ""))


def check_new_object(
    where: PathLike,
    *,
    overwrite: bool,
    what: str,
    storage_options: Mapping[str, Any] | None = None,
) -> Path | str:
    """:func:`check_new_file` for a local path or a URL (``s3://``, ``memory://``, ...).

    A local path is checked by :func:`check_new_file` (and returned as a
    :class:`~pathlib.Path`); a URL is returned as given, after asking its
    filesystem (with ``storage_options``) whether the object exists. Object
    stores have no folders, so a URL's "folder" is not checked.

    Raises
    ------
    FileExistsError
        The file or object exists and ``overwrite`` is false.
    IsADirectoryError
        It is a folder (a prefix with objects under it).
    FileNotFoundError
        A local path's folder does not exist.
    ValueError
        ``storage_options`` given for a local path.
    OSError
        The URL's storage cannot be reached (one line, no storage options).
    """
    if not is_url(where):
        check_local_only(where, storage_options, what)
        return check_new_file(where, overwrite=overwrite, what=what)
    url = os.fspath(where)
    with _url_errors(url, what, storage_options):
        fs, path = _url_fs(url, storage_options)
        if fs.isdir(path):
            raise IsADirectoryError(
                f"{what}: {redact(url)!r} is a folder (objects lie under it); refusing to "
                "replace it"
            )
        if not overwrite and fs.exists(path):
            raise FileExistsError(
                f"{what}: {redact(url)!r} already exists; pass overwrite=True (--overwrite) to "
                "replace it"
            )
    return url


@contextmanager
def new_object(
    where: PathLike,
    *,
    overwrite: bool = False,
    what: str = "path",
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[IO[bytes]]:
    """Yield a binary file to write; it lands at ``where`` (a path or URL) only when complete.

    A local path goes through :func:`new_file` (a temporary file in the same
    folder, renamed into place). For a URL the bytes are kept in memory and
    sent in one put when the block ends without error: an object store
    writes a whole object atomically, so that single put is what the
    temporary name and rename are on disk (nothing is written on error). The
    existence check is made before the block and again just before the put.
    Meant for small files (models, metadata), not images.

    Raises
    ------
    FileExistsError, IsADirectoryError, FileNotFoundError, ValueError, OSError
        As :func:`check_new_object`; a failed put is a one-line ``OSError``.

    Examples
    --------
    >>> with new_object("memory://bigimg-doc/a.txt", overwrite=True) as fh:
    ...     _ = fh.write(b"hello")
    >>> read_object("memory://bigimg-doc/a.txt")
    b'hello'
    """
    if not is_url(where):
        check_local_only(where, storage_options, what)
        with new_file(where, overwrite=overwrite, what=what) as tmp, tmp.open("wb") as fh:
            yield fh
        return
    url = str(
        check_new_object(where, overwrite=overwrite, what=what, storage_options=storage_options)
    )
    buf = io.BytesIO()
    yield buf
    check_new_object(url, overwrite=overwrite, what=what, storage_options=storage_options)
    with _url_errors(url, what, storage_options):
        fs, path = _url_fs(url, storage_options)
        fs.pipe_file(path, buf.getvalue())


def read_object(
    where: PathLike,
    *,
    what: str = "path",
    kind: str = "file",
    storage_options: Mapping[str, Any] | None = None,
) -> bytes:
    """The whole content of the file or object at ``where`` (a path or URL).

    Errors name ``what`` (the argument or config key) and say ``kind`` (what
    was expected there, e.g. ``"ZCA model file"``).

    Raises
    ------
    FileNotFoundError
        Nothing is there.
    IsADirectoryError
        It is a folder (or a prefix with objects under it).
    ValueError
        ``storage_options`` given for a local path.
    OSError
        The URL's storage cannot be reached (one line, no storage options).
    """
    if not is_url(where):
        check_local_only(where, storage_options, what)
        p = Path(os.path.expanduser(os.fspath(where)))
        if p.is_dir():
            raise IsADirectoryError(f"{what}: {str(p)!r} is a folder, not a {kind}")
        if not p.is_file():
            raise FileNotFoundError(f"{what}: no such {kind}: {str(p)!r}")
        return p.read_bytes()
    url = os.fspath(where)
    with _url_errors(url, what, storage_options):
        fs, path = _url_fs(url, storage_options)
        try:
            return bytes(fs.cat_file(path))
        except (FileNotFoundError, IsADirectoryError):
            if fs.isdir(path):
                raise IsADirectoryError(
                    f"{what}: {redact(url)!r} is a folder (objects lie under it), not a {kind}"
                ) from None
            raise FileNotFoundError(f"{what}: no such {kind}: {redact(url)!r}") from None


def check_local_only(where: PathLike, storage_options: Mapping[str, Any] | None, what: str) -> None:
    """``ValueError`` naming ``what`` when ``storage_options`` are given for the local ``where``."""
    if storage_options:
        raise ValueError(
            f"{what}: storage_options apply to URLs (s3://, gs://, ...), not the local path "
            f"{os.fspath(where)!r}"
        )


def fsspec_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` for ``url``, with S3's fail-fast defaults unless the caller set them."""
    options = dict(storage_options or {})
    if url.split("://", 1)[0].lower() in ("s3", "s3a"):
        options = {**_S3_DEFAULTS, **options}
    return options


def fail_fast(fs: Any) -> Any:
    """s3fs retries each call 5 times on top of botocore's retries: once more is enough."""
    if hasattr(fs, "retries"):
        fs.retries = 2
    return fs


def _url_fs(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    """``(fsspec filesystem, path in it)`` for ``url``, S3 failing fast unless configured."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url, **fsspec_options(url, storage_options))
    return fail_fast(fs), path


@contextmanager
def _url_errors(url: str, what: str, storage_options: Mapping[str, Any] | None) -> Iterator[None]:
    """Storage failures as one-line ``OSError`` naming ``what`` and the URL, never the options.

    bigimg's own ``FileExistsError``, ``FileNotFoundError`` and
    ``IsADirectoryError`` (their messages start with ``what``) pass unchanged.
    """
    try:
        yield
    except (FileExistsError, FileNotFoundError, IsADirectoryError) as e:
        if str(e).startswith(f"{what}: "):
            raise
        raise OSError(_failure(url, what, e, storage_options)) from None
    except Exception as e:
        raise OSError(_failure(url, what, e, storage_options)) from None


def _failure(url: str, what: str, e: Exception, storage_options: Mapping[str, Any] | None) -> str:
    first = (str(e).splitlines() or [""])[0][:300]
    for secret in _strings(storage_options):
        first = first.replace(secret, "***")
    return f"{what}: cannot access {redact(url)!r}: {type(e).__name__}: {first}"


# storage options that name where, not who: left readable in messages
_PUBLIC_OPTIONS = {"endpoint_url", "region_name", "region", "profile", "project"}


def _strings(value: Any) -> Iterator[str]:
    """Every str of 4 or more characters in a nest of mappings and sequences (not endpoints)."""
    if isinstance(value, str):
        if len(value) >= 4:
            yield value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if k not in _PUBLIC_OPTIONS:
                yield from _strings(v)
    elif isinstance(value, list | tuple | set):
        for v in value:
            yield from _strings(v)


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
