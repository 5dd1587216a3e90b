"""The command line through subprocess, and a run on a real scheduler + 2 workers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from bigimg.demo import DEMO_STEPS, blue_marble, synthetic_mosaic
from tests.helpers import assert_one_line_error, bigimg

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture
def workdir(tmp_path) -> Path:
    bi.to_zarr(synthetic_mosaic(256, chunks=128), tmp_path / "mosaic.zarr", progress=False)
    shutil.copy(CONFIGS / "astype.toml", tmp_path / "run.toml")
    return tmp_path


def test_the_readme_demo_config_is_the_demo_pipeline(tmp_path):
    """README: `make demo`, then `bigimg run configs/demo.toml` (the file was missing)."""
    (tmp_path / "configs").mkdir()
    shutil.copy(CONFIGS / "demo.toml", tmp_path / "configs")
    (tmp_path / "demo-output").mkdir()
    mosaic = tmp_path / "demo-output" / "mosaic.zarr"  # what `make demo` writes, smaller
    bi.to_zarr(blue_marble(256, chunks=128), mosaic, progress=False)
    pipeline = bi.load_config(tmp_path / "configs" / "demo.toml")
    demo = bi.plan(bi.open_image(mosaic, chunks=2048), DEMO_STEPS)
    assert pipeline.steps == demo.steps  # the same steps and parameters as `bigimg demo`
    pipeline.run(progress=False)
    ref = tmp_path / "ref.zarr"
    demo.to_zarr(ref, progress=False)
    np.testing.assert_array_equal(
        bi.open_zarr(tmp_path / "demo-output" / "run.zarr").values, bi.open_zarr(ref).values
    )


def test_run_info_and_overwrite(workdir):
    proc = bigimg("run", str(workdir / "run.toml"), "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "astype.zarr" in proc.stdout
    info = bigimg("info", str(workdir / "astype.zarr"), "--json")
    desc = json.loads(info.stdout)
    assert desc["complete"] is True and desc["dtype"] == "float64"
    again = bigimg("run", str(workdir / "run.toml"), "--workers", "1", "--quiet")
    assert_one_line_error(again, "already exists")
    over = bigimg("run", str(workdir / "run.toml"), "--workers", "1", "--quiet", "--overwrite")
    assert over.returncode == 0, over.stderr


def test_bad_inputs_give_one_line_and_exit_2(workdir):
    assert_one_line_error(bigimg("run", str(workdir / "nope.toml")), "no such file")
    (workdir / "bad.toml").write_text(
        (workdir / "run.toml").read_text().replace("dtype = ", "dtpye = ")
    )
    assert_one_line_error(bigimg("run", str(workdir / "bad.toml")), "unknown key 'steps[0].dtpye'")
    assert_one_line_error(bigimg("info", str(workdir / "missing.zarr")), "no such Zarr store")
    assert_one_line_error(bigimg("frobnicate"), "No such command")
    assert_one_line_error(bigimg("run", str(workdir / "run.toml"), "--workers", "0"), "--workers")
    assert not (workdir / "astype.zarr").exists()


def test_help_and_version():
    assert bigimg("--help").returncode == 0
    proc = bigimg("--version")
    assert proc.returncode == 0 and bi.__version__ in proc.stdout


def test_demo_small(tmp_path):
    proc = bigimg(
        "demo", "--size", "256", "--out", str(tmp_path / "demo"), "--workers", "1", "--quiet"
    )
    assert proc.returncode == 0, proc.stderr
    mosaic = bi.open_zarr(tmp_path / "demo" / "mosaic.zarr")
    out = bi.open_zarr(tmp_path / "demo" / "output.zarr")
    stretched = bi.open_zarr(tmp_path / "demo" / "stretched.zarr")
    assert mosaic.shape == out.shape == stretched.shape == (128, 256, 3)
    nodata = np.isnan(mosaic.values)
    assert 0.15 < nodata.mean() < 0.3  # the corners outside the globe (1 - pi/4 of the frame)
    np.testing.assert_array_equal(np.isnan(out.values), nodata)
    np.testing.assert_array_equal(np.isnan(stretched.values), nodata)
    # the seed question: the stretch's statistics leave the NoData out
    ref = bi.gaussian_stretch(mosaic, mean=np.nanmean(mosaic.values, axis=(0, 1)).tolist(),
                              std=np.nanstd(mosaic.values, axis=(0, 1)).tolist())  # fmt: skip
    np.testing.assert_allclose(stretched.values, ref.values, rtol=1e-5, atol=1e-6)
    for png in ("raw.png", "stretched.png", "quicklook.png"):
        assert (tmp_path / "demo" / png).read_bytes()[:4] == b"\x89PNG"
    assert "filter+equalize" in proc.stdout and "stretch" in proc.stdout


@pytest.mark.cluster
def test_run_on_existing_scheduler(workdir, real_cluster):
    addr, _ = real_cluster
    proc = bigimg("run", str(workdir / "run.toml"), "--scheduler", addr, "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = bi.open_zarr(workdir / "astype.zarr")
    src = bi.open_image(workdir / "mosaic.zarr", nodata=0)
    np.testing.assert_array_equal(out.values, src.values.astype("float64"))


# ---------------------------------------------------------------- issue 25: small surprises
def test_info_hist_must_be_a_png_and_exclude_needs_hist(workdir):
    store = str(workdir / "mosaic.zarr")
    assert_one_line_error(bigimg("info", store, "--hist", str(workdir / "h.txt")), "'.png'")
    assert not (workdir / "h.txt").exists()
    assert_one_line_error(bigimg("info", store, "--exclude", "0"), "--exclude")
    assert_one_line_error(bigimg("info", store, "--overwrite"), "--overwrite")
    ok = bigimg("info", store, "--hist", str(workdir / "h.png"), "--exclude", "0")
    assert ok.returncode == 0, ok.stderr
    assert (workdir / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_refuses_a_store_or_a_foreign_folder_as_out(workdir):
    from bigimg.demo import check_demo_outputs

    store = workdir / "mosaic.zarr"
    before = sorted(p.name for p in store.rglob("*"))
    proc = bigimg("demo", "--size", "64", "--out", str(store), "--overwrite", "--workers", "1")
    assert_one_line_error(proc, "is a Zarr store, not a demo folder")
    with pytest.raises(ValueError, match="is a Zarr store, not a demo folder"):
        check_demo_outputs(store)
    assert sorted(p.name for p in store.rglob("*")) == before  # untouched
    # a folder holding other things: --overwrite would replace only a demo's outputs
    with pytest.raises(ValueError, match="which the demo did not write"):
        check_demo_outputs(workdir, overwrite=True)
    with pytest.raises(FileExistsError, match="mosaic.zarr"):  # without: what exists is kept
        check_demo_outputs(workdir)
    (workdir / "new").mkdir()
    (workdir / "new" / "notes.txt").write_text("a user's file")
    check_demo_outputs(workdir / "new")  # without --overwrite nothing there is replaced


def test_demo_overwrite_replaces_an_earlier_demo_and_keeps_the_config_run(tmp_path):
    """`make demo` twice, with `bigimg run configs/demo.toml` (run.zarr) in between."""
    import dask

    from bigimg.demo import DEMO_OUTPUTS, run_demo

    out = tmp_path / "demo-output"
    with dask.config.set(scheduler="threads"):
        run_demo(out, size=64, progress=False, synthetic=True)
        (out / "run.zarr").mkdir()  # as `bigimg run configs/demo.toml` leaves it
        run_demo(out, size=64, progress=False, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted([*DEMO_OUTPUTS, "run.zarr"])
    assert bi.open_zarr(out / "mosaic.zarr").dtype == np.float32  # the Blue Marble replaced it


def test_a_refused_scheduler_port_fails_at_once_with_one_line(workdir):
    # nothing listens on port 1: distributed would retry for its whole 30 s timeout
    proc = bigimg("run", str(workdir / "run.toml"), "--scheduler", "tcp://127.0.0.1:1")
    assert_one_line_error(proc, "connection refused")
    assert not (workdir / "astype.zarr").exists()
    with pytest.raises(OSError, match="connection refused"), bi.Cluster("tcp://127.0.0.1:1"):
        pass


def test_config_values_are_not_coerced(workdir):
    text = (workdir / "run.toml").read_text()
    (workdir / "bad.toml").write_text(text.replace('dtype = "float64"', "dtype = true"))
    assert_one_line_error(bigimg("run", str(workdir / "bad.toml")), "steps[0].dtype")
    for old, new, match in [
        ("nodata = 0", 'nodata = "0"', "input.nodata"),
        ("nodata = 0", "nodata = false", "input.nodata"),
        ("y = 128, x = 128", 'y = "128", x = 128', "input.chunks"),
        ("y = 128, x = 128", "y = 128.0, x = 128", "input.chunks"),
    ]:
        assert old in text
        (workdir / "bad.toml").write_text(text.replace(old, new))
        with pytest.raises(bi.ConfigError, match=re.escape(match)):
            bi.load_config(workdir / "bad.toml")


@pytest.mark.parametrize(
    ("sigma", "match"),
    [
        ("true", "expected dict[str,float] or float (got True)"),
        ('"2"', "expected dict[str,float] or float (got '2')"),
        ("{ y = true, x = 2 }", "steps[0].sigma.y: Input should be a valid number (got True)"),
    ],
)
def test_a_bool_or_string_sigma_is_a_one_line_config_error(tmp_path, sigma, match):
    (tmp_path / "c.toml").write_text(
        f'[input]\npath = "in.zarr"\n[[steps]]\nop = "gaussian_filter"\nsigma = {sigma}\n'
        '[output]\npath = "out.zarr"\n'
    )
    with pytest.raises(bi.ConfigError, match=re.escape(match)) as err:
        bi.load_config(tmp_path / "c.toml")
    assert "steps[0].sigma" in str(err.value) and "\n" not in str(err.value)
    # an int where a float is expected, and a TOML array for a pair, are what they say
    (tmp_path / "ok.toml").write_text(
        '[input]\npath = "in.zarr"\n[[steps]]\nop = "gaussian_filter"\nsigma = 2\n'
        '[[steps]]\nop = "gaussian_stretch"\nout_range = [0, 1]\n[output]\npath = "out.zarr"\n'
    )
    steps = bi.load_config(tmp_path / "ok.toml").steps
    assert steps[0].params.sigma == 2.0 and steps[1].params.out_range == (0.0, 1.0)


_HOLD_LOCK = """
import sys, time
from bigimg.io.location import Location
from bigimg.io.store import writer_lock
with writer_lock(Location.of(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def test_a_second_writer_is_refused_before_any_work_naming_the_output(workdir):
    """A pipeline with a scratch store (equalize after a filter): the refusal names the
    output store, not the scratch store, and nothing is written (no cluster is started)."""
    out = workdir / "eq.zarr"
    (workdir / "eq.toml").write_text(
        '[input]\npath = "mosaic.zarr"\nnodata = 0\nchunks = { y = 128, x = 128 }\n'
        '[[steps]]\nop = "gaussian_filter"\nsigma = 1.0\n[[steps]]\nop = "equalize_hist"\n'
        '[output]\npath = "eq.zarr"\n'
    )
    assert bi.load_config(workdir / "eq.toml").scratch_steps() == [1]
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        proc = bigimg("run", str(workdir / "eq.toml"), "--workers", "1", "--overwrite")
        assert_one_line_error(proc, f"{str(out)!r} is being written by another bigimg")
        assert "scratch" not in proc.stderr
        with pytest.raises(ValueError, match="is being written by another bigimg process"):
            bi.load_config(workdir / "eq.toml").run(progress=False)
        assert not (workdir / "eq.zarr.scratch").exists() and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # the lock went with its process: the run goes through, and its own nested writes
    # (the scratch store, then the output under the lock it holds) are not refused
    bi.load_config(workdir / "eq.toml").run(progress=False)
    assert bi.store_info(out)["complete"] is True
    assert not (workdir / "eq.zarr.scratch").exists()


def test_quicklook_and_hist_write_pngs_to_urls(workdir):
    """#22 item 11: a URL output is written through fsspec, once, never replaced unasked."""
    import fsspec

    img = bi.open_zarr(workdir / "mosaic.zarr")
    url = "memory://bigimg-newcomer/q.png"
    bi.quicklook(img, url, max_size=32)
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/bigimg-newcomer/q.png")[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="already exists"):
        bi.quicklook(img, url, max_size=32)
    bi.quicklook(img, url, max_size=16, overwrite=True)
    with pytest.raises(ValueError, match="must end in '.png'"):
        bi.quicklook(img, "memory://bigimg-newcomer/q.txt", max_size=16)
    h = bi.histogram(img)
    assert (
        bi.plot_histogram(h, "memory://bigimg-newcomer/h.png") == "memory://bigimg-newcomer/h.png"
    )
    assert fs.cat_file("/bigimg-newcomer/h.png")[:4] == b"\x89PNG"
    with pytest.raises(FileExistsError, match="already exists"):
        bi.plot_histogram(h, "memory://bigimg-newcomer/h.png")
    fs.rm("/bigimg-newcomer", recursive=True)


def test_strict_values_still_take_numpy_scalars_and_arrays_from_python():
    img = bi.from_array(np.ones((16, 16), "float32"))
    steps = [
        {"op": "coarsen_mean", "factor": np.int64(2)},
        {"op": "gaussian_stretch", "out_range": np.array([0, 1.0])},
    ]
    planned = bi.plan(img, steps).steps
    assert planned[0].params.factor == 2 and planned[1].params.out_range == (0.0, 1.0)
    with pytest.raises(bi.ConfigError, match="steps.0..sigma: expected"):
        bi.plan(img, [{"op": "gaussian_filter", "sigma": np.bool_(True)}])
