"""Cloud-Optimized GeoTIFF output: values and tags read back by GDAL, layout, safety."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import tifffile
import xarray as xr

import bigimg as bi
from bigimg.cog import to_cog

rasterio = pytest.importorskip("rasterio")  # the optional `geo` extra (rioxarray)
from rasterio.transform import from_origin  # noqa: E402

TILE = 32  # small tiles: small images get several overview levels
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


# ---------------------------------------------------------------- helpers
def _image(shape=(150, 100, 2), seed=0) -> np.ndarray:
    """Smooth float32 data with a NaN border and NaN holes (NoData)."""
    rng = np.random.default_rng(seed)
    y, x, b = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    a = (np.sin(y / 9.0) * np.cos(x / 13.0) * 100 + b * 10).astype("float32")
    a += rng.normal(0, 0.5, shape).astype("float32")
    a[:7] = np.nan
    a[rng.random(shape[:2]) < 0.05] = np.nan
    return a


def _read(path, overview=None):
    """All bands as (y, x, band), GDAL's view of the full image or of overview ``overview``."""
    kwargs = {} if overview is None else {"OVERVIEW_LEVEL": overview}
    with rasterio.open(path, **kwargs) as src:
        return np.moveaxis(src.read(), 0, -1)


def _expected_overviews(a: np.ndarray, tile: int) -> list[np.ndarray]:
    """NaN-aware 2 x 2 means, level after level, until the image fits in a tile."""
    out, level = [], bi.from_array(a)
    while max(level.sizes["y"], level.sizes["x"]) > tile:
        level = bi.coarsen_mean(level, 2).compute()
        out.append(level.values)
    return out


def _geotiff(path: Path, a: np.ndarray, *, crs="EPSG:32633", dtype=None) -> Path:
    data = np.moveaxis(a, -1, 0)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=a.shape[0],
        width=a.shape[1],
        count=a.shape[2],
        dtype=dtype or a.dtype,
        crs=crs,
        transform=from_origin(500000.0, 4000000.0, 10.0, 20.0),
        tiled=True,
        blockxsize=32,
        blockysize=32,
    ) as f:
        f.write(data)
    return path


def gdal_cog_check(path) -> list[str]:
    """GDAL's COG validator, full check (validate_cloud_optimized_geotiff.py --full-check=yes).

    The file layout, read with tifffile: ghost area, main IFD right after it,
    IFD offsets increasing, smallest overview's tiles first, and within each
    level, tiles in row-major order with their leader and trailer bytes.
    """
    errors = []
    raw = Path(path).read_bytes()
    assert raw[:4] == b"II+\x00", "not a little-endian BigTIFF"
    pattern = b"GDAL_STRUCTURAL_METADATA_SIZE="
    if raw[16 : 16 + len(pattern)] != pattern:
        return ["no GDAL ghost area at byte 16"]
    size = int(raw[16 + len(pattern) : 16 + len(pattern) + 6])
    ghost = raw[16 + 43 : 16 + 43 + size].decode("latin-1")
    for item in (
        "LAYOUT=IFDS_BEFORE_DATA",
        "BLOCK_ORDER=ROW_MAJOR",
        "BLOCK_LEADER=SIZE_AS_UINT4",
        "BLOCK_TRAILER=LAST_4_BYTES_REPEATED",
        "KNOWN_INCOMPATIBLE_EDITION=NO",
    ):
        if item not in ghost:
            errors.append(f"ghost area lacks {item}")
    expected = 16 + 43 + size
    expected += expected % 2
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        if pages[0].offset != expected:
            errors.append(f"main IFD at {pages[0].offset}, expected {expected}")
        firsts = []
        for k, page in enumerate(pages):
            if k and page.offset < pages[k - 1].offset:
                errors.append(f"IFD {k} before IFD {k - 1}")
            if not page.is_tiled:
                errors.append(f"IFD {k} not tiled")
            last = 0
            for i, (off, n) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
                if off < last:
                    errors.append(f"IFD {k} tile {i} before the previous tile")
                if struct.unpack("<I", raw[off - 4 : off])[0] != n:
                    errors.append(f"IFD {k} tile {i}: leader is not the byte count")
                if raw[off + n - 4 : off + n] != raw[off + n : off + n + 4]:
                    errors.append(f"IFD {k} tile {i}: trailer is not the last 4 bytes")
                last = off
            firsts.append(page.dataoffsets[0])
        if firsts[-1] < pages[-1].offset:
            errors.append("first tile of the smallest level before its IFD")
        if any(a < b for a, b in zip(firsts, firsts[1:], strict=False)):
            errors.append(f"levels' data not smallest first: first tiles at {firsts}")
    return errors


