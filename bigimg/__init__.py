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
from bigimg.image import from_array, open_image  # noqa: E402
from bigimg.io import WriteResult, open_zarr, store_info, to_zarr  # noqa: E402
from bigimg.pipeline import ConfigError, load_config  # noqa: E402
from bigimg.quicklook import quicklook  # noqa: E402

# --- capability modules (each registers its pipeline ops on import) go below this line ---

__all__ = [
    "BigimgWarning",
    "Cluster",
    "ConfigError",
    "WriteResult",
    "from_array",
    "load_config",
    "open_image",
    "open_zarr",
    "quicklook",
    "store_info",
    "to_zarr",
]
