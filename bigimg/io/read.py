"""Reading inputs: Zarr stores (bigimg's or other tools'), TIFF/GeoTIFF, .npy, PNG/JPEG.

Every reader returns a lazy bigimg image and records the paths its dask
layers read (:func:`bigimg.files.note_read`), so that no write can overlap
an input.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from typing import Any, cast

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from bigimg.errors import unreadable_metadata
from bigimg.files import note_read
from bigimg.image import (
    IMAGE_DIMS,
    SPATIAL_DIMS,
    STACK_DIMS,
    append_axis,
    apply_nodata,
    from_array,
    normalize_chunks,
    with_band,
)
from bigimg.io.chunks import read_in_chunks
from bigimg.io.layout import (
    dim_names,
    is_zarr_store,
    ome_axes_names,
    ome_multiscale,
    storage_errors,
)
from bigimg.io.location import Location
from bigimg.io.store import open_dataset, stored_image

_TIFF_SUFFIXES = {".tif", ".tiff", ".gtiff"}
_PLAIN_SUFFIXES = {".png", ".jpg", ".jpeg"}
_CHANNEL_NAMES = {"c", "channel", "channels", "band", "bands"}


def open_image(
    path: str | os.PathLike[str] | Location,
    *,
    chunks: str | int | Mapping[Hashable, Any] = "auto",
    nodata: float | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> xr.DataArray:
    """Open an image file lazily as a bigimg DataArray.

    Parameters
    ----------
    path : str, path-like or URL
        A Zarr store (a bigimg output, a group holding one array, or a bare
        array), a TIFF/BigTIFF/GeoTIFF/COG (read tile by tile), a ``.npy``
        file (memory-mapped) or a PNG/JPEG (small images, read whole). Zarr
        stores and TIFFs may also be URLs (``s3://``, ``gs://``, ``az://``,
        ``http(s)://``, ``memory://``): each task then reads only the
        objects or byte ranges of its own chunk.
    chunks, nodata
        As in :func:`from_array`. From a Zarr store or a tiled TIFF, chunks
        made of whole store chunks (tiles) are read one region per task;
        others are read in the store's chunks and rechunked.
    storage_options : dict, optional
        How to reach a URL (see :func:`bigimg.to_zarr`).

    Returns
    -------
    xarray.DataArray

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        Unknown format, or the data is not 2-4 dimensional.
    OSError
        A URL that cannot be reached (endpoint, bucket, credentials).

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(12, dtype="uint8").reshape(3, 4))
    >>> img = bi.open_image(path, nodata=0)
    >>> img.dtype, img.dims, bool(img.isnull()[0, 0, 0])
    (dtype('float32'), ('y', 'x', 'band'), True)
    """
    loc = Location.of(path, storage_options)
    suffix = Path(loc.name).suffix.lower()
    attrs = {"bigimg_source": str(loc)}
    read = None  # for stores: how to read them in other chunks
    kind = _kind(loc, suffix)
    with storage_errors(loc):
        if kind == "zarr":
            obj, read = _open_zarr_input(loc)
        elif kind == "tiff":
            obj, read = _open_tiff(loc)
        elif kind == "npy":
            obj = np.load(loc.path, mmap_mode="r")  # chunked lazily by from_array
        else:
            obj = _open_plain(loc)
    if read is not None and chunks != "auto":
        stored = from_array(obj)  # a dask array keeps its (the store's) chunks
        out = read_in_chunks(stored, normalize_chunks(stored, chunks), read)
        if nodata is not None:
            out = apply_nodata(out, nodata)
    else:
        out = from_array(obj, chunks=chunks, nodata=nodata)
    out.attrs = {**out.attrs, **attrs}
    return out


def _kind(loc: Location, suffix: str) -> str:
    """``"zarr"``, ``"tiff"``, ``"npy"`` or ``"plain"``; clear errors for anything else."""
    if loc.local:
        path = loc.path
        if not path.exists():
            raise FileNotFoundError(f"path: no such file or directory: {str(path)!r}")
        if path.is_dir():
            if not is_zarr_store(loc):
                raise ValueError(f"path: {str(path)!r} is a directory but not a Zarr store")
            return "zarr"
    else:
        with storage_errors(loc):
            if is_zarr_store(loc):
                return "zarr"
            fs, fpath = loc.filesystem()
            found = fs.exists(fpath)
        if not found:
            raise FileNotFoundError(f"path: no such file or Zarr store: {str(loc)!r}")
    if suffix in _TIFF_SUFFIXES:
        return "tiff"
    if suffix == ".npy" and loc.local:
        return "npy"
    if suffix in _PLAIN_SUFFIXES:
        return "plain"
    raise ValueError(
        f"path: unknown image format {suffix or '(no suffix)'!r} for {str(loc)!r}; "
        "expected a Zarr store, .tif/.tiff, .npy (local), .png or .jpg"
    )


# ---------------------------------------------------------------- readers
def _open_zarr_input(path: Location) -> tuple[Any, Callable[[Any], da.Array] | None]:
    """The array of a Zarr store (lazy, in its chunks), and how to read it in other chunks."""
    import zarr

    try:
        node = zarr.open(path.zarr_store(read_only=True), mode="r")
    except Exception as e:
        raise unreadable_metadata(str(path), e) from e
    if not isinstance(node, zarr.Array) and "bigimg_complete" in node.attrs:  # a bigimg store
        return stored_image(*open_dataset(path, allow_incomplete=False))
    if not isinstance(node, zarr.Array):
        ome = ome_multiscale(node.attrs)
        if ome is not None:
            return _ome_level0(path, node, ome)
        arrays = [(name, a) for name, a in sorted(node.arrays()) if a.ndim >= 2]
        if not arrays or any(_has_dim_names(a) for _, a in arrays):  # xarray's, or empty
            return _foreign_group(path, node), None
        if len(arrays) > 1:  # zarr's own group: arrays without dim names
            raise ValueError(
                f"path: Zarr group {str(path)!r} holds arrays {[n for n, _ in arrays]!r}; "
                "expected a bigimg store or a group with exactly one 2-4 dimensional array: "
                f"open one by its path, e.g. {str(path).rstrip('/') + '/' + arrays[0][0]!r}"
            )
        node = arrays[0][1]
    names: Any = getattr(node.metadata, "dimension_names", None)  # zarr v3 only
    names = names or node.attrs.get("_ARRAY_DIMENSIONS")
    if names and tuple(names) != {2: SPATIAL_DIMS, 3: IMAGE_DIMS, 4: STACK_DIMS}.get(node.ndim):
        data, _ = _zarr_array(node, path)
        return _named(xr.DataArray(data, dims=tuple(str(n) for n in names)), path), None
    return _zarr_array(node, path)


def _has_dim_names(node: Any) -> bool:
    """Whether xarray can name the array's dims (v3 ``dimension_names``, v2 ``_ARRAY_DIMENSIONS``)."""
    names = getattr(node.metadata, "dimension_names", None)  # zarr v3 only
    return bool(names or node.attrs.get("_ARRAY_DIMENSIONS"))


