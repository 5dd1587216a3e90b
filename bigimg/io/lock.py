"""One writer per store: a local ``flock``, an object store's lease.

:func:`writer_lock` is held for the whole of a write (and a pipeline run holds
its output's for the whole run). A second writer of the same store, even with
``overwrite``, is refused at once with a message naming the store, on every
kind of store:

* **Local disk**: an ``flock`` on the hidden file ``.<store name>.bigimg-lock``
  beside the store (inside it, zarr would list it as a foreign object). The
  kernel releases it when the process ends, however it ends, so a killed
  writer never leaves a stale lock.
* **Object stores** (``s3://``, ``gs://``, ``az://``, …): a lease object,
  ``.<store name>.bigimg-lock`` beside the store, created with a conditional
  PUT (``If-None-Match: *``), so that of two writers starting together
  exactly one gets it. The writer renews it every third of its term
  (:data:`LEASE_SECONDS`, 60 s by default, ``BIGIMG_LEASE_SECONDS`` in the
  environment) with ``If-Match`` on its ETag; a killed writer's lease lapses
  within one term (at once for a writer of this host whose process is gone),
  after which a new writer (a ``--resume``) takes it over, again conditionally. A writer that finds its lease taken (it was stopped
  longer than a term, say) stops before marking the store complete. S3 (and
  servers that implement its conditional writes) gives this guarantee; on
  filesystems whose fsspec layer has no conditional PUT (gcsfs, adlfs) the
  lease is checked, then written: two writers starting within one request's
  time of each other can both proceed there.
* **memory://** lives in one process: a lock in the process.

The lock is re-entrant in the thread that holds it, so a pipeline that holds
its output's lock can write the output through :func:`bigimg.to_zarr`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bigimg.io.layout import storage_errors
from bigimg.io.location import Location

#: A lease's term in seconds: a killed writer's lease lapses this long after its last renewal.
LEASE_SECONDS = float(os.environ.get("BIGIMG_LEASE_SECONDS", "60"))

_HELD: dict[str, tuple[int, int]] = {}  # url -> (thread ident, depth)
_LEASES: dict[str, _Lease] = {}  # url -> the lease an outer block holds (object stores)
_HELD_LOCK = threading.Lock()


class LeaseLost(RuntimeError):
    """Another writer took an object store's lease while this one was writing."""


@dataclass
class _Lease:
    """An object store's lease, renewed by a daemon thread until released."""

    fs: Any
    path: str
    store: str
    conditional: bool
    etag: str | None = None
    lost: str | None = None
    expires: float = 0.0  # of the lease as this writer last wrote it, by its clock
    stop: threading.Event = field(default_factory=threading.Event)

    def body(self) -> bytes:
        return json.dumps(
            {
                "owner": f"{socket.gethostname()}:{os.getpid()}",
                "term_seconds": LEASE_SECONDS,
                "expires": time.time() + LEASE_SECONDS,
            }
        ).encode()

    def acquire(self) -> None:
        try:
            self._put(create=True)
            return
        except FileExistsError:
            pass
        held, etag = self._read()
        if held is not None:
            self.refuse_if_live(held)
        try:  # lapsed (its writer was stopped): take it over, unless another writer just did
            self._put(match=etag)
        except OSError:
            raise ValueError(
                f"store: {self.store!r} was just taken by another bigimg process; wait for it "
                "to finish or stop it first"
            ) from None

    def refuse_if_live(self, held: dict[str, Any]) -> None:
        """Raise when ``held`` (a lease read from the store) is another writer's, still live."""
        remaining = float(held.get("expires", 0)) - time.time()
        owner = str(held.get("owner", "unknown"))
        if remaining > 0 and not _gone(owner):
            raise ValueError(
                _BUSY.format(store=self.store, owner=f" ({owner})")
                + f" (the lease of a stopped writer lapses within {remaining:.0f} s)"
            )

    def renew_until_released(self) -> None:
        while not self.stop.wait(LEASE_SECONDS / 3):
            try:
                self._put(match=self.etag)
            except Exception as e:  # taken over (412), or unreachable for a whole term
                taken = isinstance(e, OSError) and e.errno == errno.EINVAL
                if taken or time.time() > self.expires:
                    self.lost = f"{type(e).__name__}: {e}"
                    return

    def check(self) -> None:
        if self.lost is not None:
            raise LeaseLost(
                f"store: lost the writer lease of {self.store!r} ({self.lost}); another "
                "writer may have taken it, so the store stays incomplete"
            )

    def release(self) -> None:
        self.stop.set()
        if self.lost is None:
            with contextlib.suppress(Exception):
                held, etag = self._read()
                if etag == self.etag:
                    self.fs.rm_file(self.path)

    # ---------------------------------------------------------------- conditional writes
    def _put(self, *, create: bool = False, match: str | None = None) -> None:
        body = self.body()
        if not self.conditional:  # checked, then written (see the module notes)
            if create and self.fs.exists(self.path):
                raise FileExistsError(self.path)
            if match is not None and self._read()[1] != match:
                raise OSError(f"lease {self.path} changed")
            self.fs.pipe_file(self.path, body)
            self.etag = self._read()[1]
        else:
            kwargs: dict[str, Any] = {"mode": "create"} if create else {"IfMatch": match}
            out = self.fs.pipe_file(self.path, body, **kwargs)
            self.etag = (out or {}).get("ETag") or self._read()[1]
        self.expires = time.time() + LEASE_SECONDS

    def _read(self) -> tuple[dict[str, Any] | None, str | None]:
        self.fs.invalidate_cache(self.path)
        try:
            info = self.fs.info(self.path)
            held = json.loads(self.fs.cat_file(self.path))
        except (FileNotFoundError, ValueError):
            return None, None
        return held, info.get("ETag") or info.get("etag") or str(info.get("mtime"))


