"""Fixtures and pytest hooks shared by the tests: Hypothesis profiles, dask clusters.

Plain helpers (``raise_if_dask_computes``, the CLI runner, the dask process launchers)
are in ``tests/helpers.py``; Hypothesis strategies are in ``tests/strategies.py``.
"""

from __future__ import annotations

import os
import time

import dask
import pytest
from hypothesis import settings

from tests.helpers import free_port, start_dask, stop_dask

# ---------------------------------------------------------------- Hypothesis profiles
# HYPOTHESIS_PROFILE=ci (the default, `make test`): about as many examples as the suite ran
# with hard-coded counts, the same examples on every run (derandomize implies no example
# database). HYPOTHESIS_PROFILE=thorough: ten times as many, freshly random each run, with
# failures saved to .hypothesis/ and replayed first. Tests keep deadline=None themselves.
settings.register_profile("ci", settings.get_profile("ci"), max_examples=15, derandomize=True)
settings.register_profile(
    "thorough", max_examples=150, derandomize=False, deadline=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------- dask clusters
@pytest.fixture(scope="session")
def local_client():
    """A real distributed LocalCluster on 127.0.0.1 (2 workers, 1 thread each)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="2GB",
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture
def client(local_client):
    """The LocalCluster client, active as the default scheduler for one test."""
    with local_client.as_current(), dask.config.set(scheduler=local_client.get):
        yield local_client


@pytest.fixture
def real_cluster(tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1: (address, processes)."""
    from distributed import Client

    port = free_port()
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