def _ome_level0(path: Location, node: Any, ome: Mapping[str, Any]) -> tuple[Any, None]:
    """Level 0 (``datasets[0]``) of an OME-Zarr image, its dims named by the OME axes."""
    level0 = str(ome["datasets"][0].get("path", ""))
    try:
        arr = node[level0]
    except Exception as e:
        raise unreadable_metadata(str(path), e) from e
    if not hasattr(arr, "shape") or not hasattr(arr, "chunks"):
        raise ValueError(
            f"path: OME-Zarr {str(path)!r}: dataset {level0!r} (level 0) is not an array"
        )
    axes = ome.get("axes") or dim_names(arr)  # OME 0.3 and older: axes are bare names
    data, _ = _zarr_array(arr, path)
    renamed = _ome_dims(axes, data.shape, path)
    obj = xr.DataArray(data, dims=tuple(ome_axes_names(axes)))
    return _named(obj.rename(renamed), path), None


def _ome_dims(axes: Any, shape: tuple[int, ...], path: Location) -> dict[str, str]:
    """OME axis name -> bigimg dim: the channel axis becomes ``band``, space axes keep y/x."""
    names = ome_axes_names(axes)
    if len(names) != len(shape):
        raise ValueError(
            f"path: OME-Zarr {str(path)!r} lists axes {names!r} for a {len(shape)}-D array"
        )
    types = [a.get("type") if isinstance(a, Mapping) else None for a in axes]
    return {n: "band" for n, t in zip(names, types, strict=True) if t == "channel"}