def check_unlocked(loc: Location) -> None:
    """Refuse at once a store that another writer holds (before a run starts its cluster).

    Reads only: a local lock file is tried and let go, an object store's
    lease is read. :func:`writer_lock` still decides, when the write starts.
    """
    with _HELD_LOCK:
        owner, depth = _HELD.get(loc.url, (threading.get_ident(), 0))
    if owner != threading.get_ident():
        raise ValueError(
            f"store: {str(loc)!r} is being written by another thread of this process; "
            "wait for it to finish"
        )
    if depth:  # this thread holds it (a pipeline run checking the store it will write)
        return
    if loc.local:
        import fcntl

        path = loc.path
        try:
            fh = open(_lock_file(path), "rb")  # noqa: SIM115
        except OSError:  # no lock file: nobody writes it
            return
        with fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(_BUSY.format(store=str(path), owner="")) from None
    elif loc.scheme != "memory":
        lease = _lease_of(loc)
        held, _ = lease._read()
        if held is not None:
            lease.refuse_if_live(held)


_BUSY = (
    "store: {store!r} is being written by another bigimg process{owner}; wait for it to "
    "finish or stop it first"
)


def _gone(owner: str) -> bool:
    """True when ``owner`` (``host:pid``) is a process of this host that no longer runs."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


@contextlib.contextmanager
def writer_lock(loc: Location) -> Iterator[_Lease | None]:
    """Hold the store's writer lock for the block (see the module notes).

    Yields the object store's lease (``check()`` it before marking the store
    complete), or None elsewhere.

    Raises
    ------
    ValueError
        Another writer holds the store.
    """
    key = loc.url
    me = threading.get_ident()
    with _HELD_LOCK:
        owner, depth = _HELD.get(key, (me, 0))
        if owner != me:
            raise ValueError(
                f"store: {str(loc)!r} is being written by another thread of this process; "
                "wait for it to finish"
            )
        _HELD[key] = (me, depth + 1)
    try:
        if depth:  # re-entered: the outer block holds the lock (and the lease, if any)
            yield _LEASES.get(key)
        elif loc.local:
            with _flock(loc):
                yield None
        elif loc.scheme == "memory":
            yield None
        else:
            with _lease(loc) as lease:
                _LEASES[key] = lease
                try:
                    yield lease
                finally:
                    _LEASES.pop(key, None)
    finally:
        with _HELD_LOCK:
            if depth:
                _HELD[key] = (me, depth)
            else:
                _HELD.pop(key, None)


def _lock_file(store: Path) -> Path:
    return store.parent / f".{store.name}.bigimg-lock"


@contextlib.contextmanager
def _flock(loc: Location) -> Iterator[None]:
    import fcntl

    path = loc.path
    lock = _lock_file(path)
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(_BUSY.format(store=str(path), owner="")) from None
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def _lease_of(loc: Location) -> _Lease:
    """The (not yet acquired) lease of the object store ``loc``: an object beside it."""
    fs, key = loc.filesystem()
    parent, _, name = key.rstrip("/").rpartition("/")
    return _Lease(
        fs=fs,
        path=f"{parent}/.{name}.bigimg-lock",
        store=str(loc),
        conditional=type(fs).__name__ == "S3FileSystem",
    )


@contextlib.contextmanager
def _lease(loc: Location) -> Iterator[_Lease]:
    lease = _lease_of(loc)
    with storage_errors(loc):  # an unreachable store: one line naming it
        lease.acquire()
    renewer = threading.Thread(
        target=lease.renew_until_released, name=f"bigimg-lease-{uuid.uuid4().hex[:8]}", daemon=True
    )
    renewer.start()
    try:
        yield lease
    finally:
        lease.release()
        renewer.join(timeout=5)