@pytest.fixture
def float_img():
    return _image()


# ---------------------------------------------------------------- values
@pytest.mark.parametrize(
    "chunks",
    [{"y": 64, "x": 32}, {"y": 50, "x": 70}, {"y": 150, "x": 100}, None],
    ids=["tile-multiples", "unaligned", "one-chunk", "numpy"],
)
def test_float_values_and_overviews_as_gdal_reads_them(tmp_path, float_img, chunks):
    img = bi.from_array(float_img) if chunks is None else bi.from_array(float_img, chunks=chunks)
    if chunks is None:
        img = img.copy(data=float_img)  # numpy-backed
    path = tmp_path / "out.tif"
    result = to_cog(img, path, tile=TILE, progress=False)
    np.testing.assert_array_equal(_read(path), float_img)
    expected = _expected_overviews(float_img, TILE)
    assert result.overviews == tuple(o.shape[:2] for o in expected)
    for k, ref in enumerate(expected):
        np.testing.assert_array_equal(_read(path, k), ref)
    with rasterio.open(path) as src:
        assert np.isnan(src.nodata)
        assert src.dtypes == ("float32", "float32")
        assert src.block_shapes[0] == (TILE, TILE)
        assert src.compression.name == "deflate"
        assert src.overviews(1) == [2, 4, 8]
        assert src.crs is None
    assert result.nbytes == path.stat().st_size
    assert not gdal_cog_check(path)
    assert sorted(os.listdir(tmp_path)) == ["out.tif"]  # no spool or partial file left


def test_any_chunking_writes_the_same_bytes(tmp_path, float_img):
    paths = []
    for k, chunks in enumerate([{"y": 64, "x": 32}, {"y": 50, "x": 70}, {"y": 17, "x": 100}]):
        paths.append(tmp_path / f"{k}.tif")
        to_cog(bi.from_array(float_img, chunks=chunks), paths[-1], tile=TILE, progress=False)
    assert len({p.read_bytes() for p in paths}) == 1


def test_every_chunk_is_computed_once(tmp_path, float_img):
    seen = []

    def count(block, block_info=None):
        seen.append(tuple(block_info[0]["chunk-location"]))
        return block

    for chunks in ({"y": 64, "x": 32}, {"y": 50, "x": 70}):
        base = bi.from_array(float_img, chunks=chunks)
        img = base.copy(data=base.data.map_blocks(count, dtype=base.dtype))
        seen.clear()
        to_cog(img, tmp_path / "o.tif", tile=TILE, overwrite=True, progress=False)
        assert sorted(seen) == sorted(np.ndindex(img.data.numblocks))


@pytest.mark.parametrize(
    ("compression", "predictor"),
    [
        (c, p)
        for c in ("deflate", "zstd", "lzw", "none")
        for p in (False, True)
        if c != "none" or not p
    ],
)
def test_compressions_and_predictors(tmp_path, float_img, compression, predictor):
    img = bi.from_array(float_img, chunks=64)
    to_cog(img, tmp_path / "o.tif", tile=TILE, compression=compression, predictor=predictor)
    np.testing.assert_array_equal(_read(tmp_path / "o.tif"), float_img)
    np.testing.assert_array_equal(
        _read(tmp_path / "o.tif", 0), _expected_overviews(float_img, TILE)[0]
    )
    as_int = bi.from_array(np.nan_to_num(float_img, nan=0.0), chunks=64).round().astype("int16")
    to_cog(as_int, tmp_path / "i.tif", tile=TILE, compression=compression, predictor=predictor)
    np.testing.assert_array_equal(_read(tmp_path / "i.tif"), as_int.values)


def test_float_to_integer_with_nodata(tmp_path, float_img):
    img = bi.from_array(float_img - np.nanmin(float_img) + 1, chunks=48)
    to_cog(img, tmp_path / "o.tif", dtype="uint16", nodata=0, tile=TILE, progress=False)
    a = img.values
    np.testing.assert_array_equal(_read(tmp_path / "o.tif"), np.where(np.isnan(a), 0, np.rint(a)))
    ov = _expected_overviews(a, TILE)[0]
    np.testing.assert_array_equal(
        _read(tmp_path / "o.tif", 0), np.where(np.isnan(ov), 0, np.rint(ov))
    )
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.nodata == 0
        assert src.dtypes[0] == "uint16"


