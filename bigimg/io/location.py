"""Where a store lives: a local path, or a URL on any filesystem fsspec knows.

A :class:`Location` is what every storage function takes: a local path (as
before), ``file://``, ``memory://``, ``s3://``, ``gs://``, ``az://`` or
read-only ``http(s)://``, with the storage options that reach it (endpoint,
credentials, anonymous access). Local paths use zarr's ``LocalStore``, which
writes each chunk under a temporary name and renames it into place; every
other URL goes through zarr's ``FsspecStore``, where an object store's PUT
replaces a whole object at once. Either way a listed chunk key is a complete
chunk.

Storage options never appear in ``str()``, ``repr()``, provenance attrs or
error messages: only the URL does, without any ``user:password@`` part.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from zarr.core.sync import sync

from bigimg.files import fail_fast, fsspec_options, is_url, redact

READ_ONLY_SCHEMES = {"http", "https"}


@dataclass(frozen=True)
class Location:
    """A local path or a URL with its storage options (never printed).

    Examples
    --------
    >>> Location.of("memory://bucket/out.zarr").child("levels", "1")
    Location('memory://bucket/out.zarr/levels/1')
    >>> Location.of("s3://b/x.zarr", {"key": "K", "secret": "S"})
    Location('s3://b/x.zarr')
    """

    url: str
    options_json: str = field(default="{}", repr=False)

    @classmethod
    def of(
        cls,
        where: str | os.PathLike[str] | Location,
        storage_options: Mapping[str, Any] | None = None,
    ) -> Location:
        """The location of ``where``; ``storage_options`` apply to URLs only."""
        if isinstance(where, Location):
            if storage_options:
                return cls(where.url, _freeze(storage_options))
            return where
        if not isinstance(where, str | os.PathLike):
            raise TypeError(f"expected a path or URL, got {type(where).__name__}")
        text = os.fspath(where)
        if isinstance(text, bytes):
            raise TypeError("expected a str path or URL, got bytes")
        if text.lower().startswith("file://"):
            text = urlsplit(text).path
        if not is_url(text):
            if storage_options:
                raise ValueError(
                    f"storage_options apply to URLs (s3://, gs://, ...), not the local path {text!r}"
                )
            return cls(os.path.expanduser(text))
        return cls(text.rstrip("/"), _freeze(storage_options or {}))

    # ------------------------------------------------------------ naming
    @property
    def local(self) -> bool:
        return not is_url(self.url)

    @property
    def scheme(self) -> str:
        return "file" if self.local else self.url.split("://", 1)[0].lower()

    @property
    def read_only(self) -> bool:
        return self.scheme in READ_ONLY_SCHEMES

    @property
    def path(self) -> Path:
        """The local path (only for local locations)."""
        if not self.local:
            raise ValueError(f"{self} is not a local path")
        return Path(self.url)

    @property
    def name(self) -> str:
        return Path(self.url).name if self.local else self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        if self.local:
            return Location(str(Path(self.url).parent), self.options_json)
        return Location(self.url.rstrip("/").rsplit("/", 1)[0], self.options_json)

    @property
    def storage_options(self) -> dict[str, Any]:
        return dict(json.loads(self.options_json))

    def child(self, *parts: str) -> Location:
        if self.local:
            return Location(str(Path(self.url, *parts)), self.options_json)
        return Location("/".join([self.url.rstrip("/"), *parts]), self.options_json)

    def __str__(self) -> str:
        return redact(self.url)

    def __repr__(self) -> str:
        return f"Location({str(self)!r})"

    def __fspath__(self) -> str:
        """A local path (so local locations work wherever a path does)."""
        if not self.local:
            raise TypeError(f"{self} is a URL, not a local path")
        return self.url

    # ------------------------------------------------------------ access
    def zarr_store(self, *, read_only: bool = False) -> Any:
        """A zarr store rooted here (one per process, location and mode)."""
        return _zarr_store(self.url, self.options_json, read_only or self.read_only)

    def filesystem(self) -> tuple[Any, str]:
        """``(fsspec filesystem, path in it)``."""
        import fsspec

        if self.local:
            return fsspec.filesystem("file"), self.url
        fs, path = fsspec.core.url_to_fs(self.url, **_options(self.url, self.options_json))
        return fail_fast(fs), path

    def keys(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix`` in the store rooted here (read-only)."""
        store = self.zarr_store(read_only=True)

        async def collect() -> list[str]:
            return [k async for k in store.list_prefix(prefix)]

        yield from sync(collect())

    def exists(self, key: str = "zarr.json") -> bool:
        """True when the store rooted here holds ``key``."""
        return bool(sync(self.zarr_store(read_only=True).exists(key)))

    def get(self, key: str) -> bytes | None:
        """The bytes of ``key``, or None when it is missing."""
        from zarr.core.buffer import default_buffer_prototype

        buf = sync(self.zarr_store(read_only=True).get(key, default_buffer_prototype()))
        return None if buf is None else buf.to_bytes()

    def children(self, prefix: str = "") -> list[str]:
        """Names directly under ``prefix`` in the store rooted here (read-only)."""
        store = self.zarr_store(read_only=True)

        async def collect() -> list[str]:
            return [k async for k in store.list_dir(prefix)]

        return sync(collect())

    def is_empty(self) -> bool:
        return not any(True for _ in self.keys())

    def remove(self) -> None:
        """Delete everything stored here (the caller checked that it may)."""
        if self.local:
            import shutil

            if self.path.is_dir():
                shutil.rmtree(self.path)
            return
        sync(self.zarr_store().delete_dir(""))


def _freeze(options: Mapping[str, Any]) -> str:
    if not isinstance(options, Mapping):
        raise TypeError(f"storage_options must be a dict, got {type(options).__name__}")
    return json.dumps(dict(options), sort_keys=True, default=str)


def _options(url: str, options_json: str) -> dict[str, Any]:
    return fsspec_options(url, json.loads(options_json))


@functools.lru_cache(maxsize=64)
def _zarr_store(url: str, options_json: str, read_only: bool) -> Any:
    import zarr.storage

    if not is_url(url):
        return zarr.storage.LocalStore(url, read_only=read_only)
    store = zarr.storage.FsspecStore.from_url(
        url, storage_options=_options(url, options_json), read_only=read_only
    )
    fail_fast(store.fs)
    return store
