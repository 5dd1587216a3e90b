"""Cloud-Optimized GeoTIFF output, written tile by tile from the dask graph.

:func:`to_cog` computes the image and its overviews (NaN-aware 2 x 2 block
means, :func:`bigimg.resample.coarsen_mean`) in one pass over the graph. Each task
converts one chunk to the output dtype, cuts it into TIFF tiles and compresses
them; the compressed tiles are appended to a spool file beside the output.
When every tile is there, the COG is laid out as GDAL's COG driver lays it out:

    header | ghost area | IFDs (full resolution first) | tiles of the smallest
    overview ... tiles of the full resolution, each level in row-major order,
    each tile framed by its size (4 bytes before) and its last 4 bytes (after)

and the tiles are copied from the spool in that order (``copy_file_range``,
no decompression). Memory stays bounded by the chunk size whatever the image
size; the disk holds the spool and the output (both compressed) until the end.

Three layers, as elsewhere in bigimg: numpy kernels on one chunk (dtype
conversion, tiling, encoding), the TIFF layout (IFDs, ghost area, GeoTIFF
tags), and the chunked builder with the public function.
"""

from __future__ import annotations

import io
import math
import numbers
import os
import secrets
import socket
import struct
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dask
import dask.array as da
import numpy as np
import xarray as xr

from bigimg.compute import active_client
from bigimg.files import check_disjoint, hold, new_file, read_paths
from bigimg.image import with_band
from bigimg.resample import coarsen_mean

_DIMS = ("y", "x", "band")
_SUFFIXES = (".tif", ".tiff")
_COMPRESSIONS = {"deflate": 8, "zstd": 50000, "lzw": 5, "none": 1}
_LEVELS = {"deflate": (1, 12, 6), "zstd": (1, 22, 9)}  # min, max, default (GDAL's defaults)
_DTYPES: tuple[str, ...] = tuple(
    f"{kind}{bits}" for kind in ("uint", "int") for bits in (8, 16, 32, 64)
) + ("float32", "float64")
_GEO_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)  # pixel scale, tiepoint, transform, keys
_WRITE_GROUP = 256 << 20  # bytes appended to the spool per system call, at most
_IOV_MAX = 900  # buffers per writev call (Linux allows 1024)
_Segment = tuple[bytes | memoryview, ...]  # one framed tile: leader, bytes, trailer


# ---------------------------------------------------------------- public API
@dataclass(frozen=True)
class CogResult:
    """What :func:`to_cog` wrote.

    Attributes
    ----------
    path : pathlib.Path
        The COG.
    shape : tuple of int
        ``(y, x, band)`` of the full resolution.
    overviews : tuple of tuple of int
        ``(y, x)`` of each overview, finest first.
    nbytes : int
        Size of the file.
    seconds : float
        Wall time of the write.
    """

    path: Path
    shape: tuple[int, int, int]
    overviews: tuple[tuple[int, int], ...]
    nbytes: int
    seconds: float