def test_integer_image_keeps_its_dtype_and_overviews_skip_nodata(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(1, 250, (120, 90, 3), dtype="uint8")
    a[:20, :30] = 0  # NoData
    img = bi.open_image(_geotiff(tmp_path / "in.tif", a), chunks={"y": 64, "x": 64})
    assert img.dtype == np.uint8
    to_cog(img, tmp_path / "o.tif", nodata=0, tile=TILE, progress=False)
    np.testing.assert_array_equal(_read(tmp_path / "o.tif"), a)
    masked = np.where(a == 0, np.nan, a.astype("float32"))
    ov = _expected_overviews(masked, TILE)[0]
    np.testing.assert_array_equal(
        _read(tmp_path / "o.tif", 0), np.where(np.isnan(ov), 0, np.rint(ov))
    )
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.nodata == 0 and src.dtypes[0] == "uint8" and src.count == 3
    to_cog(img, tmp_path / "nonodata.tif", tile=TILE, progress=False)
    with rasterio.open(tmp_path / "nonodata.tif") as src:
        assert src.nodata is None


def test_float_nodata_value_replaces_nan(tmp_path, float_img):
    to_cog(bi.from_array(float_img), tmp_path / "o.tif", nodata=-9999, tile=TILE)
    np.testing.assert_array_equal(
        _read(tmp_path / "o.tif"), np.where(np.isnan(float_img), -9999, float_img)
    )
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.nodata == -9999


# ---------------------------------------------------------------- georeferencing
@pytest.mark.parametrize("crs", ["EPSG:32633", "EPSG:4326"])
def test_geotiff_input_keeps_crs_and_transform(tmp_path, float_img, crs):
    src_path = _geotiff(tmp_path / "in.tif", float_img, crs=crs)
    img = bi.open_image(src_path, chunks={"y": 64, "x": 64})
    to_cog(img, tmp_path / "o.tif", tile=TILE, progress=False)
    with rasterio.open(src_path) as ref, rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs == ref.crs
        assert out.transform == ref.transform
        np.testing.assert_array_equal(out.read(), ref.read())
    assert not gdal_cog_check(tmp_path / "o.tif")


def test_transform_without_crs(tmp_path, float_img):
    rioxarray = pytest.importorskip("rioxarray")
    src_path = _geotiff(tmp_path / "in.tif", float_img, crs=None)
    img = rioxarray.open_rasterio(src_path, chunks={"x": 64, "y": 64}).transpose("y", "x", "band")
    assert "spatial_ref" in img.coords  # the transform, no CRS
    to_cog(img, tmp_path / "o.tif", tile=TILE, progress=False)
    with rasterio.open(src_path) as ref, rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs is None
        assert out.transform == ref.transform
        np.testing.assert_array_equal(out.read(), ref.read())


def test_processed_and_cropped_geotiff_keeps_its_grid(tmp_path, float_img):
    img = bi.open_image(_geotiff(tmp_path / "in.tif", float_img), chunks=64)
    crop = bi.gaussian_filter(img, 1.0).isel(y=slice(10, 90), x=slice(5, 77))
    to_cog(crop, tmp_path / "o.tif", tile=TILE, progress=False)
    with rasterio.open(tmp_path / "o.tif") as out:
        assert out.crs.to_epsg() == 32633
        assert out.transform == from_origin(500000.0 + 5 * 10, 4000000.0 - 10 * 20, 10.0, 20.0)
        np.testing.assert_array_equal(np.moveaxis(out.read(), 0, -1), crop.values)


def test_plain_array_has_no_georeferencing(tmp_path, float_img):
    img = bi.from_array(float_img).assign_coords(x=np.arange(100) * 2.0)  # coords, no CRS
    to_cog(img, tmp_path / "o.tif", tile=TILE, progress=False)
    with tifffile.TiffFile(tmp_path / "o.tif") as tif:
        assert not {33550, 33922, 34264, 34735} & {t.code for t in tif.pages[0].tags}


# ---------------------------------------------------------------- validators
def test_gdal_cog_validator_accepts(tmp_path):
    cogeo = pytest.importorskip("rio_cogeo.cogeo")
    y, x = np.mgrid[0:1100, 0:700]
    a = (np.sin(y / 50.0) + np.cos(x / 70.0)).astype("float32")[..., None]
    a[:100] = np.nan
    path = _geotiff(tmp_path / "in.tif", a)
    to_cog(bi.open_image(path, chunks=512), tmp_path / "o.tif", progress=False)  # default tile
    valid, errors, warnings = cogeo.cog_validate(tmp_path / "o.tif", strict=True, quiet=True)
    assert (valid, errors, warnings) == (True, [], [])
    assert not gdal_cog_check(tmp_path / "o.tif")
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.overviews(1) == [2, 4]
        assert src.block_shapes[0] == (512, 512)


def test_gdal_check_catches_a_plain_tiff(tmp_path, float_img):
    tifffile.imwrite(tmp_path / "plain.tif", float_img, tile=(32, 32), bigtiff=True)
    assert gdal_cog_check(tmp_path / "plain.tif")


# ---------------------------------------------------------------- schedulers
@pytest.mark.cluster
def test_local_cluster_writes_the_same_file(tmp_path, float_img, local_client):
    img = bi.from_array(float_img, chunks={"y": 64, "x": 32})
    to_cog(img, tmp_path / "threads.tif", tile=TILE, progress=False)
    with local_client.as_current(), dask.config.set(scheduler=local_client.get):
        to_cog(img, tmp_path / "cluster.tif", tile=TILE, progress=False)
    assert (tmp_path / "cluster.tif").read_bytes() == (tmp_path / "threads.tif").read_bytes()
    np.testing.assert_array_equal(_read(tmp_path / "cluster.tif"), float_img)


def test_tiles_sent_back_by_workers_give_the_same_file(tmp_path, float_img, monkeypatch):
    """Workers that cannot reach the spool (another host) send their tiles back."""
    from bigimg import cog

    img = bi.from_array(float_img, chunks={"y": 64, "x": 32})
    to_cog(img, tmp_path / "direct.tif", tile=TILE, progress=False)
    monkeypatch.setattr(cog, "_append_here", lambda spool, segments: None)
    to_cog(img, tmp_path / "sent.tif", tile=TILE, progress=False)
    assert (tmp_path / "direct.tif").read_bytes() == (tmp_path / "sent.tif").read_bytes()


# ---------------------------------------------------------------- never lose data
def test_existing_file_is_refused_unless_overwrite(tmp_path, float_img):
    img = bi.from_array(float_img)
    path = tmp_path / "o.tif"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        to_cog(img, path, tile=TILE)
    assert path.read_bytes() == b"keep me"
    to_cog(img, path, tile=TILE, overwrite=True)
    np.testing.assert_array_equal(_read(path), float_img)


def test_output_overlapping_the_input_is_refused(tmp_path, float_img):
    path = _geotiff(tmp_path / "in.tif", float_img)
    before = path.read_bytes()
    img = bi.gaussian_filter(bi.open_image(path, chunks=64), 1.0)
    img.attrs.clear()  # the graph still names the file it reads
    with pytest.raises(ValueError, match="overlaps the input"):
        to_cog(img, path, overwrite=True, tile=TILE)
    assert path.read_bytes() == before


def _fail_on_block(block, block_info=None):
    if block_info[0]["chunk-location"][:2] == (1, 1):
        raise RuntimeError("boom")
    return block


def test_failed_write_leaves_nothing(tmp_path, float_img):
    base = bi.from_array(float_img, chunks={"y": 64, "x": 32})
    img = base.copy(data=base.data.map_blocks(_fail_on_block, dtype=base.dtype))
    with pytest.raises(RuntimeError, match="boom"):
        to_cog(img, tmp_path / "o.tif", tile=TILE, progress=False)
    assert os.listdir(tmp_path) == []
    (tmp_path / "o.tif").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"):
        to_cog(img, tmp_path / "o.tif", tile=TILE, overwrite=True, progress=False)
    assert os.listdir(tmp_path) == ["o.tif"] and (tmp_path / "o.tif").read_bytes() == b"old"


def test_killed_write_leaves_no_file_at_the_path(tmp_path):
    script = textwrap.dedent(
        """
        import sys, time, numpy as np, bigimg as bi
        from bigimg.cog import to_cog
        def slow(b):
            time.sleep(0.2)
            return b
        img = bi.from_array(np.ones((256, 256), "float32"), chunks=32)
        img = img.copy(data=img.data.map_blocks(slow, dtype="float32"))
        to_cog(img, sys.argv[1], tile=32, progress=False)
        """
    )
    path = tmp_path / "o.tif"
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], cwd=Path(__file__).parent.parent
    )
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".spool") for p in tmp_path.iterdir()):
            assert proc.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert not path.exists()
    assert all(p.name.startswith(".o.tif.") for p in tmp_path.iterdir())  # hidden temporaries
    # issue 22, item 10: the next writer of the path removes what the killed one left
    left = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith(".partial") for n in left) and any(n.endswith(".spool") for n in left)
    (tmp_path / "o.tif.keep").write_bytes(b"a user's file")
    (tmp_path / ".o.tif.notes.partial.txt").write_bytes(b"not bigimg's pattern")
    to_cog(bi.from_array(np.ones((64, 64), "float32")), path, tile=32, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".o.tif.notes.partial.txt",
        "o.tif",
        "o.tif.keep",
    ]


