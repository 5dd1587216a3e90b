"""The pipeline plans its reads (issue #17): a costly input of a computing step is written once.

A NaN-aware filter followed by equalize_hist used to read and filter the input once per
statistics pass and once more for the write. The planned run writes the filtered image
once to a scratch store beside the output, computing the first pass (the range) in the
same graph, and reads the scratch store for the counts and the output. The results
do not change: the same bits as the unplanned graph, and skimage's equalization.
"""

from __future__ import annotations

import shutil

import dask
import numpy as np
import pytest
import xarray as xr
import zarr
from dask.callbacks import Callback
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bigimg as bi
from bigimg.files import read_paths
from bigimg.pipeline import parse_config

STEPS = [
    {"op": "gaussian_filter", "sigma": {"y": 1.5, "x": 1.5}, "nan_policy": "omit"},
    {"op": "equalize_hist", "bins": 64},
]


class ReadCounter(Callback):
    """Counts the tasks that read blocks of the store ``store`` (by the layers' recorded paths)."""

    def __init__(self, store: str) -> None:
        super().__init__()
        self.store = store
        self.reads = 0

    def _pretask(self, key, dsk, state):  # type: ignore[no-untyped-def]
        self.reads += any(p.endswith(self.store) for p in read_paths({key: None}))


def _mosaic(path, side: int = 96, chunks: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(side, side, 2)).astype("float32")
    data[:10] = np.nan  # a NoData border
    data[40:44, 50:60, 1] = np.nan
    bi.to_zarr(bi.from_array(data, chunks={"y": chunks, "x": chunks}), path, progress=False)
    return data


def _pipeline(tmp_path, steps=STEPS, out="out.zarr", chunks=32):
    return parse_config(
        {
            "input": {"path": "in.zarr", "chunks": {"y": chunks, "x": chunks}},
            "steps": steps,
            "output": {"path": out},
        },
        base=tmp_path,
    )


def test_the_filtered_input_is_read_once_not_three_times(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    pipe = _pipeline(tmp_path)
    assert pipe.scratch_steps() == [1]
    n_chunks = 3 * 3
    with dask.config.set(scheduler="sync"), ReadCounter("in.zarr") as planned:
        pipe.run(progress=False)
    assert planned.reads == n_chunks  # the scratch write, with the range in the same graph
    with dask.config.set(scheduler="sync"), ReadCounter("in.zarr") as unplanned:
        bi.to_zarr(pipe.build(), tmp_path / "unplanned.zarr", progress=False)
    assert unplanned.reads == 3 * n_chunks  # range, counts, write: each filters again
    out = bi.open_zarr(tmp_path / "out.zarr")
    ref = bi.open_zarr(tmp_path / "unplanned.zarr")
    np.testing.assert_array_equal(out.values, ref.values)  # bit for bit
    assert not (tmp_path / "out.zarr.scratch").exists()  # deleted once the output is complete
    attrs = xr.open_zarr(tmp_path / "out.zarr").attrs
    assert attrs["bigimg_complete"] and "gaussian_filter" in attrs["bigimg_config"]


@settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chunks=st.sampled_from([16, 24, 48, 96]), seed=st.integers(0, 3))
def test_planned_equals_skimage_for_any_chunking(tmp_path_factory, chunks, seed):
    from scipy import ndimage
    from skimage import exposure

    tmp_path = tmp_path_factory.mktemp("plan")
    data = _mosaic(tmp_path / "in.zarr", chunks=chunks, seed=seed)
    _pipeline(tmp_path, chunks=chunks).run(progress=False)
    out = bi.open_zarr(tmp_path / "out.zarr").values
    for b in range(data.shape[-1]):
        band = data[..., b].astype("float64")
        valid = ~np.isnan(band)
        num = ndimage.gaussian_filter(np.where(valid, band, 0), 1.5, mode="reflect")
        den = ndimage.gaussian_filter(valid.astype("float64"), 1.5, mode="reflect")
        with np.errstate(invalid="ignore", divide="ignore"):
            filtered = np.where(valid, num / den, np.nan)
        ref = exposure.equalize_hist(filtered, nbins=64, mask=valid)
        np.testing.assert_allclose(out[..., b][valid], ref[valid], atol=1e-5)
        assert np.isnan(out[..., b][~valid]).all()