def to_cog(
    img: xr.DataArray,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    nodata: float | None = None,
    dtype: Any = None,
    compression: str = "deflate",
    level: int | None = None,
    predictor: bool = False,
    tile: int = 512,
    progress: bool | None = None,
) -> CogResult:
    """Write an image as a Cloud-Optimized GeoTIFF, tile by tile (computes).

    The file is a tiled, compressed BigTIFF with internal overviews, laid out
    as GDAL's COG driver lays it out (IFDs first, the smallest overview's
    tiles next, the full resolution last), so GDAL's COG validator accepts it
    and a reader fetches any region or zoom level with a few range requests.
    Overviews are NaN-aware 2 x 2 block means
    (:func:`bigimg.resample.coarsen_mean`), halving until the image fits in
    one tile, as GDAL does. A GeoTIFF opened
    by :func:`bigimg.open_image` keeps its CRS and transform (the
    ``spatial_ref`` coord and the ``x``/``y`` coords); an image without a
    ``spatial_ref`` coord is written without georeferencing.

    Parameters
    ----------
    img : xarray.DataArray
        Image with dims ``y``, ``x`` and optionally ``band`` (any order), real
        numbers; NoData is NaN. Dask-backed images are computed chunk by chunk
        on the active scheduler (threads, or the current ``distributed``
        client).
    path : str or path-like
        Local file ending in ``.tif`` or ``.tiff``. It is written under a
        temporary name in the same folder and renamed into place only when
        complete; the folder must have room for the compressed image twice
        (a spool of compressed tiles, then the COG).
    overwrite : bool, default False
        Replace an existing file. A path that overlaps an input of ``img``
        is refused whatever this says.
    nodata : float, optional
        The GDAL NoData value (``GDAL_NODATA`` tag); NaN pixels are written as
        this value. Default: NaN for float output, no tag for integer output.
        Required when float data is written as an integer ``dtype``. For an
        integer image it marks the pixels that already hold it as NoData (the
        overviews skip them).
    dtype : dtype, optional
        Output data type, one of uint8, int8, uint16, int16, uint32, int32,
        uint64, int64, float32, float64. Default: the image's (float16 ->
        float32, bool -> uint8). Float data written as integers is rounded
        to the nearest integer.
    compression : {"deflate", "zstd", "lzw", "none"}, default "deflate"
    level : int, optional
        Compression level: deflate 1-12 (default 6), zstd 1-22 (default 9),
        as in GDAL's ``LEVEL`` creation option.
    predictor : bool, default False
        TIFF predictor (horizontal differencing for integers, floating point
        for floats), as GDAL's ``PREDICTOR=YES``: smaller files for smooth
        images, a little slower.
    tile : int, default 512
        Tile width and height in pixels: a multiple of 16 from 16 to 4096.
    progress : bool, optional
        Progress bar on stderr; default: only when stderr is a TTY.

    Returns
    -------
    CogResult
        The path, the shapes of the levels, the file size and the time taken.

    Raises
    ------
    TypeError
        ``img`` is not a DataArray of real numbers, or an option has the
        wrong type.
    ValueError
        Before computing: wrong dims, bad ``tile``, ``compression``,
        ``level``, ``dtype``, ``nodata`` or path suffix, a path that overlaps
        an input, irregular ``x``/``y`` coords on a georeferenced image.
        While computing: values that ``dtype`` cannot hold, or valid pixels
        equal to ``nodata`` (they would read as NoData); nothing is left at
        ``path`` then.
    FileExistsError
        ``path`` exists and ``overwrite`` is false.

    See Also
    --------
    bigimg.to_zarr : the chunked store for further processing.

    Notes
    -----
    Every chunk of the image is computed once: the task that encodes it also
    feeds the first overview, whose chunks feed the next. Tasks append their
    compressed tiles to the spool file themselves when it is on a file system
    they share with this process (threads, a ``LocalCluster``); workers
    elsewhere send the compressed tiles back. Peak memory is a few chunks per
    thread, independent of the image size; give the image chunks that are
    multiples of ``tile`` (others are rechunked). Tile bytes are compressed
    with imagecodecs (libdeflate, zstd, LZW), the same codecs GDAL uses.

    Examples
    --------
    >>> import numpy as np, bigimg as bi, rasterio, tempfile, os
    >>> from bigimg.cog import to_cog
    >>> img = bi.from_array(np.arange(2000 * 1500, dtype="float32").reshape(2000, 1500))
    >>> path = os.path.join(tempfile.mkdtemp(), "out.tif")
    >>> result = to_cog(img, path, progress=False)
    >>> result.overviews
    ((1000, 750), (500, 375))
    >>> with rasterio.open(path) as src:
    ...     print(src.overviews(1), src.nodata, src.read(1)[1, :3])
    [2, 4] nan [1500. 1501. 1502.]
    """
    start = time.perf_counter()
    data = _check_image(img)
    path = _check_path(path)
    tile = _check_tile(tile)
    out_dtype, nodata = _check_dtype(data.dtype, dtype, nodata)
    fmt = _Format(
        dtype=out_dtype.str,
        nodata=nodata,
        tile=tile,
        compression=_check_compression(compression),
        level=_check_level(compression, level),
        predictor=_check_predictor(predictor, compression, out_dtype),
    )
    _check_inputs(img, path)
    geo_tags = _geotiff_tags(data)
    levels = _levels(data, fmt)
    with new_file(path, overwrite=overwrite, what="path") as tmp, _Spool(tmp) as spool:
        tables = _write_tiles(levels, fmt, spool, progress=progress, desc=f"writing {path.name}")
        _assemble(tmp, spool, tables, fmt, data.sizes["band"], geo_tags)
    shapes = [(t.shape[0], t.shape[1]) for t in tables]
    return CogResult(
        path,
        (shapes[0][0], shapes[0][1], data.sizes["band"]),
        tuple(shapes[1:]),
        path.stat().st_size,
        time.perf_counter() - start,
    )


# ---------------------------------------------------------------- kernels (numpy)
@dataclass(frozen=True)
class _Format:
    """How pixels become TIFF tiles (picklable: sent along with every task)."""

    dtype: str
    nodata: float | int | None
    tile: int
    compression: str
    level: int | None
    predictor: int  # the TIFF Predictor tag: 1 none, 2 horizontal, 3 floating point

    @property
    def fill(self) -> float | int:
        """The value of the pixels that pad the edge tiles."""
        return 0 if self.nodata is None else self.nodata