def test_a_running_writers_temporaries_are_not_removed(tmp_path):
    """Only a dead writer's files go: a running one holds an flock on each of them."""
    from bigimg.cog import _Spool
    from bigimg.files import new_file, remove_leftovers

    path = tmp_path / "o.tif"
    with new_file(path) as tmp, _Spool(tmp) as spool:
        assert Path(spool.ref.path).name.startswith(tmp.name + ".")
        assert remove_leftovers(path) == []  # both held
        assert tmp.exists() and Path(spool.ref.path).exists()
        tmp.write_bytes(b"done")
    assert sorted(os.listdir(tmp_path)) == ["o.tif"]


@pytest.mark.parametrize(
    ("value", "kwargs", "match"),
    [
        (0.0, {"dtype": "uint8", "nodata": 0}, "nodata=0"),
        (300.0, {"dtype": "uint8", "nodata": 0}, "dtype=uint8"),
    ],
)
def test_values_the_output_cannot_hold_fail_the_write(tmp_path, float_img, value, kwargs, match):
    a = np.where(np.isnan(float_img), np.nan, 5.0).astype("float32")
    a[50, 50] = value
    with pytest.raises(ValueError, match=match):
        to_cog(bi.from_array(a, chunks=64), tmp_path / "o.tif", tile=TILE, progress=False, **kwargs)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- bad input
