"""bigimg: process images far larger than memory, lazily, with dask, xarray and Zarr.

>>> import bigimg as bi
>>> img = bi.open_image("mosaic.zarr", nodata=0)  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bigimg")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"


class BigimgWarning(UserWarning):
    """Warnings bigimg itself raises (tests turn them into errors)."""


from bigimg import accessor as _accessor  # noqa: E402,F401  (registers DataArray.bigimg)
from bigimg.cluster import Cluster  # noqa: E402
from bigimg.filters import gaussian_filter  # noqa: E402
from bigimg.histogram import equalize_hist, histogram, plot_histogram  # noqa: E402
from bigimg.image import from_array, open_image  # noqa: E402
from bigimg.io import CorruptStoreError, WriteResult, open_zarr, store_info, to_zarr  # noqa: E402
from bigimg.multiscale import coarsen_mean, open_level, write_pyramid  # noqa: E402

# --- capability modules (each registers its pipeline ops on import) go below this line ---
from bigimg.noise import add_noise, correlated_noise  # noqa: E402
from bigimg.pipeline import ConfigError, load_config  # noqa: E402
from bigimg.quicklook import quicklook  # noqa: E402
from bigimg.register import register, shift_and_add  # noqa: E402
from bigimg.stretch import gaussian_stretch  # noqa: E402
from bigimg.whiten import ZCA, standardize  # noqa: E402

__all__ = [
    "BigimgWarning",
    "add_noise",
    "correlated_noise",
    "gaussian_filter",
    "gaussian_stretch",
    "equalize_hist",
    "histogram",
    "plot_histogram",
    "coarsen_mean",
    "open_level",
    "write_pyramid",
    "register",
    "shift_and_add",
    "ZCA",
    "standardize",
    "Cluster",
    "ConfigError",
    "CorruptStoreError",
    "WriteResult",
    "from_array",
    "load_config",
    "open_image",
    "open_zarr",
    "quicklook",
    "store_info",
    "to_zarr",
]