def _cast(block: np.ndarray, fmt: _Format, *, strict: bool) -> np.ndarray:
    """One chunk in the output dtype: NaN -> ``nodata``, floats rounded for integer output.

    ``strict`` (the full resolution): values the dtype cannot hold, or valid
    pixels equal to ``nodata``, raise. Otherwise (overviews, derived data) a
    mean that lands on ``nodata`` is moved to the nearest other value.
    """
    dtype = np.dtype(fmt.dtype)
    if block.dtype.kind != "f":  # bool or integer data: no NaN to replace
        if block.dtype == dtype or dtype.kind == "f":
            return block.astype(dtype, copy=False)
        _check_range(block, dtype)
        return block.astype(dtype)
    if dtype.kind == "f":
        out = block.astype(dtype, copy=False)  # the input itself when the dtype is the same
        if strict and dtype.itemsize < block.dtype.itemsize:
            big = np.isinf(out) & ~np.isinf(block)
            if big.any():
                raise ValueError(
                    f"dtype={dtype.name}: {int(big.sum())} pixel(s) exceed {dtype.name}'s range "
                    f"(largest magnitude {float(np.abs(block[big]).max())!r})"
                )
        if fmt.nodata is None or math.isnan(fmt.nodata):
            return out
        nan = np.isnan(block)
        hit = (out == fmt.nodata) & ~nan
        if out is block or out.base is block:  # never write into the input (dask shares it)
            out = out.copy()
    else:
        nan = np.isnan(block)
        rounded = np.rint(block)
        _check_range(rounded[~nan], dtype)
        out = np.where(nan, 0, rounded).astype(dtype)
        if fmt.nodata is None:  # integer data has no NaN, nor do its means
            return out
        hit = (rounded == fmt.nodata) & ~nan
    if hit.any():
        if strict:
            raise ValueError(
                f"nodata={fmt.nodata!r}: {int(hit.sum())} valid pixel(s) equal the NoData "
                "value and would read as NoData; choose a nodata value the data never takes"
            )
        out[hit] = _next_to(fmt.nodata, dtype)
    out[nan] = fmt.nodata
    return out


def _check_range(values: np.ndarray, dtype: np.dtype) -> None:
    if values.size == 0:
        return
    info = np.iinfo(dtype)
    lo, hi = values.min(), values.max()
    if lo < info.min or hi > info.max:
        raise ValueError(
            f"dtype={dtype.name}: pixel values span [{lo}, {hi}], outside {dtype.name}'s range "
            f"[{info.min}, {info.max}]; rescale or clip the image first"
        )


def _next_to(value: float | int | None, dtype: np.dtype) -> Any:
    """The representable value nearest ``value`` but different from it."""
    assert value is not None
    if dtype.kind == "f":
        return np.nextafter(dtype.type(value), dtype.type(np.inf))
    return value + 1 if value < np.iinfo(dtype).max else value - 1


