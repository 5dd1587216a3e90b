"""The command line through subprocess, and a run on a real scheduler + 2 workers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from bigimg.demo import DEMO_STEPS, synthetic_mosaic
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
    bi.to_zarr(synthetic_mosaic(512, chunks=256), mosaic, progress=False)
    pipeline = bi.load_config(tmp_path / "configs" / "demo.toml")
    demo = bi.plan(bi.open_image(mosaic, nodata=0, chunks=2048), DEMO_STEPS)
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
    out = bi.open_zarr(tmp_path / "demo" / "output.zarr")
    assert out.shape == (256, 256, 3)
    assert (tmp_path / "demo" / "quicklook.png").stat().st_size > 0
    assert "pipeline" in proc.stdout


@pytest.mark.cluster
def test_run_on_existing_scheduler(workdir, real_cluster):
    addr, _ = real_cluster
    proc = bigimg("run", str(workdir / "run.toml"), "--scheduler", addr, "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = bi.open_zarr(workdir / "astype.zarr")
    src = bi.open_image(workdir / "mosaic.zarr", nodata=0)
    np.testing.assert_array_equal(out.values, src.values.astype("float64"))
