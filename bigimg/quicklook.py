"""Quick-look PNGs of images of any size, computed by coarsening with dask."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from bigimg.image import check_image


def quicklook(
    obj: xr.DataArray,
    path: str | os.PathLike[str] | None = None,
    *,
    max_size: int = 1024,
    bands: Sequence[int] | None = None,
    stretch: tuple[float, float] = (2.0, 98.0),
) -> xr.DataArray:
    """A small preview of ``obj``; also written as a PNG when ``path`` is given (computes).

    The image is block-averaged (NaN-aware, lazily with dask, so memory is
    bounded by chunk size) until its longer side is at most ``max_size``, then
    each band is stretched between the ``stretch`` percentiles of the preview.
    NoData is transparent in the PNG.

    Parameters
    ----------
    obj : xarray.DataArray
        Image with dims ``y``, ``x`` and optionally ``band``.
    path : path-like, optional
        Where to write the PNG (RGBA, or grey + alpha for one band).
    max_size : int, default 1024
        Longest side of the preview, in pixels.
    bands : sequence of int, optional
        Band indices to show: one (grey) or three (RGB). Default: the first
        three bands, or the first one.
    stretch : (float, float), default (2, 98)
        Percentiles mapped to black and white.

    Returns
    -------
    xarray.DataArray
        The preview, float32 in [0, 1] with NaN for NoData, dims ``(y, x, band)``.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> img = bi.from_array(np.random.default_rng(0).random((300, 200)))
    >>> bi.quicklook(img, max_size=100).shape
    (100, 67, 1)
    """
    check_image(obj, "obj")
    if not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"max_size must be a positive int, got {max_size!r}")
    lo, hi = stretch
    if not 0 <= lo < hi <= 100:
        raise ValueError(f"stretch must be two percentiles 0 <= lo < hi <= 100, got {stretch!r}")
    if "band" not in obj.dims:
        obj = obj.expand_dims("band", axis=-1)
    obj = obj.transpose(*[d for d in obj.dims if d not in ("y", "x", "band")], "y", "x", "band")
    extra = [d for d in obj.dims if d not in ("y", "x", "band")]
    if extra:
        obj = obj.isel({d: 0 for d in extra})
    nb = obj.sizes["band"]
    if bands is None:
        bands = [0, 1, 2] if nb >= 3 else [0]
    bands = list(bands)
    if len(bands) not in (1, 3) or any(not 0 <= b < nb for b in bands):
        raise ValueError(f"bands must be 1 or 3 indices in [0, {nb}), got {bands!r}")
    obj = obj.isel(band=bands)
    factor = max(1, math.ceil(max(obj.sizes["y"], obj.sizes["x"]) / max_size))
    small = obj.astype("float32")
    if factor > 1:
        small = small.coarsen(y=factor, x=factor, boundary="pad").mean(skipna=True)
    small = small.compute()
    data = small.values.astype("float32")
    out = np.full_like(data, np.nan)
    for b in range(data.shape[-1]):
        band = data[..., b]
        valid = np.isfinite(band)
        if valid.any():
            p0, p1 = np.percentile(band[valid], [lo, hi])
            scale = (p1 - p0) if p1 > p0 else 1.0
            out[..., b] = np.clip((band - p0) / scale, 0, 1)
    preview = xr.DataArray(out, dims=("y", "x", "band"), attrs={"bigimg_quicklook_factor": factor})
    if path is not None:
        write_png(preview.values, path)
    return preview


def write_png(rgb: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a ``(y, x, 1 or 3)`` float array in [0, 1] (NaN = transparent) as PNG."""
    import PIL.Image

    path = Path(path)
    if not path.parent.exists():
        raise FileNotFoundError(f"path: folder {str(path.parent)!r} does not exist")
    alpha = np.all(np.isfinite(rgb), axis=-1)
    pix = np.nan_to_num(rgb, nan=0.0)
    pix = (pix * 255 + 0.5).astype(np.uint8)
    a = (alpha * 255).astype(np.uint8)[..., None]
    PIL.Image.fromarray(np.concatenate([pix, a], axis=-1)).save(path)  # LA or RGBA
    return path