def _encode_tiles(block: np.ndarray, fmt: _Format) -> tuple[list[_Segment], np.ndarray]:
    """Cut a ``(y, x, band)`` chunk into tiles and encode each, in row-major order.

    Edge tiles are padded to the full tile size with ``fmt.fill``. Each
    segment is GDAL's framing of a tile: its byte count as a little-endian
    uint32, the encoded bytes, and their last 4 bytes repeated.

    Returns the segments and the encoded sizes (without framing), shaped
    ``(tiles along y, tiles along x)``.
    """
    t = fmt.tile
    ny, nx = -(-block.shape[0] // t), -(-block.shape[1] // t)
    segments: list[_Segment] = []
    sizes = np.zeros((ny, nx), np.int64)
    tile = np.empty((t, t, block.shape[2]), block.dtype)  # one buffer: fresh pages are slow
    for i in range(ny):
        for j in range(nx):
            part = block[i * t : (i + 1) * t, j * t : (j + 1) * t]
            if part.shape[:2] != (t, t):
                tile.fill(fmt.fill)
            tile[: part.shape[0], : part.shape[1]] = part
            encoded = _encode(tile, fmt)
            sizes[i, j] = len(encoded)
            segments.append((struct.pack("<I", len(encoded)), encoded, encoded[-4:]))
    return segments, sizes


def _encode(tile: np.ndarray, fmt: _Format) -> bytes:
    """The TIFF bytes of one ``(tile, tile, band)`` tile (little-endian, pixel-interleaved)."""
    import imagecodecs

    if fmt.predictor == 3:
        tile = imagecodecs.floatpred_encode(tile, axis=-2)
    elif fmt.predictor == 2:
        tile = imagecodecs.delta_encode(tile, axis=-2)
    buffer = cast("bytes", tile)  # the codecs read any contiguous buffer
    if fmt.compression == "deflate":
        return bytes(imagecodecs.deflate_encode(buffer, level=fmt.level))
    if fmt.compression == "zstd":
        return bytes(imagecodecs.zstd_encode(buffer, level=fmt.level))
    if fmt.compression == "lzw":
        return bytes(imagecodecs.lzw_encode(buffer))
    return tile.tobytes()


# ---------------------------------------------------------------- spool
@dataclass(frozen=True)
class _SpoolRef:
    """Where tasks append compressed tiles; ``token`` and ``host`` prove it is the same file."""

    path: str
    token: bytes
    host: str


class _Spool:
    """A temporary file beside the output that collects compressed tiles in any order."""

    def __init__(self, beside: Path) -> None:
        self.beside = beside

    def __enter__(self) -> _Spool:
        fd, name = tempfile.mkstemp(
            prefix=f"{self.beside.name}.", suffix=".spool", dir=self.beside.parent
        )
        os.close(fd)
        self.ref = _SpoolRef(name, secrets.token_bytes(16), _host_id())
        try:
            self.fd = os.open(name, os.O_RDWR | os.O_APPEND)
            hold(self.fd)  # named after `beside`: a later run removes it if this one is killed
            os.write(self.fd, self.ref.token)
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        Path(self.ref.path).unlink(missing_ok=True)


def _host_id() -> str:
    """This kernel's boot id: appends to one file from one kernel never interleave."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"{socket.gethostname()}:{uuid.getnode()}"


def _append(fd: int, segments: Sequence[_Segment]) -> np.ndarray:
    """Append ``segments`` to the file open with ``O_APPEND``; their offsets in it.

    Each ``writev`` call lands whole and contiguous even while other threads
    or processes append to the same file (the kernel serialises appends to a
    local file), so the offsets are read back from the file position.
    """
    offsets = np.zeros(len(segments), np.int64)
    sizes = np.array([sum(len(b) for b in seg) for seg in segments], np.int64)
    first = 0
    while first < len(segments):
        last, total = first, 0
        buffers: list[bytes | memoryview] = []
        while last < len(segments) and len(buffers) + len(segments[last]) <= _IOV_MAX:
            if total and total + sizes[last] > _WRITE_GROUP:
                break
            total += int(sizes[last])
            buffers += segments[last]
            last += 1
        written = os.writev(fd, buffers)
        if written != total:
            raise OSError(f"short write to the tile spool ({written} of {total} bytes): disk full?")
        end = os.lseek(fd, 0, os.SEEK_CUR)
        offsets[first:last] = end - total + np.cumsum(sizes[first:last]) - sizes[first:last]
        first = last
    return offsets


def _append_here(spool: _SpoolRef, segments: list[_Segment]) -> np.ndarray | None:
    """Append to the spool from this process when it can see it; else ``None``."""
    if _host_id() != spool.host:
        return None
    try:
        fd = os.open(spool.path, os.O_RDWR | os.O_APPEND)
    except OSError:
        return None
    try:
        if os.pread(fd, len(spool.token), 0) != spool.token:
            return None
        return _append(fd, segments)
    finally:
        os.close(fd)


@dataclass
class _BlockTiles:
    """A task's answer: where its tiles went (or their bytes, from a remote worker)."""

    level: int
    origin: tuple[int, int]  # first tile (row, col) of the chunk in its level's tile grid
    sizes: np.ndarray  # encoded sizes, (tiles along y, tiles along x)
    offsets: np.ndarray | None  # offsets of the segments in the spool
    blob: bytes | None = None  # the segments, when the spool was out of reach


def _spool_block(
    block: np.ndarray,
    *,
    fmt: _Format,
    level: int,
    origin: tuple[int, int],
    spool: _SpoolRef,
) -> _BlockTiles:
    """Task: cast, tile, encode one chunk and append its tiles to the spool."""
    segments, sizes = _encode_tiles(_cast(block, fmt, strict=level == 0), fmt)
    offsets = _append_here(spool, segments)
    if offsets is None:
        return _BlockTiles(level, origin, sizes, None, b"".join(b for seg in segments for b in seg))
    return _BlockTiles(level, origin, sizes, offsets.reshape(sizes.shape))


# ---------------------------------------------------------------- TIFF layout
@dataclass
class _Table:
    """One level's tiles: size and spool offset of each (row-major tile grid)."""

    shape: tuple[int, int]
    sizes: np.ndarray
    offsets: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.offsets = np.full(self.sizes.shape, -1, np.int64)


@dataclass(frozen=True)
class _Tag:
    code: int
    type: int  # TIFF field type: 2 ASCII, 3 SHORT, 4 LONG, 12 DOUBLE, 16 LONG8
    count: int
    data: bytes  # the values, little-endian


_TYPE_DTYPES = {1: "u1", 2: "u1", 3: "<u2", 4: "<u4", 12: "<f8", 16: "<u8"}
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}


def _tag(code: int, type_: int, values: Any) -> _Tag:
    if type_ == 2:
        data = str(values).encode("ascii") + b"\0"
        return _Tag(code, type_, len(data), data)
    arr = np.atleast_1d(np.asarray(values, dtype=_TYPE_DTYPES[type_]))
    return _Tag(code, type_, arr.size, arr.tobytes())


def _ghost_area() -> bytes:
    """GDAL's structural metadata: what a reader may rely on (checked by the validator)."""
    body = (
        "LAYOUT=IFDS_BEFORE_DATA\n"
        "BLOCK_ORDER=ROW_MAJOR\n"
        "BLOCK_LEADER=SIZE_AS_UINT4\n"
        "BLOCK_TRAILER=LAST_4_BYTES_REPEATED\n"
        "KNOWN_INCOMPATIBLE_EDITION=NO\n "
    )
    head = "GDAL_STRUCTURAL_METADATA_SIZE=000000 bytes\n"
    body += " " * (-(16 + len(head) + len(body)) % 8)  # the first IFD starts 8-aligned
    return f"GDAL_STRUCTURAL_METADATA_SIZE={len(body):06d} bytes\n{body}".encode("ascii")