def _no_compute(dsk, keys, **kwargs):
    raise AssertionError("computed before checking the arguments")


@pytest.mark.parametrize(
    ("obj", "kwargs", "exc", "match"),
    [
        (np.zeros((8, 8)), {}, TypeError, "img must be an xarray.DataArray"),
        ("stack", {}, ValueError, "'image' dim"),
        ("odd-dims", {}, ValueError, "img must have dims"),
        ("complex", {}, TypeError, "real numbers"),
        (None, {"path": "o.png"}, ValueError, "path must end in .tif"),
        (None, {"path": "s3://bucket/o.tif"}, ValueError, "path must be a local file"),
        (None, {"tile": 500}, ValueError, "tile must be a multiple of 16"),
        (None, {"tile": 8192}, ValueError, "tile must be"),
        (None, {"tile": "512"}, TypeError, "tile must be an int"),
        (None, {"compression": "jpeg"}, ValueError, "compression must be one of"),
        (None, {"level": 30}, ValueError, "level for deflate"),
        (None, {"compression": "lzw", "level": 3}, ValueError, "level applies"),
        (None, {"dtype": "complex64"}, ValueError, "dtype must be one of"),
        (None, {"dtype": "uint8"}, ValueError, "nodata: writing float32 data as uint8"),
        (None, {"dtype": "uint8", "nodata": 300}, ValueError, "nodata=300"),
        (None, {"dtype": "int16", "nodata": 0.5}, ValueError, "nodata=0.5"),
        (None, {"nodata": "zero"}, TypeError, "nodata must be a number"),
        (None, {"compression": "none", "predictor": True}, ValueError, "predictor"),
        (None, {"predictor": "yes"}, TypeError, "predictor must be"),
    ],
)
def test_bad_input_fails_before_computing(tmp_path, obj, kwargs, exc, match):
    data = da.zeros((40, 30, 1), dtype="float32", chunks=16)
    img = (
        {
            None: xr.DataArray(data, dims=("y", "x", "band")),
            "stack": xr.DataArray(data[None], dims=("image", "y", "x", "band")),
            "odd-dims": xr.DataArray(data[..., 0], dims=("row", "col")),
            "complex": xr.DataArray(data.astype("complex64"), dims=("y", "x", "band")),
        }.get(obj, obj)
        if isinstance(obj, str | None)
        else obj
    )
    kwargs = {"path": tmp_path / "o.tif", **kwargs}
    path = kwargs.pop("path")
    path = tmp_path / path if isinstance(path, str) and "://" not in path else path
    with dask.config.set(scheduler=_no_compute), pytest.raises(exc, match=match):
        to_cog(img, path, **kwargs)
    assert os.listdir(tmp_path) == []


def test_irregular_coords_on_a_georeferenced_image_fail(tmp_path, float_img):
    img = bi.open_image(_geotiff(tmp_path / "in.tif", float_img), chunks=64)
    x = img.x.values.copy()
    x[-1] += 1.0
    with dask.config.set(scheduler=_no_compute), pytest.raises(ValueError, match="'x' coord"):
        to_cog(img.assign_coords(x=x), tmp_path / "o.tif")
