"""Real processes, real files: killed workers, killed runs, resume, safety."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from bigimg.demo import synthetic_mosaic
from tests.helpers import bigimg, free_port, start_dask, stop_dask

PIPELINE = """
[input]
path = "mosaic.zarr"
nodata = 0
chunks = {{ y = 128, x = 128 }}

[[steps]]
op = "gaussian_filter"
sigma = {{ y = 2, x = 2 }}

[[steps]]
op = "equalize_hist"
exclude = [0, 255]

[output]
path = "{out}"
"""
SIZE = 1536
N_CHUNKS = (SIZE // 128) ** 2


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("reliability")
    bi.to_zarr(synthetic_mosaic(SIZE, chunks=256), d / "mosaic.zarr", progress=False)
    for name in ("clean", "killed", "failover"):
        (d / f"{name}.toml").write_text(PIPELINE.format(out=f"{name}.zarr"))
    proc = bigimg("run", str(d / "clean.toml"), "--workers", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    return d


def _chunks(store: Path) -> int:
    root = store / "image" / "c"
    return (
        sum(1 for p in root.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
        if root.exists()
        else 0
    )


def _popen_run(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bigimg", "run", str(config), "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_chunks(store: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        have = _chunks(store)
        if have >= n or proc.poll() is not None:
            return have
        time.sleep(0.01)
    pytest.fail(f"no progress writing {store}")


def _assert_same_chunks(a: Path, b: Path) -> None:
    files = [p for p in (a / "image" / "c").rglob("*") if p.is_file()]
    assert len(files) == N_CHUNKS
    for f in files:
        assert (b / f.relative_to(a)).read_bytes() == f.read_bytes(), f


def test_killed_runs_resume_bit_identically(workdir):
    store = workdir / "killed.zarr"
    config = workdir / "killed.toml"
    stored = []
    for target in (N_CHUNKS // 8, N_CHUNKS // 2):  # kill at two points, resuming in between
        proc = _popen_run(config, "--workers", "1", *(["--resume"] if stored else []))
        have = _wait_for_chunks(store, target, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its LocalCluster workers
        proc.wait()
        assert have < N_CHUNKS, "the run finished before it could be killed"
        stored.append(_chunks(store))
        info = bigimg("info", str(store), "--json")
        assert '"complete": false' in info.stdout
        with pytest.raises(ValueError, match="incomplete"):
            bi.open_zarr(store)
    proc = bigimg("run", str(config), "--workers", "2", "--quiet", "--resume")
    assert proc.returncode == 0, proc.stderr
    written, skipped = map(
        int, re.search(r"(\d+) chunks written, (\d+) already stored", proc.stdout).groups()
    )
    assert skipped == stored[-1] and written == N_CHUNKS - stored[-1]
    assert bi.store_info(store)["complete"] is True
    _assert_same_chunks(workdir / "clean.zarr", store)


@pytest.mark.cluster
def test_worker_killed_mid_run(workdir, real_cluster):
    addr, procs = real_cluster
    store = workdir / "failover.zarr"
    proc = _popen_run(workdir / "failover.toml", "--scheduler", addr)
    _wait_for_chunks(store, N_CHUNKS // 4, proc)
    procs[1].send_signal(signal.SIGKILL)  # one of the two `dask worker` processes
    os.killpg(procs[1].pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert bi.store_info(store)["complete"] is True
    _assert_same_chunks(workdir / "clean.zarr", store)


def test_local_cluster_listens_on_loopback_only():
    with bi.Cluster(n_workers=1, memory_limit="1GB") as client:
        assert client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert "127.0.0.1" in client.dashboard_link
        workers = client.scheduler_info()["workers"]
        assert all(w.startswith("tcp://127.0.0.1:") for w in workers)


def test_clean_output_is_complete_and_plausible(workdir):
    out = bi.open_zarr(workdir / "clean.zarr")
    src = bi.open_image(workdir / "mosaic.zarr", nodata=0)
    np.testing.assert_array_equal(np.isnan(out.values), np.isnan(src.values))
    valid = out.values[np.isfinite(out.values)]
    assert 0 <= valid.min() and valid.max() <= 1


def _make_tls(d: Path) -> dict[str, Path]:
    """A throw-away CA and one certificate for scheduler, worker and client."""
    ca_key, ca, key, csr, cert = (
        d / n for n in ("ca.key", "ca.pem", "key.pem", "req.csr", "cert.pem")
    )
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=bigimg-test-ca",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        str(key),
        "-out",
        str(csr),
    )
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        str(d / "ext.cnf"),
        "-out",
        str(cert),
    )
    return {"ca": ca, "cert": cert, "key": key}


@pytest.mark.cluster
def test_tls_cluster(tmp_path):
    """`--tls-*` flags reach a scheduler that only speaks TLS; without them the run is refused."""
    tls = _make_tls(tmp_path)
    bi.to_zarr(synthetic_mosaic(128, chunks=64), tmp_path / "mosaic.zarr", progress=False)
    (tmp_path / "run.toml").write_text(
        '[input]\npath = "mosaic.zarr"\n[[steps]]\nop = "astype"\ndtype = "float32"\n[output]\npath = "o.zarr"\n'
    )
    port = free_port()
    addr = f"tls://127.0.0.1:{port}"
    flags = [
        "--tls-ca-file",
        str(tls["ca"]),
        "--tls-cert",
        str(tls["cert"]),
        "--tls-key",
        str(tls["key"]),
    ]
    procs = start_dask(tmp_path, port, 1, *flags, protocol="tls")
    log = tmp_path / "worker0.log"
    try:
        deadline = time.monotonic() + 60
        while "Starting established connection" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.3)
        ok = bigimg(
            *flags, "run", str(tmp_path / "run.toml"), "--scheduler", addr, "--quiet", timeout=120
        )
        assert ok.returncode == 0, ok.stderr
        assert bi.store_info(tmp_path / "o.zarr")["complete"] is True
        plain = bigimg(
            "run",
            str(tmp_path / "run.toml"),
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
            "--quiet",
            "--overwrite",
            timeout=120,
            env={**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "3s"},
        )
        assert plain.returncode == 2 and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    finally:
        stop_dask(procs)
