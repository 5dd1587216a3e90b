"""Plain helpers shared by the tests (not fixtures: those live in conftest.py).

- :func:`raise_if_dask_computes`: fail if a block computes with dask more than allowed.
- :func:`bigimg` and :func:`assert_one_line_error`: run the command line in a subprocess
  and check its one-line error contract.
- :func:`free_port`, :func:`start_dask` and :func:`stop_dask`: real ``dask scheduler`` /
  ``dask worker`` processes on 127.0.0.1, for the tests marked ``cluster``.

Import them as ``from tests.helpers import ...``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask

#: The folder of the running interpreter, where the ``dask`` console script lives.
BIN = Path(sys.executable).parent


# ---------------------------------------------------------------- dask computes
class CountingScheduler:
    """A dask scheduler that counts computes and raises past ``max_computes``.

    Each call is one compute (``.values``, ``.compute()``, ``dask.compute(...)``); it runs
    the graph with the synchronous ``dask.get`` and exposes the count as ``total_computes``.
    """

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):  # type: ignore[no-untyped-def]
        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many computes. Total: {self.total_computes} > max: {self.max_computes}."
            )
        return dask.get(dsk, keys, **kwargs)


@contextlib.contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[CountingScheduler]:
    """Fail if the block computes with dask more than ``max_computes`` times (xarray's pattern).

    The default, 0, asserts the block is lazy. The yielded :class:`CountingScheduler`
    tells how many computes ran (``sched.total_computes``).
    """
    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


def slow_block(block: Any) -> Any:
    """A block returned after 0.1 s: a write slow enough to be killed part-way.

    Importable (``tests.helpers``), so that a graph using it has the same dask token
    in a test and in the writer subprocess it killed (a resume checks that token).
    """
    import time

    time.sleep(0.1)
    return block


# ---------------------------------------------------------------- the command line
def bigimg(
    *args: str, cwd: Path | None = None, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m bigimg *args`` in a subprocess; stdout and stderr captured as text.

    ``env`` replaces the whole environment when given (pass ``{**os.environ, ...}`` to add).
    """
    return subprocess.run(
        [sys.executable, "-m", "bigimg", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str) -> None:
    """Assert the CLI failed the documented way: exit 2, one ``bigimg: error:`` line holding
    ``match`` on stderr, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("bigimg: error:") and match in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------- real dask processes
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dask(
    tmp_path: Path, port: int, n_workers: int, *flags: str, protocol: str = "tcp"
) -> list[subprocess.Popen]:
    """Start ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    The scheduler listens on ``{protocol}://127.0.0.1:{port}``; each worker has one thread,
    1 GB and the name ``w{i}``. ``flags`` (e.g. ``--tls-*``) go to every process. Logs go
    to ``tmp_path / "scheduler.log"`` and ``tmp_path / f"worker{i}.log"``. Each process
    leads its own session, so :func:`stop_dask` also stops the children it forks. Returns
    the processes, scheduler first; this does not wait for them to be ready.
    """
    dask_bin = str(BIN / "dask")
    addr = f"{protocol}://127.0.0.1:{port}"
    procs = [
        subprocess.Popen(
            [
                dask_bin,
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
                    dask_bin,
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


def stop_dask(procs: list[subprocess.Popen]) -> None:
    """Stop the process groups :func:`start_dask` started: SIGTERM, then SIGKILL after 20 s."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