def _foreign_group(path: Location, node: Any) -> xr.DataArray:
    """The one image variable of a Zarr group written by another tool (xarray, zarr)."""
    try:
        ds = xr.open_zarr(path.zarr_store(read_only=True), chunks={}, consolidated=None)
    except Exception as e:
        raise unreadable_metadata(str(path), e) from e
    images = [name for name, v in ds.data_vars.items() if v.ndim >= 2]
    if len(images) != 1:
        raise ValueError(
            f"path: Zarr group {str(path)!r} holds variables {list(ds.data_vars)!r}; expected "
            "a bigimg store or a group with exactly one 2-4 dimensional array"
        )
    obj = ds[images[0]]
    note_read(obj.data.name, path.url)
    return _named(obj, path)


def _named(obj: xr.DataArray, path: Location) -> xr.DataArray:
    """``obj`` with bigimg's dims, mapped by name when it has ``y`` and ``x``, else by position.

    By name: a channel dim (``c``, ``channel``) becomes ``band`` and the dims
    are put in bigimg's order; other dims of size 1 (OME's ``t``, ``z``) are
    dropped, and any other dim is refused (select a plane first), never
    renamed by position. Without ``y`` and ``x`` (``dim_0``, ...), the dims are
    renamed by position to ``(y, x[, band])`` or ``(image, y, x, band)``.
    """
    if {"y", "x"} <= set(obj.dims):
        obj = obj.rename({d: "band" for d in obj.dims if str(d).lower() in _CHANNEL_NAMES})
        extra = [d for d in obj.dims if d not in STACK_DIMS]
        if any(obj.sizes[d] != 1 for d in extra):
            raise ValueError(
                f"path: {str(path)!r} has dims {dict(obj.sizes)!r}; bigimg reads y, x, a "
                f"channel dim (c, channel or band) and an image dim, not {extra!r} (dims of size "
                "1 are dropped): select one plane first, e.g. with xarray's .isel"
            )
        obj = obj.squeeze(extra, drop=True) if extra else obj
    if set(obj.dims) <= set(STACK_DIMS):
        order = [d for d in STACK_DIMS if d in obj.dims]
        if not {"y", "x"} <= set(order):
            raise ValueError(f"path: {str(path)!r} has dims {obj.dims!r}; an image needs y and x")
        return obj.transpose(*order)
    if obj.ndim not in (2, 3, 4):
        raise ValueError(f"path: {str(path)!r} holds a {obj.ndim}-D array; expected 2-4 dims")
    default = {2: SPATIAL_DIMS, 3: IMAGE_DIMS, 4: STACK_DIMS}[obj.ndim]
    return obj.rename(dict(zip(obj.dims, default, strict=True)))


def _zarr_array(node: Any, path: Location) -> tuple[da.Array, Callable[[Any], da.Array]]:
    """A zarr array as dask (its chunks) and how to read it in other chunks."""

    def read(chunks: tuple[tuple[int, ...], ...] | None) -> da.Array:
        spec = node.chunks if chunks is None else chunks[: node.ndim]
        name = note_read(f"read-zarr-{tokenize(path, node.path, spec)}", path.url)
        data = da.from_zarr(node, chunks=spec, name=name)
        return data[..., np.newaxis] if chunks and len(chunks) > node.ndim else data  # band

    return read(None), read


