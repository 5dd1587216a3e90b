"""bigimg.quicklook: previews of any size, percentile stretch, transparent NoData, PNG, CLI."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import PIL.Image
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data

import bigimg as bi
from bigimg.cli import main
from bigimg.io.pyramid import write_pyramid
from bigimg.quicklook import _percentiles_from_counts, quicklook, write_png
from tests.helpers import raise_if_dask_computes


def block_nanmean(a: np.ndarray, f: int) -> np.ndarray:
    """Reference preview geometry: NaN-pad (y, x, band) to multiples of f, nanmean per block."""
    ny, nx = a.shape[:2]
    a = np.pad(a.astype(np.float64), [(0, -ny % f), (0, -nx % f), (0, 0)], constant_values=np.nan)
    blocks = a.reshape(a.shape[0] // f, f, a.shape[1] // f, f, a.shape[2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def reference_preview(a: np.ndarray, f: int, q: tuple[float, float]) -> np.ndarray:
    """numpy: block means stretched between np.percentile of each full-resolution band."""
    small = block_nanmean(a, f)
    out = np.empty_like(small)
    for b in range(a.shape[2]):
        band = a[:, :, b]
        p0, p1 = np.percentile(band[np.isfinite(band)], q)
        out[:, :, b] = np.clip((small[:, :, b] - p0) / (p1 - p0), 0, 1)
    return out


@pytest.fixture(scope="module")
def astro_nan() -> np.ndarray:
    """A real photo as float32 with a NoData triangle (the footprint of a rotated scene)."""
    a = data.astronaut().astype(np.float32)
    yy, xx = np.mgrid[: a.shape[0], : a.shape[1]]
    a[yy + xx < 200] = np.nan
    return a


# ---------------------------------------------------------------- kernels
def test_percentiles_from_counts_within_a_bin_of_numpy() -> None:
    v = np.random.default_rng(0).gamma(2.0, 3.0, 100_000)
    counts, edges = np.histogram(v, bins=4096)
    q = [0, 2, 25, 50, 98, 100]
    got = _percentiles_from_counts(counts, edges[:-1], edges[1:], q)
    np.testing.assert_allclose(got, np.percentile(v, q), atol=edges[1] - edges[0])


def test_percentiles_from_counts_exact_for_integer_bins() -> None:
    img = data.camera()
    counts = np.bincount(img.ravel(), minlength=256)
    centres = np.arange(256.0)
    q = [0.5, 2, 50, 98, 100]
    got = _percentiles_from_counts(counts, centres - 0.5, centres + 0.5, q, interpolate=False)
    np.testing.assert_array_equal(got, np.percentile(img, q, method="inverted_cdf"))


def test_percentiles_from_empty_histogram_are_nan() -> None:
    got = _percentiles_from_counts(np.zeros(4, int), np.arange(4.0), np.arange(1.0, 5.0), [2, 98])
    assert np.isnan(got).all()


# ---------------------------------------------------------------- the preview
def test_preview_matches_numpy_reference(astro_nan: np.ndarray) -> None:
    img = bi.from_array(astro_nan, chunks={"y": 100, "x": 128})
    out = quicklook(img, max_size=100, stretch=(2, 98))
    f = math.ceil(512 / 100)
    assert out.dims == ("y", "x", "band") and out.dtype == np.float32
    assert out.shape == (math.ceil(512 / f), math.ceil(512 / f), 3)
    assert out.attrs["bigimg_quicklook_factor"] == f
    # float data: percentiles from a 4096-bin histogram, within one bin of np.percentile
    np.testing.assert_allclose(out.values, reference_preview(astro_nan, f, (2, 98)), atol=2e-3)
    valid = astro_nan[np.isfinite(astro_nan[:, :, 0]), 0]
    np.testing.assert_allclose(
        out.attrs["bigimg_quicklook_limits"][0], np.percentile(valid, [2, 98]), atol=255 / 4096
    )


def test_integer_image_uses_exact_percentiles() -> None:
    cam = data.camera()  # uint8, 512 x 512
    out = quicklook(bi.from_array(cam, chunks={"y": 200, "x": 200}), max_size=256, stretch=(1, 99))
    limits = np.percentile(cam, [1, 99], method="inverted_cdf")
    assert out.attrs["bigimg_quicklook_limits"] == [list(limits)]
    small = block_nanmean(cam[:, :, None], 2)
    np.testing.assert_allclose(
        out.values, np.clip((small - limits[0]) / np.ptp(limits), 0, 1), atol=1e-6
    )


def test_bands_choice_and_2d_input(astro_nan: np.ndarray) -> None:
    img = bi.from_array(astro_nan, chunks={"y": 256, "x": 256})
    green = quicklook(img, max_size=128, bands=[1])
    assert green.shape == (128, 128, 1)
    np.testing.assert_allclose(green.values, quicklook(img.isel(band=[1]), max_size=128).values)
    bgr = quicklook(img, max_size=128, bands=[2, 1, 0])
    np.testing.assert_array_equal(bgr.values, quicklook(img, max_size=128).values[:, :, ::-1])
    flat = quicklook(img.isel(band=0, drop=True), max_size=128)  # (y, x) only
    assert flat.shape == (128, 128, 1)


# slow (two quicklooks of a 200x170 image a draw, ~1 s): 2/3 of the profile's examples (10 in ci)
@settings(max_examples=settings().max_examples * 2 // 3, deadline=None)
@given(cy=st.integers(7, 120), cx=st.integers(7, 120), max_size=st.integers(30, 200))
def test_chunk_invariance(astro_nan: np.ndarray, cy: int, cx: int, max_size: int) -> None:
    small = astro_nan[:200, :170]
    ref = quicklook(bi.from_array(small, chunks={"y": -1, "x": -1}), max_size=max_size)
    out = quicklook(bi.from_array(small, chunks={"y": cy, "x": cx}), max_size=max_size)
    assert out.attrs == ref.attrs  # same factor, same histogram percentiles
    np.testing.assert_allclose(out.values, ref.values, atol=1e-6)


def test_two_passes_only() -> None:
    img = bi.from_array(da.random.random((300, 300), chunks=100))
    with raise_if_dask_computes(max_computes=2):  # preview + range, then histograms
        quicklook(img, max_size=50)


# ---------------------------------------------------------------- PNG
def test_png_size_and_transparent_nodata(tmp_path: Path, astro_nan: np.ndarray) -> None:
    img = bi.from_array(astro_nan, chunks={"y": 128, "x": 128})
    out = quicklook(img, tmp_path / "q.png", max_size=64)
    with PIL.Image.open(tmp_path / "q.png") as im:
        assert im.mode == "RGBA" and im.size == (64, 64)  # (width, height)
        pix = np.asarray(im)
    nodata = block_nanmean(astro_nan, 8)[:, :, 0] != block_nanmean(astro_nan, 8)[:, :, 0]
    assert nodata.any() and (~nodata).any()
    np.testing.assert_array_equal(pix[:, :, 3], np.where(nodata, 0, 255))
    np.testing.assert_array_equal(pix[~nodata, :3], np.round(out.values[~nodata] * 255))


def test_png_grey_has_alpha(tmp_path: Path) -> None:
    a = np.arange(30.0).reshape(5, 6)
    a[0, 0] = np.nan
    quicklook(bi.from_array(a), tmp_path / "g.png", stretch=(0, 100))
    with PIL.Image.open(tmp_path / "g.png") as im:
        assert im.mode == "LA" and im.size == (6, 5)
        pix = np.asarray(im)
    assert pix[0, 0, 1] == 0 and (pix[:, :, 1].ravel()[1:] == 255).all()
    assert pix[0, 1, 0] == 0 and pix[4, 5, 0] == 255  # min -> black, max -> white


def test_write_png_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"rgb must have shape \(y, x, 1 or 3\)"):
        write_png(np.zeros((4, 4, 2)), tmp_path / "x.png")


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"max_size": 0}, ValueError, "max_size must be a positive int, got 0"),
        ({"max_size": 10.0}, TypeError, "max_size must be a positive int, got 10.0"),
        (
            {"bands": [0, 1]},
            ValueError,
            r"bands must be 1 or 3 positions in \[0, 3\), got \[0, 1\]",
        ),
        ({"bands": [0, 1, 3]}, ValueError, r"bands must be 1 or 3 positions in \[0, 3\)"),
        ({"bands": ["r"]}, TypeError, "bands must be ints"),
        ({"bands": 0}, TypeError, "bands must be a sequence of 1 or 3 ints, got 0"),
        (
            {"stretch": (98, 2)},
            ValueError,
            r"stretch must satisfy 0 <= lo < hi <= 100, got \(98, 2\)",
        ),
        ({"stretch": (2, 101)}, ValueError, "stretch must satisfy"),
        ({"stretch": 2}, TypeError, "stretch must be two percentiles"),
        (
            {"path": "/no/such/folder/q.png"},
            ValueError,
            "path: folder '/no/such/folder' does not exist",
        ),
    ],
)
def test_validation_before_any_compute(kwargs: dict, err: type, match: str) -> None:
    img = bi.from_array(da.zeros((20, 20, 3), chunks=10))
    with raise_if_dask_computes(), pytest.raises(err, match=match):
        quicklook(img, **kwargs)


def test_stack_needs_one_image() -> None:
    stack = bi.from_array(np.zeros((2, 8, 8, 1)))
    with pytest.raises(ValueError, match=r"obj has dim\(s\) \{'image': 2\}.*obj.isel\(image=0\)"):
        quicklook(stack)
    assert quicklook(stack.isel(image=[1])).shape == (8, 8, 1)
    with pytest.raises(TypeError, match="obj must be an xarray.DataArray"):
        quicklook(np.zeros((4, 4)))  # type: ignore[arg-type]


def test_all_nodata_is_fully_transparent(tmp_path: Path) -> None:
    out = quicklook(bi.from_array(np.full((10, 10), np.nan, np.float32)), tmp_path / "n.png")
    assert out.isnull().all()
    with PIL.Image.open(tmp_path / "n.png") as im:
        assert (np.asarray(im)[:, :, 1] == 0).all()


def test_infinite_pixels_are_white_and_nan_chunks_do_not_warn() -> None:
    a = np.full((64, 64, 1), np.nan, np.float32)  # whole chunks of NoData
    a[32:, 32:] = np.arange(32 * 32, dtype=np.float32).reshape(32, 32, 1)
    a[60:, 60:] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = quicklook(bi.from_array(a, chunks=16), stretch=(0, 100))
    # the range ignores the infinities; they are clipped to white
    assert out.attrs["bigimg_quicklook_limits"][0][1] < 32 * 32
    assert (out.values[60:, 60:] == 1).all() and out.isnull()[:32, :32].all()


def test_accessor(astro_nan: np.ndarray) -> None:
    img = bi.from_array(astro_nan)
    np.testing.assert_array_equal(
        img.bigimg.quicklook(max_size=64).values, quicklook(img, max_size=64).values
    )


# ---------------------------------------------------------------- out of core
def _ramp(block_info: dict | None = None) -> np.ndarray:
    """A lazily generated float64 image: y + x, NoData in the top-left 1000 x 1000 corner."""
    (y0, y1), (x0, x1), _ = block_info[None]["array-location"]  # type: ignore[index]
    y = np.arange(y0, y1, dtype=np.float64)[:, None]
    x = np.arange(x0, x1, dtype=np.float64)[None, :]
    v = y + x
    v[(y < 1000) & (x < 1000)] = np.nan
    return v[:, :, None]


@pytest.mark.cluster
def test_quicklook_of_an_image_larger_than_worker_memory_stays_bounded(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster
    from distributed.diagnostics import MemorySampler

    # a worker's baseline (interpreter, libraries, numba and the compiled kernels) is
    # about 280 MB: the limit leaves the quicklook 170 MB, a third of the image
    limit = 450e6
    shape = (8192, 8192, 1)  # float64: 537 MB, generated chunk by chunk
    arr = da.map_blocks(
        _ramp,
        chunks=((1024,) * 8, (1024,) * 8, (1,)),
        dtype=np.float64,
        meta=np.empty((0, 0, 0), np.float64),
    )
    img = bi.from_array(arr, chunks={"y": 1024, "x": 1024})
    assert img.shape == shape and img.nbytes > limit
    with (
        LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            memory_limit=int(limit),
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
        client.as_current(),
        dask.config.set(scheduler=client.get),
    ):
        pid = client.run(lambda: __import__("os").getpid())
        sampler = MemorySampler()
        with sampler.sample("quicklook", client=client, interval=0.1):
            out = quicklook(img, tmp_path / "big.png", max_size=512)
        peak = sampler.to_pandas()["quicklook"].max()
        assert client.run(lambda: __import__("os").getpid()) == pid  # never restarted
    # the worker's RSS never reached its limit
    assert peak < limit, f"worker peaked at {peak / 1e6:.0f} MB"
    assert out.shape == (512, 512, 1) and out.attrs["bigimg_quicklook_factor"] == 16
    # the NoData corner (1000 px = 62.5 blocks of 16) is transparent, the rest is not
    assert out.isnull()[:62, :62].all() and out.notnull()[63:, :].all()
    # a ramp y + x: how many valid pixels have each value s is a convolution of indicators
    counts = np.convolve(np.ones(8192), np.ones(8192))
    counts[:1999] -= np.convolve(np.ones(1000), np.ones(1000))  # the NoData corner
    cdf = np.cumsum(counts)
    exact = [np.searchsorted(cdf, q / 100 * cdf[-1]) for q in (2, 98)]
    bin_width = (8191 + 8191 - 1000) / 4096
    np.testing.assert_allclose(out.attrs["bigimg_quicklook_limits"][0], exact, atol=bin_width)


# ---------------------------------------------------------------- command line
@pytest.fixture
def store(tmp_path: Path, astro_nan: np.ndarray) -> Path:
    path = tmp_path / "astro.zarr"
    bi.to_zarr(bi.from_array(astro_nan, chunks={"y": 128, "x": 128}), path, progress=False)
    return path


def run_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0)


def test_cli_quicklook(local_client, store: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    address = local_client.scheduler.address
    out = tmp_path / "q.png"
    code = run_cli(
        "quicklook", str(store), str(out), "--max-size", "100", "--bands", "2,1,0",
        "--stretch", "1,99", "--scheduler", address,
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert f"wrote {out} (86 x 86 px)" in capsys.readouterr().out
    expected = quicklook(bi.open_zarr(store), max_size=100, bands=[2, 1, 0], stretch=(1, 99))
    with PIL.Image.open(out) as im:
        assert im.mode == "RGBA" and im.size == (86, 86)
        np.testing.assert_array_equal(np.asarray(im)[:, :, 3] == 0, expected.isnull().any("band"))


def test_cli_quicklook_reads_the_pyramid(local_client, store: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_pyramid(store, max_size=64, progress=False)  # levels 512, 256, 128, 64
    out = tmp_path / "p.png"
    address = local_client.scheduler.address
    assert (
        run_cli("quicklook", str(store), str(out), "--max-size", "200", "--scheduler", address) == 0
    )
    expected = quicklook(bi.open_level(store, 1), max_size=200)  # 256 px: the coarsest >= 200
    grey = np.round(np.nan_to_num(expected.values[:, :, 0]) * 255)
    with PIL.Image.open(out) as im:
        assert im.size == (128, 128)
        np.testing.assert_array_equal(np.asarray(im)[:, :, 0], grey)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--bands", "0,x"], "--bands"),
        (["--stretch", "5"], "--stretch"),
        (["--bands", "0,1"], "bands must be 1 or 3 positions"),
        (["--max-size", "0"], "--max-size"),
    ],
)
def test_cli_bad_input_is_one_line(
    local_client, store: Path, tmp_path: Path, capsys, args: list[str], match: str
) -> None:  # type: ignore[no-untyped-def]
    address = local_client.scheduler.address
    code = run_cli("quicklook", str(store), str(tmp_path / "q.png"), "--scheduler", address, *args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("bigimg: error:") and match in err[0]


def test_cli_missing_store(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert run_cli("quicklook", str(tmp_path / "nope.zarr"), str(tmp_path / "q.png")) == 2
    assert "no such file or directory" in capsys.readouterr().err


# ---------------------------------------------------------------- issue 14: never replace a file silently
def test_quicklook_refuses_an_existing_file_before_computing(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("my notes")
    img = bi.from_array(da.zeros((20, 20), chunks=10))
    with raise_if_dask_computes(), pytest.raises(FileExistsError, match="overwrite=True"):
        quicklook(img, target)
    with raise_if_dask_computes(), pytest.raises(ValueError, match="must end in '.png'"):
        quicklook(img, target, overwrite=True)
    assert target.read_text() == "my notes"
    old = tmp_path / "old.png"
    old.write_text("an old preview")
    with raise_if_dask_computes(), pytest.raises(FileExistsError, match="old.png"):
        quicklook(img, old)
    quicklook(img, old, overwrite=True)
    with PIL.Image.open(old) as im:
        assert im.format == "PNG" and im.size == (20, 20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "old.png"]  # no temporary


def test_quicklook_refuses_a_folder(tmp_path: Path) -> None:
    img = bi.from_array(np.zeros((4, 4)))
    with raise_if_dask_computes(), pytest.raises(IsADirectoryError, match="is a folder"):
        quicklook(img, tmp_path, overwrite=True)


def test_write_png_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "a.png"
    target.write_bytes(b"not mine to replace")
    with pytest.raises(FileExistsError, match="a.png"):
        write_png(np.zeros((2, 2, 1)), target)
    assert target.read_bytes() == b"not mine to replace"
    write_png(np.zeros((2, 2, 1)), target, overwrite=True)
    with PIL.Image.open(target) as im:
        assert im.size == (2, 2)


def test_write_png_failure_leaves_no_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def broken_save(self, fp, *args, **kwargs):  # type: ignore[no-untyped-def]
        if hasattr(fp, "write"):  # a file object (the temporary file, opened)
            fp.write(b"half a png")
        else:
            Path(fp).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(PIL.Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        write_png(np.zeros((2, 2, 1)), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_quicklook_refuses_a_png_inside_its_input_store(store: Path) -> None:
    from bigimg.io.api import open_for_quicklook

    img = open_for_quicklook(store, 64)
    for target in (store / "x.png", store / "image" / "x.png"):
        with raise_if_dask_computes(), pytest.raises(ValueError, match="overlaps the input"):
            quicklook(img, target)
    with pytest.raises(ValueError, match="overlaps the input"):
        quicklook(bi.open_image(store), store / "x.png")  # bigimg_source names the store
    write_pyramid(store, max_size=64, progress=False)
    with pytest.raises(ValueError, match="overlaps the input"):
        quicklook(open_for_quicklook(store, 64), store / "levels" / "x.png")
    assert not list(store.rglob("*.png")) and not list(store.rglob("*.partial"))


def test_open_for_quicklook_checks_max_size(store: Path) -> None:
    from bigimg.io.api import open_for_quicklook

    with pytest.raises(TypeError, match="max_size must be a positive int"):
        open_for_quicklook(store, "64")  # type: ignore[arg-type]


def test_cli_quicklook_does_not_replace_a_users_file(
    local_client, store: Path, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "existing.txt"
    target.write_text("keep me")
    address = local_client.scheduler.address
    assert run_cli("quicklook", str(store), str(target), "--scheduler", address) == 2
    assert "already exists" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_run_demo_refuses_existing_outputs_before_any_work(tmp_path: Path) -> None:
    from bigimg.demo import DEMO_OUTPUTS, run_demo

    out = tmp_path / "demo"
    out.mkdir()
    (out / "quicklook.png").write_text("a user's file")
    with dask.config.set(scheduler="sync"), pytest.raises(FileExistsError, match="quicklook"):
        run_demo(out, size=64, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["quicklook.png"]  # nothing written
    assert (out / "quicklook.png").read_text() == "a user's file"
    with dask.config.set(scheduler="sync"):
        run_demo(out, size=64, progress=False, overwrite=True)
        with PIL.Image.open(out / "quicklook.png") as im:
            assert im.format == "PNG"
        with pytest.raises(FileExistsError, match="mosaic.zarr"):
            run_demo(out, size=64, progress=False)
        run_demo(out, size=64, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(DEMO_OUTPUTS)


# ---------------------------------------------------------------- issue 14: hostile pass
@pytest.mark.parametrize("dtype", ["uint16", "int8", "float32", "bool"])
def test_constant_image_has_exact_limits(dtype: str) -> None:
    """A constant integer image crashed (histogram range (7, 7)); floats were off by a bin."""
    value = 1 if dtype == "bool" else 7
    img = bi.from_array(np.full((6, 5, 2), value, dtype), chunks=3)
    out = quicklook(img, bands=[1])
    assert out.attrs["bigimg_quicklook_limits"] == [[value, value]]
    assert (out.values == 0).all()  # as numpy's percentiles: the value itself, mapped to black


def test_constant_bands_beside_a_varying_one() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    a[..., 0], a[..., 2] = 7, 200
    a[..., 1] = np.arange(64).reshape(8, 8)
    out = quicklook(bi.from_array(a))
    limits = np.array(out.attrs["bigimg_quicklook_limits"])
    np.testing.assert_array_equal(limits[[0, 2]], [[7, 7], [200, 200]])
    expected = np.percentile(a[..., 1], [2, 98], method="inverted_cdf")
    np.testing.assert_array_equal(limits[1], expected)


def test_infinite_only_band_is_black_and_white_not_transparent() -> None:
    a = np.array([[np.inf, -np.inf], [np.nan, np.inf]], np.float32)
    out = quicklook(bi.from_array(a))
    assert np.isnan(out.attrs["bigimg_quicklook_limits"][0]).all()
    np.testing.assert_array_equal(out.values[:, :, 0], [[1.0, 0.0], [np.nan, 1.0]])


@pytest.mark.parametrize("overwrite", ["no", 0, None])
def test_overwrite_must_be_a_bool(tmp_path: Path, overwrite: object) -> None:
    target = tmp_path / "q.png"
    target.write_text("keep")
    img = bi.from_array(np.zeros((4, 4)))
    with raise_if_dask_computes(), pytest.raises(TypeError, match="overwrite must be True or"):
        quicklook(img, target, overwrite=overwrite)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        write_png(np.zeros((2, 2, 1)), target, overwrite=overwrite)  # type: ignore[arg-type]
    assert target.read_text() == "keep"


@pytest.mark.parametrize("name", ["q.jpg", "q.tif", "q"])
def test_png_path_must_end_in_png(tmp_path: Path, name: str) -> None:
    with raise_if_dask_computes(), pytest.raises(ValueError, match="must end in '.png'"):
        quicklook(bi.from_array(np.zeros((4, 4))), tmp_path / name)
    with pytest.raises(ValueError, match="must end in '.png'"):
        write_png(np.zeros((2, 2, 1)), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    write_png(np.zeros((2, 2, 1)), tmp_path / "UPPER.PNG")


@pytest.mark.parametrize("shape", [(1, 5000), (5000, 1), (1, 1)])
def test_one_pixel_wide_images(shape: tuple[int, int]) -> None:
    a = np.arange(math.prod(shape), dtype=np.float64).reshape(shape)
    out = quicklook(bi.from_array(a, chunks=700), max_size=100)
    f = out.attrs["bigimg_quicklook_factor"]
    assert out.shape[:2] == tuple(-(-n // f) for n in shape)
    if a.size > 1:
        np.testing.assert_allclose(
            out.values[:, :, 0], reference_preview(a[:, :, None], f, (2, 98))[:, :, 0], atol=1e-3
        )


def test_non_real_images_are_refused_before_computing() -> None:
    img = xr.DataArray(np.ones((4, 4), complex), dims=("y", "x"))
    with raise_if_dask_computes(), pytest.raises(TypeError, match="real numeric dtype"):
        quicklook(img)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"size": 64.0}, TypeError, "size must be an int, got 64.0"),
        ({"size": 64, "chunks": "32"}, TypeError, "chunks must be an int"),
        ({"size": 64, "bands": 0}, ValueError, "bands and chunks must be >= 1"),
    ],
)
def test_synthetic_mosaic_validation(kwargs: dict, err: type, match: str) -> None:
    from bigimg.demo import synthetic_mosaic

    with pytest.raises(err, match=match):
        synthetic_mosaic(**kwargs)


def test_run_demo_refuses_a_file_and_a_bad_overwrite(tmp_path: Path) -> None:
    from bigimg.demo import run_demo

    target = tmp_path / "afile"
    target.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        run_demo(target, size=64, progress=False)
    with pytest.raises(TypeError, match="overwrite must be True or False"):
        run_demo(tmp_path / "d", size=64, overwrite="no", progress=False)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
