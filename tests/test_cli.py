"""The command line through subprocess, and a run on a real scheduler + 2 workers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from bigimg.demo import synthetic_mosaic

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BIN = Path(sys.executable).parent


def bigimg(
    *args: str, cwd: Path | None = None, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bigimg", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def workdir(tmp_path) -> Path:
    bi.to_zarr(synthetic_mosaic(256, chunks=128), tmp_path / "mosaic.zarr", progress=False)
    shutil.copy(CONFIGS / "astype.toml", tmp_path / "run.toml")
    return tmp_path


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bigimg: error:") and match in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dask(
    tmp_path: Path, port: int, n_workers: int, *flags: str, protocol: str = "tcp"
) -> list:
    """Start `dask scheduler` and `n_workers` `dask worker` processes on 127.0.0.1."""
    dask = str(BIN / "dask")
    addr = f"{protocol}://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--protocol",
                protocol,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--dashboard-address",
                "127.0.0.1:0",
                *flags,
            ],
            stdout=(tmp_path / "scheduler.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    ]
    for i in range(n_workers):
        procs.append(
            subprocess.Popen(
                [
                    dask,
                    "worker",
                    addr,
                    "--nthreads",
                    "1",
                    "--nworkers",
                    "1",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--memory-limit",
                    "1GB",
                    "--name",
                    f"w{i}",
                    *flags,
                ],
                stdout=(tmp_path / f"worker{i}.log").open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    return procs


def stop_dask(procs: list) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, 15)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait()


@pytest.fixture
def real_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1."""
    from distributed import Client

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = start_dask(tmp_path, port, 2)
    deadline = time.monotonic() + 60
    while True:
        try:
            with Client(addr, timeout=5) as c:
                if len(c.scheduler_info()["workers"]) == 2:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                "cluster did not start: " + (tmp_path / "scheduler.log").read_text()[-2000:]
            )
        time.sleep(0.5)
    yield addr, procs
    stop_dask(procs)


@pytest.mark.cluster
def test_run_on_existing_scheduler(workdir, real_cluster):
    addr, _ = real_cluster
    proc = bigimg("run", str(workdir / "run.toml"), "--scheduler", addr, "--quiet")
    assert proc.returncode == 0, proc.stderr
    out = bi.open_zarr(workdir / "astype.zarr")
    src = bi.open_image(workdir / "mosaic.zarr", nodata=0)
    np.testing.assert_array_equal(out.values, src.values.astype("float64"))