def _open_tiff(path: Location) -> tuple[Any, Callable[[Any], da.Array] | None]:
    """A TIFF tile by tile (tifffile), or a GeoTIFF through rioxarray.

    tifffile's zarr view of a TIFF holds an open file and a lock, which cannot
    be sent to a worker; each task opens the file by its location instead
    (once per worker process and file version, see :func:`_tiff_node`), so
    the graph pickles for any ``distributed`` cluster. A remote TIFF is read
    through fsspec: each task fetches the byte ranges of its own tiles.
    """
    import tifffile

    fs, fpath = path.filesystem()
    with fs.open(fpath, "rb") as fh, tifffile.TiffFile(fh) as tif:
        geo = tif.is_geotiff
        axes = tif.series[0].axes
    georef = None
    if geo:
        try:
            if path.local:
                return _open_geotiff(path), None
            georef = _georef(path)
        except ImportError:  # the optional `geo` extra is not installed
            pass
    key = _tiff_version(path)
    node = _tiff_node(*key)
    dtype = np.dtype(node.dtype)

    def read(chunks: tuple[tuple[int, ...], ...]) -> da.Array:
        data = da.map_blocks(
            _read_tiff_block,
            dtype=dtype,
            chunks=chunks[: node.ndim],
            meta=np.empty((0,) * node.ndim, dtype),
            name=note_read(f"read-tiff-{tokenize(key, chunks)}", path.url),
            key=key,
        )
        return append_axis(data) if len(chunks) > node.ndim else data  # from_array's band

    stored = read(tuple(da.core.normalize_chunks(node.chunks, node.shape)))
    if georef is not None:  # a remote GeoTIFF: tifffile's tiles, rasterio's georeferencing
        obj = xr.DataArray(stored, dims=_tiff_dims(axes, path)).transpose("y", "x", ...)
        obj = with_band(obj)
        return obj.assign_coords(georef).assign_coords(band=np.arange(obj.sizes["band"])), None
    if axes in ("YX", "YXS"):
        return stored, read
    return _named(xr.DataArray(stored, dims=_tiff_dims(axes, path)), path), None


def _tiff_version(loc: Location) -> tuple[Location, str]:
    """``(location, version)``: a local file's mtime and size, a remote one's size and ETag."""
    if loc.local:
        path = loc.path.resolve()
        stat = path.stat()
        return Location.of(str(path)), f"{stat.st_mtime_ns}:{stat.st_size}"
    fs, fpath = loc.filesystem()
    info = fs.info(fpath)
    return loc, f"{info.get('size')}:{info.get('ETag') or info.get('etag') or info.get('mtime')}"


def _tiff_dims(axes: str, path: Location) -> tuple[str, ...]:
    """bigimg dim names for tifffile's axes codes: Y, X; S or C -> band; one other -> image."""
    names = {"Y": "y", "X": "x", "S": "band"}
    if "S" not in axes:
        names["C"] = "band"
    others = [a for a in axes if a not in names]
    if len(others) > 1:
        raise ValueError(
            f"path: TIFF {str(path)!r} has axes {axes!r}; bigimg reads Y, X, samples and at "
            "most one more axis (a stack of images)"
        )
    return tuple(names.get(a, "image") for a in axes)


@functools.lru_cache(maxsize=16)
def _tiff_node(loc: Location, version: str) -> Any:
    """The TIFF's level-0 image as a read-only zarr array (cached per process and file version)."""
    import tifffile
    import zarr

    if loc.local:
        store = tifffile.imread(loc.url, aszarr=True)
    else:
        fs, fpath = loc.filesystem()
        # stays open with the cache entry; read-only whatever the file object says (a
        # memory:// file is writable, and zarr refuses a writable store in mode "r")
        store = tifffile.TiffFile(fs.open(fpath, "rb")).aszarr(read_only=True)
    node = zarr.open(store, mode="r")
    return node if isinstance(node, zarr.Array) else node["0"]  # pyramidal TIFF: level 0


