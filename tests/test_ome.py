"""Issue #18 (items 1-3, 5): bigimg's pyramid stores in viewers and GIS, and OME-Zarr from others.

Acceptance tests for the target layout, through the public API only. A store
written with ``bi.to_zarr(img, path, pyramid=True)`` must be

* valid OME-NGFF 0.5 (``yaozarrs``, ``ome-zarr-models``): the channel axis
  (``band``) comes before ``y`` and ``x`` on disk, and every level's array has
  ``dimension_names`` equal to the ``axes`` names;
* read by ome-zarr-py (napari's reader) as one multiscale image: the right
  number of levels, shapes ``(band, y, x)``, the channel count;
* still ``xr.open_zarr(path)["image"]`` by dim names (every level opens with
  plain xarray), and still ``(y, x, band)`` through ``bi.open_zarr``;
* seen by GDAL (>= 3.13: Zarr v3 ``crc32c`` codec, zarr-conventions
  ``multiscales``) as one raster with its bands and the levels as overviews.

And bigimg reads OME-Zarr stores written by ome-zarr-py and ngff-zarr
(``open_image``, ``store_info``, ``quicklook``).

On disk the image is ``(band, y, x)`` (OME order); bigimg reads it back as
``(y, x, band)``. The GDAL test stays ``xfail(reason="#18", strict=True)``
until it has run against GDAL >= 3.13 (it skips on older GDAL; strict: an
unexpected pass fails the suite, so remove the mark then). The validators, readers and writers are optional: each test skips when
its package is not installed (``yaozarrs``, ``ome-zarr-models``, ``ome-zarr``,
``ngff-zarr``, ``rasterio``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

import bigimg as bi

# pyramid=True halves until the longest side is <= 1024: 2080 -> 1040 -> 520, three levels
NY, NX = 2080, 20
N_LEVELS = 3
GDAL_NEEDED = (3, 13)  # Zarr v3 crc32c codec and the multiscales convention (overviews)


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def pyramids(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """bigimg pyramid stores: ``rgb`` (y, x, band=3), ``gray`` (a 2-D array: band=1), ``yx``.

    Each entry: ``path``, ``data`` (the image in bigimg's (y, x[, band]) order) and
    ``bands`` (None for the plain (y, x) DataArray, which has no band dim).
    """
    root = tmp_path_factory.mktemp("ome")
    rng = np.random.default_rng(18)
    rgb = rng.random((NY, NX, 3), dtype=np.float32)
    gray = rng.random((NY, NX), dtype=np.float32)
    images = {
        "rgb": (bi.from_array(rgb, chunks={"y": 520, "x": NX}), rgb, 3),
        "gray": (bi.from_array(gray, chunks={"y": 520, "x": NX}), gray[..., None], 1),
        "yx": (xr.DataArray(gray, dims=("y", "x")).chunk({"y": 520}), gray, None),
    }
    out = {}
    for name, (img, data, bands) in images.items():
        path = root / f"{name}.zarr"
        bi.to_zarr(img, path, pyramid=True, progress=False)
        out[name] = {"path": path, "data": data, "bands": bands}
    return out


def _view_dims(bands: int | None) -> tuple[str, ...]:
    return ("y", "x") if bands is None else ("y", "x", "band")


def _level_sizes(k: int) -> dict[str, int]:
    return {"y": math.ceil(NY / 2**k), "x": math.ceil(NX / 2**k)}


def _ome_datasets(path: Path) -> list[dict[str, Any]]:
    ome = zarr.open_group(str(path), mode="r").attrs["ome"]
    return list(ome["multiscales"][0]["datasets"])


def _ome_node(path: Path) -> Any:
    """The single multiscale image node that ome-zarr-py's reader finds in ``path``."""
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Multiscales, Reader

    location = parse_url(str(path))
    assert location is not None, f"ome-zarr-py does not recognise {path} as OME-Zarr"
    nodes = [n for n in Reader(location)() if any(isinstance(s, Multiscales) for s in n.specs)]
    assert len(nodes) == 1, f"expected one multiscale image, ome-zarr-py found {len(nodes)}"
    return nodes[0]


ALL = ["rgb", "gray", "yx"]


# ---------------------------------------------------------------- OME-NGFF 0.5 validators
@pytest.mark.parametrize("name", ALL)
def test_yaozarrs_accepts_pyramid_store(pyramids: dict[str, Any], name: str) -> None:
    yaozarrs = pytest.importorskip("yaozarrs")
    yaozarrs.validate_zarr_store(str(pyramids[name]["path"]))  # raises on any error


@pytest.mark.parametrize("name", ALL)
def test_ome_zarr_models_accepts_pyramid_store(pyramids: dict[str, Any], name: str) -> None:
    pytest.importorskip("ome_zarr_models")
    from ome_zarr_models.v05 import Image

    group = zarr.open_group(str(pyramids[name]["path"]), mode="r")
    image = Image.from_zarr(group)
    assert len(image.ome_attributes.multiscales[0].datasets) == N_LEVELS


# ---------------------------------------------------------------- ome-zarr-py (napari's reader)
@pytest.mark.parametrize("name", ALL)
def test_ome_zarr_reader_sees_levels_and_channels(pyramids: dict[str, Any], name: str) -> None:
    """Level count, each level's y/x size and the channel count, found by axis name and type."""
    node = _ome_node(pyramids[name]["path"])
    axes = node.metadata["axes"]
    assert len(node.data) == N_LEVELS
    for k, level in enumerate(node.data):
        sizes = {a["name"]: n for a, n in zip(axes, level.shape, strict=True)}
        assert {d: sizes[d] for d in ("y", "x")} == _level_sizes(k)
        channels = [n for a, n in zip(axes, level.shape, strict=True) if a.get("type") == "channel"]
        bands = pyramids[name]["bands"]
        assert channels == ([] if bands is None else [bands])


@pytest.mark.parametrize("name", ALL)
def test_ome_zarr_reader_gets_band_y_x_arrays(pyramids: dict[str, Any], name: str) -> None:
    """OME-NGFF order on disk: (band, y, x); level 0 holds the image."""
    store = pyramids[name]
    node = _ome_node(store["path"])
    types = [a.get("type") for a in node.metadata["axes"]]
    has_band = store["bands"] is not None
    assert types == (["channel", "space", "space"] if has_band else ["space", "space"])
    want = np.moveaxis(store["data"], -1, 0) if has_band else store["data"]
    for k, level in enumerate(node.data):
        lead = (store["bands"],) if has_band else ()
        assert level.shape == (*lead, *_level_sizes(k).values())
    np.testing.assert_array_equal(np.asarray(node.data[0]), want)


# ---------------------------------------------------------------- xarray and bigimg views
@pytest.mark.parametrize("name", ALL)
def test_xr_open_zarr_reads_every_level_by_dim_names(pyramids: dict[str, Any], name: str) -> None:
    """``xr.open_zarr(path)["image"]`` is the image; each OME level opens with plain xarray.

    The level paths come from the store's OME metadata (``<group>/<variable>``),
    whatever the layout, so a layout that puts levels of different sizes side by side
    in one group (dim-size conflicts in xarray) fails here.
    """
    store = pyramids[name]
    dims = _view_dims(store["bands"])
    image = xr.open_zarr(store["path"])["image"]
    assert set(image.dims) == set(dims)
    np.testing.assert_array_equal(image.transpose(*dims).values, store["data"])
    datasets = _ome_datasets(store["path"])
    assert len(datasets) == N_LEVELS
    for k, ds in enumerate(datasets):
        group, _, var = ds["path"].rpartition("/")
        level = xr.open_zarr(store["path"], group=group or None)[var]
        assert set(level.dims) == set(dims)
        assert {d: level.sizes[d] for d in ("y", "x")} == _level_sizes(k)


@pytest.mark.parametrize("name", ALL)
def test_bigimg_open_zarr_is_y_x_band(pyramids: dict[str, Any], name: str) -> None:
    store = pyramids[name]
    dims = _view_dims(store["bands"])
    img = bi.open_zarr(store["path"])
    assert img.dims == dims
    np.testing.assert_array_equal(img.values, store["data"])
    for k in range(1, N_LEVELS):
        level = bi.open_zarr(store["path"], level=k)
        assert level.dims == dims
        assert {d: level.sizes[d] for d in ("y", "x")} == _level_sizes(k)


@pytest.mark.parametrize("name", ALL)
def test_store_info_lists_levels(pyramids: dict[str, Any], name: str) -> None:
    store = pyramids[name]
    info = bi.store_info(store["path"])
    assert info["complete"] and info["damaged"] is None
    assert info["levels"] == list(range(1, N_LEVELS))
    sizes = dict(zip(info["dims"], info["shape"], strict=True))
    want = _level_sizes(0) | ({} if store["bands"] is None else {"band": store["bands"]})
    assert sizes == want


@pytest.mark.parametrize("name", ["rgb", "gray"])
def test_quicklook_of_pyramid_store(pyramids: dict[str, Any], name: str, tmp_path: Path) -> None:
    store = pyramids[name]
    png = tmp_path / "q.png"
    preview = bi.quicklook(bi.open_zarr(store["path"]), png, max_size=64)
    assert png.is_file()
    assert preview.dims == ("y", "x", "band") and preview.sizes["band"] == store["bands"]
    assert max(preview.sizes["y"], preview.sizes["x"]) <= 64


# ---------------------------------------------------------------- GDAL
@pytest.mark.parametrize("name", ["rgb", "yx"])
def test_gdal_sees_bands_and_overviews(pyramids: dict[str, Any], name: str) -> None:
    """GDAL's classic raster API: bands from ``band``, y/x as rows/columns, levels as overviews.

    Skipped below GDAL 3.13: rasterio 1.4 (the last for Python 3.11) bundles GDAL
    3.10, which knows neither the final Zarr v3 ``bytes`` codec name (3.11) nor
    ``crc32c`` (3.13) nor the zarr-conventions ``multiscales`` (3.13); Debian 12's
    gdal-bin is 3.6.
    """
    rasterio = pytest.importorskip("rasterio")
    version = tuple(int(p) for p in rasterio.__gdal_version__.split(".")[:2])
    if version < GDAL_NEEDED:
        pytest.skip(f"GDAL {rasterio.__gdal_version__} < 3.13 reads no bigimg Zarr v3 store")
    store = pyramids[name]
    level0 = _ome_datasets(store["path"])[0]["path"]
    with rasterio.open(f'ZARR:"{store["path"]}":/{level0}') as src:
        assert src.count == (store["bands"] or 1)
        assert (src.height, src.width) == (NY, NX)
        assert src.overviews(1) == [2**k for k in range(1, N_LEVELS)]


# ---------------------------------------------------------------- OME-Zarr written by other tools
FOREIGN_SHAPE = (3, 64, 48)  # (c, y, x)


def _write_ome_zarr_py(path: Path, data: np.ndarray, axes: str) -> None:
    pytest.importorskip("ome_zarr")
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_image

    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    chunks = (1, 32, 32)[-data.ndim :]
    write_image(
        image=data, group=group, axes=axes, fmt=FormatV05(), storage_options={"chunks": chunks}
    )


def _write_ngff_zarr(path: Path, data: np.ndarray, axes: str) -> None:
    nz = pytest.importorskip("ngff_zarr")
    image = nz.to_ngff_image(data, dims=list(axes), name="image")
    # DASK_BIN_SHRINK: ngff-zarr's default (ITK-Wasm) compiles for a minute on first use
    multiscales = nz.to_multiscales(
        image, scale_factors=[2, 4], method=nz.Methods.DASK_BIN_SHRINK, chunks=32
    )
    nz.to_ngff_zarr(str(path), multiscales, version="0.5")


WRITERS = {"ome-zarr-py": _write_ome_zarr_py, "ngff-zarr": _write_ngff_zarr}
FOREIGN = [(w, axes) for w in WRITERS for axes in ("cyx", "yx")]


@pytest.fixture(scope="module", params=FOREIGN, ids=[f"{w}-{a}" for w, a in FOREIGN])
def foreign(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """An OME-Zarr 0.5 store written by another tool: ome-zarr-py writes levels ``s0``,
    ``s1``, ... as arrays in the image group, ngff-zarr ``scale0/image``, ... (an array in
    a group per level); axes ``c, y, x`` (or ``y, x``), uint16."""
    writer, axes = request.param
    data = (np.random.default_rng(3).random(FOREIGN_SHAPE) * 1000).astype(np.uint16)
    data = data if axes == "cyx" else data[0]
    path = tmp_path_factory.mktemp("foreign") / f"{writer}-{axes}.zarr"
    WRITERS[writer](path, data, axes)
    view = np.moveaxis(data, 0, -1) if axes == "cyx" else data[..., None]  # (y, x, band)
    return {"path": path, "axes": axes, "view": view, "levels": len(_ome_datasets(path))}


def test_foreign_store_is_valid_ome_zarr(foreign: dict[str, Any]) -> None:
    """Control: the validator accepts what ome-zarr-py and ngff-zarr write."""
    yaozarrs = pytest.importorskip("yaozarrs")
    yaozarrs.validate_zarr_store(str(foreign["path"]))
    assert foreign["levels"] >= 2


def test_open_image_reads_foreign_ome_zarr(foreign: dict[str, Any]) -> None:
    """Level 0 (full resolution) as (y, x, band), the channel axis as ``band``."""
    img = bi.open_image(foreign["path"])
    assert img.dims == ("y", "x", "band")
    np.testing.assert_array_equal(img.values, foreign["view"])


def test_open_image_reads_an_ome_level_array_by_dim_names(foreign: dict[str, Any]) -> None:
    """One level's array opened directly: its ``dimension_names`` (c, y, x) decide the dims.

    Before #18 a 3-D array whose names were not bigimg's was renamed by
    position, so (c, y, x) silently became y=c, x=y, band=x.
    """
    level0 = _ome_datasets(foreign["path"])[0]["path"]
    img = bi.open_image(foreign["path"] / level0)
    assert img.dims == ("y", "x", "band")
    np.testing.assert_array_equal(img.values, foreign["view"])


def test_store_info_describes_foreign_ome_zarr(foreign: dict[str, Any]) -> None:
    info = bi.store_info(foreign["path"])
    sizes = dict(zip(info["dims"], info["shape"], strict=True))
    assert (sizes["y"], sizes["x"]) == foreign["view"].shape[:2]
    assert info["levels"] == list(range(1, foreign["levels"]))


def test_quicklook_of_foreign_ome_zarr(foreign: dict[str, Any], tmp_path: Path) -> None:
    png = tmp_path / "q.png"
    preview = bi.quicklook(bi.open_image(foreign["path"]), png, max_size=32)
    assert png.is_file()
    assert preview.dims == ("y", "x", "band")
    assert preview.sizes["band"] == foreign["view"].shape[-1]


# ---------------------------------------------------------------- metadata, names, OME 0.4
def test_root_has_zarr_conventions_multiscales(pyramids: dict[str, Any]) -> None:
    """What GDAL >= 3.13 reads for overviews: the declared convention and one layout entry
    per level, each derived from the previous one (scale 2 in y and x, on-disk axis order)."""
    attrs = zarr.open_group(str(pyramids["rgb"]["path"]), mode="r").attrs
    assert [c["uuid"] for c in attrs["zarr_conventions"]] == [
        "d35379db-88df-4056-af3a-620245f8e347"
    ]
    layout = attrs["multiscales"]["layout"]
    assert [entry["asset"] for entry in layout] == ["image", "levels/1", "levels/2"]
    assert [entry.get("derived_from") for entry in layout] == [None, "image", "levels/1"]
    assert layout[0]["transform"]["scale"] == [1, 1, 1]
    assert all(entry["transform"]["scale"] == [1, 2, 2] for entry in layout[1:])
    axes = zarr.open_group(str(pyramids["rgb"]["path"]), mode="r").attrs["ome"]["multiscales"]
    assert [a["name"] for a in axes[0]["axes"]] == ["band", "y", "x"]


def test_stored_array_is_band_y_x_with_its_dimension_names(pyramids: dict[str, Any]) -> None:
    for k, ds in enumerate(_ome_datasets(pyramids["rgb"]["path"])):
        arr = zarr.open_array(str(pyramids["rgb"]["path"] / ds["path"]), mode="r")
        assert arr.metadata.dimension_names == ("band", "y", "x")
        assert arr.shape == (3, *_level_sizes(k).values())


@pytest.mark.parametrize(
    ("names", "dims"),
    [(("c", "y", "x"), ("y", "x", "band")), (("y", "x", "channel"), ("y", "x", "band"))],
)
def test_open_image_maps_dimension_names_by_name(
    tmp_path: Path, names: tuple[str, ...], dims: tuple[str, ...]
) -> None:
    data = np.arange(2 * 5 * 4, dtype=np.uint8).reshape(2, 5, 4)
    data = data if names[0] == "c" else np.moveaxis(data, 0, -1)
    zarr.create_array(str(tmp_path / "a.zarr"), data=data, dimension_names=names)
    img = bi.open_image(tmp_path / "a.zarr")
    assert img.dims == dims and img.sizes["band"] == 2
    np.testing.assert_array_equal(img.transpose(*_as_bigimg(names)).values, data)


def _as_bigimg(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple("band" if n in ("c", "channel") else n for n in names)


def test_open_image_drops_size_one_dims_and_refuses_other_ones(tmp_path: Path) -> None:
    data = np.zeros((1, 2, 5, 4), dtype=np.uint8)
    zarr.create_array(str(tmp_path / "t1.zarr"), data=data, dimension_names=("t", "c", "y", "x"))
    assert bi.open_image(tmp_path / "t1.zarr").dims == ("y", "x", "band")
    zarr.create_array(
        str(tmp_path / "z3.zarr"), data=np.zeros((3, 5, 4)), dimension_names=("z", "y", "x")
    )
    with pytest.raises(ValueError, match=r"select one plane first"):
        bi.open_image(tmp_path / "z3.zarr")


def test_open_image_reads_ome_0_4_multiscales(tmp_path: Path) -> None:
    """OME-NGFF 0.4 (Zarr v2): ``multiscales`` at the top level of the group's attributes."""
    data = (np.random.default_rng(4).random((2, 1, 6, 8)) * 100).astype(np.uint16)
    group = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    group.create_array("0", data=data, chunks=(1, 1, 3, 4))
    group.create_array("1", data=data[..., ::2, ::2], chunks=(1, 1, 3, 4))
    axes = [
        {"name": "c", "type": "channel"},
        {"name": "z", "type": "space"},
        {"name": "y", "type": "space"},
        {"name": "x", "type": "space"},
    ]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [
                {"path": p, "coordinateTransformations": [{"type": "scale", "scale": s}]}
                for p, s in (("0", [1, 1, 1, 1]), ("1", [1, 1, 2, 2]))
            ],
        }
    ]
    img = bi.open_image(tmp_path / "v04.zarr")
    assert img.dims == ("y", "x", "band")
    np.testing.assert_array_equal(img.values, np.moveaxis(data[:, 0], 0, -1))
    info = bi.store_info(tmp_path / "v04.zarr")
    assert info["dims"] == ["c", "z", "y", "x"] and info["levels"] == [1]
    assert info["complete"] is None and info["damaged"] is None
