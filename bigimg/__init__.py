"""bigimg: process images far larger than memory, lazily, with dask, xarray and Zarr.

>>> import bigimg as bi
>>> img = bi.open_image("mosaic.zarr", nodata=0)  # doctest: +SKIP

The package only re-exports; nothing inside bigimg imports it. Layers, each
importing only the ones above it: ``errors``, ``_version``, ``files``,
``compute`` and ``image`` (the data model); the capability modules
(``filters``, ``histogram``, ``stretch``, ``noise``, ``register``,
``whiten``, ``resample``, ``quicklook``); ``io`` (inputs, stores, pyramids);
``pipeline`` (configs and the op registry); ``accessor``, ``cluster``,
``demo`` and ``cli``.

Importing bigimg is cheap: it imports neither dask nor xarray nor zarr. Each
public name is imported on first use (:pep:`562`), so the command line
answers ``bigimg --help`` at once. The ``.bigimg`` accessor of
``xarray.DataArray`` is registered as soon as xarray is imported (at once if it
already is), and builds the real accessor on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the names below are, for type checkers and IDEs
    from bigimg._version import __version__
    from bigimg.adapthist import equalize_adapthist
    from bigimg.cluster import Cluster
    from bigimg.cog import CogResult, to_cog
    from bigimg.errors import BigimgWarning, ConfigError, CorruptStoreError
    from bigimg.filters import gaussian_filter
    from bigimg.histogram import equalize_hist, histogram, plot_histogram
    from bigimg.image import from_array
    from bigimg.io import (
        WriteResult,
        open_image,
        open_level,
        open_zarr,
        store_info,
        to_zarr,
        write_pyramid,
    )
    from bigimg.noise import add_noise, correlated_noise
    from bigimg.pipeline import Pipeline, load_config, plan
    from bigimg.quicklook import quicklook
    from bigimg.register import register, shift_and_add
    from bigimg.resample import coarsen_mean
    from bigimg.stretch import gaussian_stretch
    from bigimg.whiten import ZCA, standardize

# public name -> the module that defines it (imported on first use)
_WHERE = {
    "BigimgWarning": "bigimg.errors",
    "Cluster": "bigimg.cluster",
    "CogResult": "bigimg.cog",
    "ConfigError": "bigimg.errors",
    "CorruptStoreError": "bigimg.errors",
    "Pipeline": "bigimg.pipeline",
    "WriteResult": "bigimg.io",
    "ZCA": "bigimg.whiten",
    "__version__": "bigimg._version",
    "add_noise": "bigimg.noise",
    "coarsen_mean": "bigimg.resample",
    "correlated_noise": "bigimg.noise",
    "equalize_hist": "bigimg.histogram",
    "from_array": "bigimg.image",
    "gaussian_filter": "bigimg.filters",
    "equalize_adapthist": "bigimg.adapthist",
    "gaussian_stretch": "bigimg.stretch",
    "histogram": "bigimg.histogram",
    "load_config": "bigimg.pipeline",
    "open_image": "bigimg.io",
    "open_level": "bigimg.io",
    "open_zarr": "bigimg.io",
    "plan": "bigimg.pipeline",
    "plot_histogram": "bigimg.histogram",
    "quicklook": "bigimg.quicklook",
    "register": "bigimg.register",
    "shift_and_add": "bigimg.register",
    "standardize": "bigimg.whiten",
    "store_info": "bigimg.io",
    "to_cog": "bigimg.cog",
    "to_zarr": "bigimg.io",
    "write_pyramid": "bigimg.io",
}

__all__ = [
    "BigimgWarning",
    "Cluster",
    "CogResult",
    "ConfigError",
    "CorruptStoreError",
    "Pipeline",
    "WriteResult",
    "ZCA",
    "__version__",
    "add_noise",
    "coarsen_mean",
    "correlated_noise",
    "equalize_adapthist",
    "equalize_hist",
    "from_array",
    "gaussian_filter",
    "gaussian_stretch",
    "histogram",
    "load_config",
    "open_image",
    "open_level",
    "open_zarr",
    "plan",
    "plot_histogram",
    "quicklook",
    "register",
    "shift_and_add",
    "standardize",
    "store_info",
    "to_cog",
    "to_zarr",
    "write_pyramid",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or a submodule, ``bi.io``) on first use and keep it."""
    where = _WHERE.get(name)
    if where is not None:
        value = getattr(importlib.import_module(where), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names and the submodules loaded so far (what ``bi.<Tab>`` completes)."""
    loaded = [k for k, v in globals().items() if getattr(v, "__name__", "").startswith("bigimg.")]
    return sorted({*__all__, *loaded, *(k for k in globals() if k.startswith("__"))})


class _LazyAccessor:
    """``DataArray.bigimg``: bigimg's operations on this image (see :mod:`bigimg.accessor`).

    Registered with xarray without importing bigimg's operations; the first
    ``img.bigimg`` imports them and returns a :class:`bigimg.accessor.BigimgAccessor`.
    """

    def __new__(cls, obj: Any) -> Any:
        from bigimg.accessor import BigimgAccessor

        return BigimgAccessor(obj)


def _register_accessor(xr: ModuleType) -> None:
    if not hasattr(xr.DataArray, "bigimg"):
        xr.register_dataarray_accessor("bigimg")(_LazyAccessor)


class _AfterExec(importlib.abc.Loader):
    """A module's own loader, plus a call once the module has run (a post-import hook)."""

    def __init__(self, loader: Any, then: Any) -> None:
        self._loader, self._then = loader, then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        self._then(module)

    def __getattr__(self, name: str) -> Any:  # resources, get_data, ...: the real loader's
        return getattr(self._loader, name)


class _WhenXarrayImports(importlib.abc.MetaPathFinder):
    """Registers the accessor right after ``import xarray`` (once; then removes itself)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "xarray":
            return None
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _AfterExec(spec.loader, _register_accessor)
        return spec


class _Package(ModuleType):
    """bigimg itself: ``bi.histogram`` stays the function when ``bigimg.histogram`` is imported.

    Importing a submodule sets it as an attribute of its package; the
    functions named like their modules (``histogram``, ``quicklook``,
    ``register``) must not be replaced by them.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, ModuleType):
            return  # the module stays in sys.modules (``from bigimg.histogram import ...``)
        super().__setattr__(name, value)


_SHADOWED = frozenset(n for n, m in _WHERE.items() if m == f"{__name__}.{n}")
sys.modules[__name__].__class__ = _Package

if "xarray" in sys.modules:
    _register_accessor(sys.modules["xarray"])
elif not any(isinstance(f, _WhenXarrayImports) for f in sys.meta_path):
    sys.meta_path.insert(0, _WhenXarrayImports())
