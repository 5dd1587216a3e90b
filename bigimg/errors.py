"""bigimg's own exception types (imported by every layer; imports nothing from bigimg)."""

from __future__ import annotations

import os


class BigimgWarning(UserWarning):
    """Warnings bigimg itself raises (tests turn them into errors)."""


class ConfigError(ValueError):
    """A pipeline config that cannot be run; the message names the key."""


class CorruptStoreError(ValueError):
    """A stored chunk fails its checksum, is missing, or the metadata cannot be decoded."""


def unreadable_metadata(path: str | os.PathLike[str], error: Exception) -> CorruptStoreError:
    """The error for a store whose metadata cannot be read, naming the store."""
    first = str(error).splitlines()[0] if str(error) else ""
    return CorruptStoreError(
        f"store: {os.fspath(path)!r}: its metadata cannot be read "
        f"({type(error).__name__}: {first}); the store is damaged"
    )