def test_chunkings_strategy_agrees(tmp_path):
    # the same result whatever dask chunks the input is read with (not only the stored ones)
    _mosaic(tmp_path / "in.zarr", chunks=32)
    results = []
    for i, chunks in enumerate([20, 32, 50]):
        _pipeline(tmp_path, out=f"o{i}.zarr", chunks=chunks).run(progress=False)
        results.append(bi.open_zarr(tmp_path / f"o{i}.zarr").values)
    np.testing.assert_allclose(results[1], results[0], atol=1e-6)
    np.testing.assert_allclose(results[2], results[0], atol=1e-6)


def test_pointwise_steps_are_not_written_to_scratch(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    assert _pipeline(tmp_path, steps=[{"op": "equalize_hist"}]).scratch_steps() == []
    cast_then_eq = [{"op": "astype", "dtype": "float64"}, {"op": "equalize_hist"}]
    assert _pipeline(tmp_path, steps=cast_then_eq).scratch_steps() == []
    two = [*STEPS, STEPS[0], {"op": "gaussian_stretch"}]
    assert _pipeline(tmp_path, steps=two).scratch_steps() == [1, 3]
    noise = parse_config(
        {
            "input": {"noise": {"shape": [64, 64], "length_scale": 3, "seed": 1}},
            "steps": [{"op": "gaussian_stretch"}],
            "output": {"path": "n.zarr"},
        },
        base=tmp_path,
    )
    assert noise.scratch_steps() == [0]  # a generated input costs more than a read


def test_two_scratch_steps_and_a_stretch_run_and_clean_up(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    steps = [*STEPS, STEPS[0], {"op": "gaussian_stretch"}]
    pipe = _pipeline(tmp_path, steps=steps)
    pipe.run(progress=False)
    bi.to_zarr(pipe.build(), tmp_path / "ref.zarr", progress=False)
    np.testing.assert_allclose(
        bi.open_zarr(tmp_path / "out.zarr").values, bi.open_zarr(tmp_path / "ref.zarr").values,
        rtol=1e-6, atol=1e-6,
    )  # fmt: skip
    assert not (tmp_path / "out.zarr.scratch").exists()


def test_a_leftover_scratch_store_is_refused_resumed_or_replaced(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    pipe = _pipeline(tmp_path)
    # an interrupted run: the scratch store holds part of the filtered image
    scratch = tmp_path / "out.zarr.scratch" / "steps-1.zarr"
    scratch.parent.mkdir()
    bi.to_zarr(pipe.build().isel(), scratch, progress=False)  # any store there
    with pytest.raises(FileExistsError, match="steps-1.zarr.*already exists.*resume"):
        pipe.run(progress=False)
    with pytest.raises(ValueError, match="resume.*fingerprint|written from"):
        pipe.run(resume=True, progress=False)  # not written by this pipeline's steps[:1]
    pipe.run(overwrite=True, progress=False)
    assert not scratch.parent.exists()


def test_resume_skips_the_stored_scratch_chunks(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    pipe = _pipeline(tmp_path)
    pipe.run(progress=False)
    expected = bi.open_zarr(tmp_path / "out.zarr").values
    # replay an interruption during the scratch write: steps[:1] stored, 3 chunks lost
    filtered = _pipeline(tmp_path, steps=STEPS[:1], out="out.zarr.scratch/steps-1.zarr")
    (tmp_path / "out.zarr.scratch").mkdir()
    shutil.rmtree(tmp_path / "out.zarr")
    filtered.run(progress=False)
    store = tmp_path / "out.zarr.scratch" / "steps-1.zarr"
    lost = sorted((store / "image" / "c").rglob("*"))
    chunk_files = [p for p in lost if p.is_file()][:3]
    for p in chunk_files:
        p.unlink()
    attrs = xr.open_zarr(store).attrs  # mark it incomplete, as a killed run leaves it
    zarr.open_group(store, mode="r+").attrs["bigimg_complete"] = False
    zarr.consolidate_metadata(str(store))
    assert attrs["bigimg_complete"]
    with ReadCounter("in.zarr") as counter, dask.config.set(scheduler="sync"):
        pipe.run(resume=True, progress=False)
    # only the 3 lost chunks were filtered again (each reads its block and up to 8 neighbours)
    assert 0 < counter.reads <= 3 * 9
    np.testing.assert_array_equal(bi.open_zarr(tmp_path / "out.zarr").values, expected)
    assert not (tmp_path / "out.zarr.scratch").exists()


def test_planned_run_on_the_distributed_cluster(tmp_path, client):
    _mosaic(tmp_path / "in.zarr")
    pipe = _pipeline(tmp_path)
    pipe.run(progress=False)
    ref = pipe.build()
    np.testing.assert_array_equal(bi.open_zarr(tmp_path / "out.zarr").values, ref.values)


# ---------------------------------------------------------------- the Python API
def test_plan_in_python_runs_the_same_plan(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    _pipeline(tmp_path).run(progress=False)
    img = bi.open_image(tmp_path / "in.zarr", chunks={"y": 32, "x": 32})
    p = bi.plan(img, STEPS)
    assert p.scratch_steps() == [1]
    with dask.config.set(scheduler="sync"), ReadCounter("in.zarr") as counter:
        result = p.to_zarr(tmp_path / "py.zarr", progress=False)
    assert counter.reads == 9 and result.chunks_written == 9
    np.testing.assert_array_equal(
        bi.open_zarr(tmp_path / "py.zarr").values, bi.open_zarr(tmp_path / "out.zarr").values
    )
    by_path = bi.plan(tmp_path / "in.zarr", STEPS, chunks={"y": 32, "x": 32})
    by_path.to_zarr(tmp_path / "path.zarr", progress=False)
    np.testing.assert_array_equal(
        bi.open_zarr(tmp_path / "path.zarr").values, bi.open_zarr(tmp_path / "out.zarr").values
    )
    with pytest.raises(FileExistsError, match="py.zarr"):
        p.to_zarr(tmp_path / "py.zarr", progress=False)
    p.to_zarr(tmp_path / "py.zarr", overwrite=True, progress=False)


def test_plan_checks_steps_and_output_before_any_work(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    img = bi.open_image(tmp_path / "in.zarr")
    with pytest.raises(bi.ConfigError, match=r"steps\[0\].op 'blur' is unknown"):
        bi.plan(img, [{"op": "blur"}])
    with pytest.raises(bi.ConfigError, match=r"unknown key 'steps\[0\].sigmaa'"):
        bi.plan(img, [{"op": "gaussian_filter", "sigmaa": 2}])
    with pytest.raises(TypeError, match="steps must be a sequence"):
        bi.plan(img, {"op": "equalize_hist"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="apply to a path source"):
        bi.plan(img, STEPS, nodata=0)
    with pytest.raises(ValueError, match="to_zarr"):
        bi.plan(img, STEPS).run()
    with pytest.raises(ValueError, match="overlap|inside|same"):
        bi.plan(img, STEPS).to_zarr(tmp_path / "in.zarr" / "out.zarr", progress=False)
    assert not (tmp_path / "in.zarr" / "out.zarr").exists()


def test_plan_to_cog(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    _mosaic(tmp_path / "in.zarr")
    img = bi.open_image(tmp_path / "in.zarr", chunks={"y": 32, "x": 32})
    bi.plan(img, STEPS).to_cog(tmp_path / "out.tif", progress=False)
    _pipeline(tmp_path).run(progress=False)
    with rasterio.open(tmp_path / "out.tif") as src:
        cog = np.moveaxis(src.read(), 0, -1)
    np.testing.assert_array_equal(cog, bi.open_zarr(tmp_path / "out.zarr").values)
    assert not (tmp_path / "out.tif.scratch").exists()


def test_the_plan_is_told_in_one_line(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    note = _pipeline(tmp_path).plan_note()
    assert note == (
        "note: steps[1] (equalize_hist) reads its input from a scratch copy written once; "
        f"scratch: {tmp_path / 'out.zarr.scratch'} (deleted when done)"
    )
    eq_only = _pipeline(tmp_path, steps=[{"op": "equalize_hist"}]).plan_note()
    assert eq_only == "note: steps[0] (equalize_hist) reads its input once per statistics pass"
    assert _pipeline(tmp_path, steps=STEPS[:1]).plan_note() is None


def test_files_of_the_user_beside_the_scratch_stores_are_kept(tmp_path):
    _mosaic(tmp_path / "in.zarr")
    folder = tmp_path / "out.zarr.scratch"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    _pipeline(tmp_path).run(progress=False)
    assert (folder / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


# ---------------------------------------------------------------- issue 22, item 6
@pytest.mark.parametrize(
    ("dtype", "chunks"),
    [
        ("float64", 16),
        ("float64", {"y": 7, "x": 13}),
        ("float64", {"y": (10, 30, 24), "x": (5, 43)}),
        ("float32", {"y": (10, 30, 24), "x": (5, 43)}),
    ],
    ids=str,
)
@pytest.mark.parametrize(
    "steps",
    [
        [{"op": "gaussian_filter", "sigma": 1.5}, {"op": "gaussian_stretch"}],
        [{"op": "coarsen_mean", "factor": 2}, {"op": "gaussian_stretch", "n": 2}],
        [
            {"op": "gaussian_filter", "sigma": 1},
            {"op": "gaussian_stretch"},
            {"op": "gaussian_filter", "sigma": 2},
            {"op": "equalize_hist"},
        ],
    ],
    ids=lambda s: "-".join(step["op"] for step in s),
)
def test_planned_is_bit_identical_to_the_functions_with_nan(tmp_path, dtype, chunks, steps):
    """The scratch store is read band-first (transposed blocks) and in its own chunks.

    Both changed numpy's summation order in the statistics (5e-15 apart on float64).
    """
    data = np.random.default_rng(1).normal(size=(64, 48, 2)).astype(dtype)
    data[3:9, 5:11] = np.nan
    img = bi.from_array(data, chunks=chunks)
    functions = bi.gaussian_stretch(bi.gaussian_filter(img, 1.5)) if len(steps) == 2 else None
    p = bi.plan(img, steps)
    assert p.scratch_steps()  # the path under test: the stretch reads a scratch store
    with dask.config.set(scheduler="threads"):
        p.to_zarr(tmp_path / "p.zarr", progress=False)
        expected = p.build().values
    out = bi.open_zarr(tmp_path / "p.zarr").values
    np.testing.assert_array_equal(out, expected)
    if functions is not None and steps[0]["op"] == "gaussian_filter":
        np.testing.assert_array_equal(out, functions.values)


def test_planned_is_bit_identical_on_an_x_first_input(tmp_path):
    """Hostile pass: the scratch store reads back as (y, x, band); an (x, y, band) input's
    statistics then summed its blocks in another order (2e-16 apart on float64)."""
    data = np.random.default_rng(9).normal(size=(40, 30, 3))
    data[5:9, 3:12] = np.nan
    img = bi.from_array(data, chunks=16).transpose("x", "y", "band")
    p = bi.plan(img, [{"op": "gaussian_filter", "sigma": 1.0}, {"op": "gaussian_stretch"}])
    with dask.config.set(scheduler="threads"):
        p.to_zarr(tmp_path / "p.zarr", progress=False)
        expected = bi.gaussian_stretch(bi.gaussian_filter(img, 1.0))
        out = bi.open_zarr(tmp_path / "p.zarr").transpose(*expected.dims)
        np.testing.assert_array_equal(out.values, expected.values)
