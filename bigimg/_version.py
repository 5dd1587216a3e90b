"""The installed bigimg version (recorded in every store's provenance)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bigimg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