def _level_tags(
    table: _Table, fmt: _Format, n_bands: int, offsets: np.ndarray, extra: list[_Tag]
) -> list[_Tag]:
    dtype = np.dtype(fmt.dtype)
    sizes = table.sizes.ravel()
    tags = [
        _tag(254, 4, 0 if extra else 1),  # NewSubfileType: 1 = reduced resolution
        _tag(256, 4, table.shape[1]),
        _tag(257, 4, table.shape[0]),
        _tag(258, 3, [dtype.itemsize * 8] * n_bands),
        _tag(259, 3, _COMPRESSIONS[fmt.compression]),
        _tag(262, 3, 1),  # MinIsBlack
        _tag(277, 3, n_bands),
        _tag(284, 3, 1),  # chunky (pixel-interleaved)
        _tag(322, 4, fmt.tile),
        _tag(323, 4, fmt.tile),
        _tag(324, 16, offsets),
        _tag(325, 4 if sizes.max() < 2**32 else 16, sizes),
        _tag(339, 3, [{"u": 1, "i": 2, "f": 3}[dtype.kind]] * n_bands),
    ]
    if fmt.predictor != 1:
        tags.append(_tag(317, 3, fmt.predictor))
    if n_bands > 1:
        tags.append(_tag(338, 3, [0] * (n_bands - 1)))  # unspecified extra samples
    if fmt.nodata is not None:
        tags.append(_tag(42113, 2, _nodata_text(fmt.nodata, dtype)))
    return sorted(tags + extra, key=lambda t: t.code)


def _nodata_text(nodata: float | int, dtype: np.dtype) -> str:
    if dtype.kind != "f":
        return str(int(nodata))
    value = float(dtype.type(nodata))
    return "nan" if math.isnan(value) else repr(value)


def _ifd(tags: list[_Tag], at: int, next_ifd: int) -> bytes:
    """A BigTIFF IFD at file offset ``at`` (8-aligned), followed by its out-of-line values."""
    head = 8 + 20 * len(tags) + 8
    entries, values = [], bytearray()
    for t in tags:
        if len(t.data) <= 8:
            inline = t.data.ljust(8, b"\0")
        else:
            inline = struct.pack("<Q", at + head + len(values))
            values += t.data + b"\0" * (-len(t.data) % 8)
        entries.append(struct.pack("<HHQ", t.code, t.type, t.count) + inline)
    return b"".join(
        [struct.pack("<Q", len(tags)), *entries, struct.pack("<Q", next_ifd), bytes(values)]
    )


def _header(tables: list[_Table], fmt: _Format, n_bands: int, geo: list[_Tag]) -> bytes:
    """Header, ghost area and IFDs (full resolution first), tiles placed right after them.

    Tiles go smallest overview first, each level in row-major order; every
    tile's offset points past its 4-byte leader.
    """
    ghost = _ghost_area()

    def ifds(offsets: list[np.ndarray]) -> list[bytes]:
        out, at = [], 16 + len(ghost)
        sized = [
            len(_ifd(_level_tags(t, fmt, n_bands, o, geo if k == 0 else []), 0, 0))
            for k, (t, o) in enumerate(zip(tables, offsets, strict=True))
        ]
        for k, (t, o) in enumerate(zip(tables, offsets, strict=True)):
            tags = _level_tags(t, fmt, n_bands, o, geo if k == 0 else [])
            nxt = at + sized[k] if k + 1 < len(tables) else 0
            out.append(_ifd(tags, at, nxt))
            at += sized[k]
        return out

    placeholder = [np.zeros(t.sizes.size, np.int64) for t in tables]
    pos = 16 + len(ghost) + sum(len(b) for b in ifds(placeholder))
    offsets: list[np.ndarray] = [np.empty(0, np.int64)] * len(tables)
    for k in reversed(range(len(tables))):
        framed = tables[k].sizes.ravel() + 8
        offsets[k] = pos + 4 + np.concatenate([[0], np.cumsum(framed[:-1])])
        pos += int(framed.sum())
    head = struct.pack("<2sHHHQ", b"II", 43, 8, 0, 16 + len(ghost))
    return b"".join([head, ghost, *ifds(offsets)])


def _assemble(
    tmp: Path, spool: _Spool, tables: list[_Table], fmt: _Format, n_bands: int, geo: list[_Tag]
) -> None:
    """Write the COG at ``tmp``: header and IFDs, then the tiles copied from the spool."""
    header = _header(tables, fmt, n_bands, geo)
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        pos = _write_all(fd, header, 0)
        src = os.open(spool.ref.path, os.O_RDONLY)
        try:
            for table in reversed(tables):
                for start, length in _runs(table.offsets.ravel(), table.sizes.ravel() + 8):
                    _copy(src, fd, start, pos, length)
                    pos += length
        finally:
            os.close(src)
    finally:
        os.close(fd)


def _runs(offsets: np.ndarray, lengths: np.ndarray) -> Iterator[tuple[int, int]]:
    """Contiguous ranges of the spool covering the segments in order."""
    start, end = int(offsets[0]), int(offsets[0] + lengths[0])
    for o, n in zip(offsets[1:].tolist(), lengths[1:].tolist(), strict=True):
        if o == end:
            end += n
        else:
            yield start, end - start
            start, end = o, o + n
    yield start, end - start