def _read_tiff_block(block_info: Any = None, *, key: tuple[Location, str]) -> np.ndarray:
    loc, version = key
    if loc.local:  # a remote file's version would cost a request per task
        stat = os.stat(loc.url)
        if f"{stat.st_mtime_ns}:{stat.st_size}" != version:
            raise OSError(f"input {loc.url!r} changed while it was being read; run again")
    region = tuple(slice(a, b) for a, b in block_info[None]["array-location"])
    return np.asarray(_tiff_node(*key)[region])


_PLAIN_MAX_BYTES = 4 * 2**30


def _open_plain(loc: Location) -> np.ndarray:
    """A PNG/JPEG read whole (these formats cannot be read by region).

    Pillow's decompression-bomb guard (about 180 Mpixels) is meant for images
    from untrusted web uploads; here a large PNG is a legitimate local input,
    so it is read when its decoded size is at most 4 GiB, and refused with a
    way forward above that.
    """
    import PIL
    import PIL.Image

    limit = PIL.Image.MAX_IMAGE_PIXELS
    PIL.Image.MAX_IMAGE_PIXELS = None
    try:
        fs, fpath = loc.filesystem()
        with fs.open(fpath, "rb") as fh, PIL.Image.open(fh) as opened:
            im: PIL.Image.Image = opened
            if im.mode in ("P", "PA"):  # palette indices: the colours are the image
                im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
            bands = len(im.getbands())
            nbytes = (
                im.width
                * im.height
                * bands
                * (2 if im.mode.startswith("I;16") else 4 if im.mode in ("I", "F") else 1)
            )
            if nbytes > _PLAIN_MAX_BYTES:
                raise ValueError(
                    f"path: {str(loc)!r} is {im.width} x {im.height} x {bands} "
                    f"({nbytes / 2**30:.1f} GiB decoded); PNG/JPEG must be read whole, so bigimg "
                    "reads them up to 4 GiB: convert it to a tiled TIFF or Zarr first "
                    "(e.g. `gdal_translate -co TILED=YES -co BIGTIFF=YES in.png out.tif`)"
                )
            return np.asarray(im)
    except PIL.UnidentifiedImageError as e:
        raise ValueError(f"path: {str(loc)!r} is not a readable PNG/JPEG ({e})") from None
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = limit


def _georef(loc: Location) -> dict[str, xr.Variable]:
    """A remote GeoTIFF's ``x``, ``y`` and ``spatial_ref`` coords (rioxarray), file closed after.

    Its pixels are read by tifffile instead: a GDAL dataset that reads through
    a Python opener calls back into Python when it is closed, and closing it
    from a garbage collection in fsspec's I/O thread crashed the interpreter.
    """
    import rioxarray

    fs, fpath = loc.filesystem()
    obj = cast(xr.DataArray, rioxarray.open_rasterio(fpath, opener=fs, mask_and_scale=False))
    try:
        return {k: obj.coords[k].variable.load() for k in ("y", "x", "spatial_ref")}
    finally:
        obj.close()


def _open_geotiff(loc: Location) -> xr.DataArray:
    """GeoTIFF through rioxarray: x/y coords from the transform, CRS in ``spatial_ref``.

    The CRS and transform ride along as coordinates, so they survive every
    operation and are written to Zarr (``xr.open_zarr(...).rio.crs`` reads them).
    """
    import rioxarray

    with warnings.catch_warnings():  # rioxarray's own chunks=True uses a deprecated form
        warnings.simplefilter("ignore", FutureWarning)
        obj = cast(
            xr.DataArray,
            rioxarray.open_rasterio(loc.url, chunks=True, lock=False, mask_and_scale=False),
        )
    obj = obj.transpose("y", "x", "band").assign_coords(band=np.arange(obj.sizes["band"]))
    obj.attrs = {
        k: v for k, v in obj.attrs.items() if k not in ("_FillValue", "scale_factor", "add_offset")
    }
    obj.encoding = {}
    note_read(obj.data.name, loc.url)
    return obj
