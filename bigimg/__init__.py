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
"""

from bigimg import accessor as _accessor  # noqa: F401  (registers DataArray.bigimg)
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