def _write_all(fd: int, data: bytes, pos: int) -> int:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, pos)
        view, pos = view[n:], pos + n
    return pos


def _copy(src: int, dst: int, src_pos: int, dst_pos: int, length: int) -> None:
    """Copy a byte range between files (in the kernel when it can)."""
    while length:
        try:
            n = os.copy_file_range(src, dst, length, src_pos, dst_pos)
        except (AttributeError, OSError):  # not Linux, or across file systems
            n = os.pwrite(dst, os.pread(src, min(length, 8 << 20), src_pos), dst_pos)
        if n == 0:
            raise OSError(f"the tile spool ended early (at byte {src_pos})")
        src_pos, dst_pos, length = src_pos + n, dst_pos + n, length - n


# ---------------------------------------------------------------- GeoTIFF tags
def _geotiff_tags(data: xr.DataArray) -> list[_Tag]:
    """GeoTIFF tags for the image's CRS and transform, encoded by GDAL itself.

    GDAL writes a one-pixel GeoTIFF with the same CRS and transform in memory;
    its GeoTIFF tags (keys, pixel scale, tiepoint or transformation matrix)
    are copied verbatim, so any CRS GDAL knows is encoded as GDAL encodes it.
    """
    grid = _grid_mapping(data)
    if grid is None:
        return []
    transform = _transform(data, grid)
    wkt = grid.attrs.get("crs_wkt") or grid.attrs.get("spatial_ref")
    try:
        import rasterio
        import tifffile
        from rasterio.io import MemoryFile
    except ImportError as e:  # pragma: no cover - rasterio comes with rioxarray
        raise ImportError(
            "img has a spatial_ref coord: writing its CRS needs rasterio (pip install rioxarray)"
        ) from e
    crs = rasterio.crs.CRS.from_wkt(wkt) if wkt else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with MemoryFile() as mem:
            profile = {"driver": "GTiff", "width": 1, "height": 1, "count": 1, "dtype": "uint8"}
            with mem.open(**profile, crs=crs, transform=transform):
                pass
            raw = mem.read()
    tags = []
    with tifffile.TiffFile(io.BytesIO(raw)) as tif:
        if tif.byteorder != "<":  # pragma: no cover - GDAL writes the native order
            raise RuntimeError("GDAL wrote a big-endian GeoTIFF template")
        for tag in tif.pages.first.tags:
            if tag.code in _GEO_TAGS:
                size = tag.count * _TYPE_SIZES[int(tag.dtype)]
                value = raw[tag.valueoffset : tag.valueoffset + size]
                tags.append(_Tag(tag.code, int(tag.dtype), tag.count, value))
    return tags


def _grid_mapping(data: xr.DataArray) -> xr.DataArray | None:
    """The scalar coord holding the CRS (rioxarray's ``spatial_ref``), if any."""
    for coord in data.coords.values():
        if coord.ndim == 0 and {"crs_wkt", "spatial_ref", "GeoTransform"} & set(coord.attrs):
            return coord
    return None


def _transform(data: xr.DataArray, grid: xr.DataArray) -> Any:
    """The affine transform from the pixel-centre ``x``/``y`` coords (else ``GeoTransform``)."""
    from affine import Affine

    steps = {}
    for d in ("x", "y"):
        if d not in data.coords or data.sizes[d] < 2:
            break
        c = np.asarray(data[d].values, dtype=np.float64)
        step = (c[-1] - c[0]) / (c.size - 1)
        if step == 0 or not np.allclose(np.diff(c), step, rtol=1e-6, atol=0):
            raise ValueError(
                f"img: the {d!r} coord is not evenly spaced, so no GeoTIFF transform fits it; "
                "drop the spatial_ref coord to write without georeferencing"
            )
        steps[d] = (float(c[0]), float(step))
    if len(steps) == 2:
        (x0, dx), (y0, dy) = steps["x"], steps["y"]
        return Affine(dx, 0.0, x0 - dx / 2, 0.0, dy, y0 - dy / 2)
    gt = grid.attrs.get("GeoTransform")
    if gt:
        return Affine.from_gdal(*(float(v) for v in str(gt).split()))
    return None


