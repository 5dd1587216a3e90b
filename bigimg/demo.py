"""A synthetic map mosaic and the demo pipeline that `bigimg demo` runs."""

from __future__ import annotations

import math
import numbers
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from bigimg.image import from_array

# The demo pipeline: what `bigimg demo` runs on the mosaic (as a config would).
DEMO_STEPS: list[dict[str, Any]] = [
    {"op": "gaussian_filter", "sigma": {"y": 2.0, "x": 2.0}, "nan_policy": "omit"},
    {"op": "equalize_hist", "exclude": [0, 255]},
]


def synthetic_mosaic(
    size: int = 8192, *, bands: int = 3, chunks: int = 2048, seed: int = 0, dtype: str = "uint8"
) -> xr.DataArray:
    """A map-projected-looking mosaic: a rotated valid footprint in NoData.

    Smooth large-scale structure plus fine texture in ``bands`` bands, with the
    footprint rotated by 12 degrees and NoData outside it: 0 for uint8 data
    (values inside are 1-255), NaN for float data. Built lazily, block by block,
    from global pixel coordinates, so any size streams to Zarr.

    Examples
    --------
    >>> m = synthetic_mosaic(256, chunks=128)
    >>> m.dims, m.shape, m.dtype.name
    (('y', 'x', 'band'), (256, 256, 3), 'uint8')
    """
    for name, value in {"size": size, "bands": bands, "chunks": chunks}.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size!r}")
    if bands < 1 or chunks < 1:
        raise ValueError(f"bands and chunks must be >= 1, got bands={bands!r}, chunks={chunks!r}")
    dt = np.dtype(dtype)
    chunk = min(chunks, size)
    template = da.empty((size, size, bands), chunks=(chunk, chunk, bands), dtype=dt)
    arr = da.map_blocks(
        _mosaic_block,
        dtype=dt,
        chunks=template.chunks,
        meta=np.empty((0, 0, 0), dt),
        size=size,
        seed=seed,
        out_dtype=dt,
    )
    return from_array(arr, chunks={"y": chunk, "x": chunk}).assign_attrs(
        bigimg_source=f"synthetic_mosaic(size={size}, bands={bands}, seed={seed})"
    )


def _mosaic_block(
    block_info: Any = None, *, size: int, seed: int, out_dtype: np.dtype
) -> np.ndarray:
    info = block_info[None]
    (y0, y1), (x0, x1), (_, nb) = info["array-location"]
    yy, xx = np.meshgrid(
        np.arange(y0, y1, dtype=np.float64) / size,
        np.arange(x0, x1, dtype=np.float64) / size,
        indexing="ij",
    )
    rng = np.random.default_rng([seed, y0, x0])
    out = np.empty((y1 - y0, x1 - x0, nb), dtype=np.float64)
    for b in range(nb):
        smooth = (
            np.sin(2 * math.pi * (1.3 + 0.2 * b) * yy + b)
            + np.cos(2 * math.pi * (2.1 - 0.3 * b) * xx + 0.5 * b)
            + 0.5 * np.sin(2 * math.pi * 5 * (xx + yy))
        )
        texture = 0.15 * np.sin(2 * math.pi * 160 * xx) * np.cos(2 * math.pi * 140 * yy)
        out[..., b] = smooth + texture + 0.1 * rng.standard_normal(yy.shape)
    # rotated square footprint covering about 60 % of the frame
    c, s = math.cos(math.radians(12)), math.sin(math.radians(12))
    u = (yy - 0.5) * c - (xx - 0.5) * s
    v = (yy - 0.5) * s + (xx - 0.5) * c
    inside = (np.abs(u) < 0.39) & (np.abs(v) < 0.39)
    scaled = (out + 2.6) / 5.2  # about [0, 1]
    if np.issubdtype(out_dtype, np.integer):
        vals = np.clip(np.round(1 + scaled * 254), 1, 255)
        vals[~inside] = 0
    else:
        vals = scaled
        vals[~inside] = np.nan
    return vals.astype(out_dtype)


DEMO_OUTPUTS = ("mosaic.zarr", "output.zarr", "quicklook.png")


def check_demo_outputs(out: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse, before any work, a demo folder whose outputs exist (unless ``overwrite``)."""
    from bigimg.files import check_new_file
    from bigimg.io.location import Location
    from bigimg.io.store import check_output

    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file, not a folder")
    if out.is_dir():
        mosaic_path, output_path, png_path = (out / name for name in DEMO_OUTPUTS)
        check_output(Location.of(mosaic_path), overwrite=overwrite)
        check_output(Location.of(output_path), overwrite=overwrite)
        check_new_file(png_path, overwrite=overwrite, what="quicklook")
    return out


def run_demo(
    out: str | Path, *, size: int = 8192, overwrite: bool = False, progress: bool | None = None
) -> dict[str, float]:
    """Write the mosaic, run the demo pipeline on it, write a quick-look PNG.

    Runs on whatever Dask client is active.

    Parameters
    ----------
    out : str or Path
        Folder for the outputs ``mosaic.zarr``, ``output.zarr`` and
        ``quicklook.png`` (created if missing).
    size : int, default 8192
        Mosaic side in pixels.
    overwrite : bool, default False
        Replace outputs left by an earlier run. Without it, an existing
        output is refused before any work starts.
    progress : bool, optional
        Progress bars on stderr; default: only when stderr is a TTY.

    Returns
    -------
    dict of str to float
        The stage timings in seconds.

    Raises
    ------
    FileExistsError
        One of the outputs exists and ``overwrite`` is false (all are checked
        before anything is written).
    TypeError
        ``overwrite`` is not a bool.
    ValueError
        ``out`` is a file, an output path is not what bigimg would replace
        (e.g. a non-store folder), or ``size`` is too small.
    """
    from bigimg.io import to_zarr
    from bigimg.pipeline import parse_config
    from bigimg.quicklook import quicklook

    out = check_demo_outputs(out, overwrite=overwrite)
    mosaic = synthetic_mosaic(size)  # validates size
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    to_zarr(mosaic, out / "mosaic.zarr", overwrite=overwrite, progress=progress)
    timings["write mosaic"] = time.perf_counter() - t
    config = {
        "input": {"path": "mosaic.zarr", "nodata": 0, "chunks": {"y": 2048, "x": 2048}},
        "steps": DEMO_STEPS,
        "output": {"path": "output.zarr"},
    }
    t = time.perf_counter()
    parse_config(config, base=out).run(overwrite=overwrite, progress=progress)
    timings["pipeline"] = time.perf_counter() - t
    t = time.perf_counter()
    from bigimg.io import open_zarr

    quicklook(
        open_zarr(out / "output.zarr"), out / "quicklook.png", max_size=1024, overwrite=overwrite
    )
    timings["quicklook"] = time.perf_counter() - t
    return timings