# ---------------------------------------------------------------- chunked builder
def _levels(data: xr.DataArray, fmt: _Format) -> list[da.Array]:
    """The full resolution and its overviews, lazy, in chunks of whole tiles.

    Each overview is the NaN-aware 2 x 2 block mean of the previous level
    (:func:`bigimg.resample.coarsen_mean`), in float; the tasks cast every level to
    the output dtype. Levels halve until the image fits in one tile.
    """
    arr = data.data
    if not isinstance(arr, da.Array):
        arr = da.from_array(np.asarray(arr), chunks=(4 * fmt.tile, 4 * fmt.tile, -1))
    # the image's own graph fused (as dask.compute would), then shared as is: an
    # optimization over all levels would fuse its chunks into each consumer,
    # computing every chunk once per level that reads it
    (full,) = dask.optimize(_tile_aligned(arr, fmt.tile))
    levels = [full]
    mean = full
    if mean.dtype.kind != "f" or mean.dtype.itemsize < 4:
        wide = mean.dtype.kind in "iu" and mean.dtype.itemsize >= 4
        floats = mean.astype(np.float64 if wide else np.float32)
        if fmt.nodata is not None and mean.dtype.kind in "iu":  # NoData pixels skipped
            floats = da.where(mean == fmt.nodata, np.nan, floats)
        mean = floats
    h, w = arr.shape[:2]
    while max(h, w) > fmt.tile:
        h, w = -(-h // 2), -(-w // 2)
        coarse = coarsen_mean(xr.DataArray(mean, dims=_DIMS), 2).data
        mean = _tile_aligned(coarse, fmt.tile)
        levels.append(mean)
    return levels


def _tile_aligned(arr: da.Array, tile: int) -> da.Array:
    """``arr`` with chunk boundaries on tile boundaries along y and x, one chunk along band."""
    target: dict[int, Any] = {}
    for axis in (0, 1):
        chunks = arr.chunks[axis]
        if any(c % tile for c in chunks[:-1]):  # the last chunk may end anywhere
            target[axis] = max(tile, round(max(chunks) / tile) * tile)
    if len(arr.chunks[2]) > 1:
        target[2] = -1
    return arr.rechunk(target) if target else arr


def _write_tiles(
    levels: list[da.Array],
    fmt: _Format,
    spool: _Spool,
    *,
    progress: bool | None,
    desc: str,
) -> list[_Table]:
    """Compute every level's chunks and spool their tiles; the tile tables."""
    t = fmt.tile
    tables = [
        _Table(
            (a.shape[0], a.shape[1]),
            np.zeros((-(-a.shape[0] // t), -(-a.shape[1] // t)), np.int64),
        )
        for a in levels
    ]
    encode = dask.delayed(_spool_block, pure=True)
    tasks = []
    for k, arr in enumerate(levels):
        blocks = arr.to_delayed(optimize_graph=False)
        starts = [np.concatenate([[0], np.cumsum(c)]) // t for c in arr.chunks[:2]]
        name = f"to-cog-{k}-{dask.base.tokenize(arr, fmt, spool.ref)}"
        for i, j in np.ndindex(blocks.shape[:2]):
            origin = (int(starts[0][i]), int(starts[1][j]))
            tasks.append(
                encode(
                    blocks[i, j, 0],
                    fmt=fmt,
                    level=k,
                    origin=origin,
                    spool=spool.ref,
                    dask_key_name=f"{name}-{i}-{j}",
                )
            )

    def record(res: _BlockTiles) -> None:
        table = tables[res.level]
        offsets = res.offsets
        if offsets is None:  # a worker that cannot reach the spool sent the bytes
            assert res.blob is not None
            view = memoryview(res.blob)
            bounds = np.concatenate([[0], np.cumsum(res.sizes.ravel() + 8)])
            segments = [(view[a:b],) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            offsets = _append(spool.fd, segments).reshape(res.sizes.shape)
        (r, c), (nr, nc) = res.origin, res.sizes.shape
        table.sizes[r : r + nr, c : c + nc] = res.sizes
        table.offsets[r : r + nr, c : c + nc] = offsets

    _run(tasks, record, progress=progress, desc=desc)
    for k, table in enumerate(tables):
        if (table.offsets < 0).any():  # pragma: no cover - every tile belongs to one chunk
            raise RuntimeError(f"level {k}: {int((table.offsets < 0).sum())} tile(s) not written")
    return tables


def _run(
    tasks: list[Any], record: Callable[[Any], None], *, progress: bool | None, desc: str
) -> None:
    """Compute ``tasks`` on the active scheduler and hand each result to ``record``.

    On a ``distributed`` client each result is taken as it completes and
    released, so results never pile up (they hold compressed tiles when the
    workers cannot reach the spool); dask's local schedulers return only
    offsets, collected at the end.
    """
    show = sys.stderr.isatty() if progress is None else progress
    client = active_client()
    if client is None:
        with _local_progress(show):
            results = dask.compute(*tasks)
        for res in results:
            record(res)
        return
    from distributed import as_completed
    from tqdm import tqdm

    pending = set(client.compute(tasks))
    try:
        with tqdm(total=len(pending), desc=desc, file=sys.stderr, disable=not show) as bar:
            for fut in as_completed(list(pending)):
                record(fut.result())
                pending.discard(fut)
                fut.release()
                bar.update(1)
    finally:
        client.cancel(list(pending))


@contextmanager
def _local_progress(show: bool) -> Iterator[None]:
    if not show:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(out=sys.stderr):
        yield


# ---------------------------------------------------------------- argument checks
def _check_image(img: Any) -> xr.DataArray:
    """``img`` as ``(y, x, band)``, or a clear error."""
    if not isinstance(img, xr.DataArray):
        raise TypeError(f"img must be an xarray.DataArray, got {type(img).__name__}")
    dims: tuple[Hashable, ...] = img.dims
    if "image" in dims:
        raise ValueError(
            f"img has an 'image' dim (a stack of {img.sizes['image']}); a GeoTIFF holds one "
            "image: write img.isel(image=i)"
        )
    missing = [d for d in ("y", "x") if d not in dims]
    extra = [d for d in dims if d not in _DIMS]
    if missing or extra:
        raise ValueError(f"img must have dims ('y', 'x', 'band'), got {dims!r}")
    if img.size == 0:
        raise ValueError(f"img is empty (shape {img.shape})")
    if img.dtype.kind not in "biuf":
        raise TypeError(f"img must hold real numbers (bool, int or float), got {img.dtype}")
    img = with_band(img)
    return img.transpose(*_DIMS)


def _check_path(path: Any) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a str or path-like, got {type(path).__name__}")
    text = os.fspath(path)
    if text.lower().startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        raise ValueError(
            f"path must be a local file, got the URL {text!r}; write locally, then upload"
        )
    p = Path(os.path.expanduser(text))
    if p.suffix.lower() not in _SUFFIXES:
        raise ValueError(f"path must end in .tif or .tiff, got {text!r}")
    return p


def _check_tile(tile: Any) -> int:
    if not isinstance(tile, numbers.Integral) or isinstance(tile, bool):
        raise TypeError(f"tile must be an int, got {tile!r}")
    if not 16 <= int(tile) <= 4096 or int(tile) % 16:
        raise ValueError(f"tile must be a multiple of 16 from 16 to 4096 (e.g. 512), got {tile!r}")
    return int(tile)


def _check_compression(compression: Any) -> str:
    if compression not in _COMPRESSIONS:
        raise ValueError(
            f"compression must be one of {{'deflate', 'zstd', 'lzw', 'none'}}, got {compression!r}"
        )
    return str(compression)


def _check_level(compression: str, level: Any) -> int | None:
    if compression not in _LEVELS:
        if level is not None:
            raise ValueError(f"level applies to deflate and zstd, not to {compression!r}")
        return None
    lo, hi, default = _LEVELS[compression]
    if level is None:
        return default
    if not isinstance(level, numbers.Integral) or isinstance(level, bool):
        raise TypeError(f"level must be an int, got {level!r}")
    if not lo <= int(level) <= hi:
        raise ValueError(f"level for {compression} must be from {lo} to {hi}, got {level!r}")
    return int(level)


def _check_predictor(predictor: Any, compression: str, dtype: np.dtype) -> int:
    if not isinstance(predictor, bool | np.bool_):
        raise TypeError(f"predictor must be True or False, got {predictor!r}")
    if not predictor:
        return 1
    if compression == "none":
        raise ValueError("predictor=True needs a compression (deflate, zstd or lzw)")
    return 3 if dtype.kind == "f" else 2


def _check_dtype(source: np.dtype, dtype: Any, nodata: Any) -> tuple[np.dtype, float | int | None]:
    """The output dtype and NoData value (NaN by default for floats)."""
    if dtype is None:
        out = np.dtype("uint8") if source.kind == "b" else source
        out = np.dtype("float32") if out.kind == "f" and out.itemsize < 4 else out
    else:
        try:
            out = np.dtype(dtype)
        except TypeError as e:
            raise TypeError(f"dtype must be a numpy dtype, got {dtype!r}") from e
        if out.name not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {out.name!r}")
    out = out.newbyteorder("<")
    if nodata is not None and (
        not isinstance(nodata, numbers.Real) or isinstance(nodata, bool | np.bool_)
    ):
        raise TypeError(f"nodata must be a number, got {nodata!r}")
    value = None if nodata is None else float(nodata)
    if out.kind == "f":
        if value is None:
            return out, float("nan")
        with np.errstate(over="ignore"):
            if math.isfinite(value) and not np.isfinite(out.type(value)):
                raise ValueError(f"nodata={nodata!r} does not fit in {out.name}")
        return out, value
    if value is None:
        if source.kind == "f":
            raise ValueError(
                f"nodata: writing {source.name} data as {out.name} needs a nodata value for its "
                f"NaN pixels (e.g. nodata=0), or convert first: img.astype({out.name!r})"
            )
        return out, None
    info = np.iinfo(out)
    if not math.isfinite(value) or value != int(value) or not info.min <= value <= info.max:
        raise ValueError(
            f"nodata={nodata!r} is not an integer in {out.name}'s range [{info.min}, {info.max}]"
        )
    return out, int(value)


def _check_inputs(img: xr.DataArray, path: Path) -> None:
    """Refuse a ``path`` that overlaps a file the image reads (as :func:`bigimg.to_zarr`)."""
    sources: set[str] = {
        str(s) for s in (img.attrs.get("bigimg_source"), img.encoding.get("source")) if s
    }
    for v in img.coords.variables.values():
        if v.chunks is not None:
            sources |= read_paths(v.data)
    if img.chunks is not None:
        sources |= read_paths(img.data)
    check_disjoint(path, sorted(s for s in sources if Path(s).exists()), what="path")
