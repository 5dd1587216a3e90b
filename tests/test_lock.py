"""Issue 22 item 7: one writer per store on object storage too, on the real S3 server.

Two ``--overwrite`` runs against S3, started a second apart, both exited 0 and mixed
their chunks. The lease (``bigimg/io/lock.py``) is a conditional PUT: these tests run
the CLI in subprocesses against tests/s3server.py's moto server, kill writers, forge
the leases of writers on other hosts, and take a lease away from a running writer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import bigimg as bi
from bigimg.io import lock
from bigimg.io.location import Location
from bigimg.io.lock import LeaseLost, writer_lock
from tests.helpers import assert_one_line_error, bigimg
from tests.s3server import s3_bucket_fixture, s3_server_fixture  # noqa: F401  (fixtures)

pytestmark = pytest.mark.cluster


def _env(s3_bucket, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **s3_bucket.env, **extra}


def _noise(url: str, seed: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "bigimg", "noise", url, "--shape", "1024x1024"] + [
        "--length-scale", "8", "--chunks", "256", "--seed", str(seed), "--workers", "1",
        "--quiet", *extra,
    ]  # fmt: skip


def test_a_second_writer_on_s3_is_refused_while_the_first_holds_the_store(s3_bucket):
    env = _env(s3_bucket)
    url = s3_bucket.url("n.zarr")
    loc = Location.of(url, s3_bucket.storage_options)
    bi.to_zarr(bi.correlated_noise((64, 64), length_scale=2), loc, progress=False)
    before = {k: s3_bucket.get(k) for k in s3_bucket.keys("n.zarr/")}
    with writer_lock(loc):  # a writer in another process (this one) holds it
        second = bigimg("noise", url, "--shape", "64x64", "--length-scale", "3", "--overwrite",
                        env=env)  # fmt: skip
    assert_one_line_error(second, "is being written by another bigimg process")
    assert {k: s3_bucket.get(k) for k in s3_bucket.keys("n.zarr/")} == before


def test_two_writers_started_together_on_s3_never_mix(s3_bucket):
    """Issue 22 item 7: two --overwrite runs 1 s apart both exited 0 with mixed chunks."""
    env = _env(s3_bucket)
    url = s3_bucket.url("n.zarr")
    procs = []
    for seed in (1, 2):
        procs.append(
            subprocess.Popen(
                _noise(url, seed, "--overwrite"),
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        time.sleep(1)
    done = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    winners = [seed for seed, (rc, _, _) in zip((1, 2), done, strict=True) if rc == 0]
    assert winners, done
    for rc, _, err in done:
        if rc:
            assert rc == 2 and "is being written by another bigimg process" in err, err
    stored = bi.open_zarr(url, storage_options=s3_bucket.storage_options).values
    refs = {
        seed: bi.correlated_noise((1024, 1024), length_scale=8, seed=seed, chunks=256).values
        for seed in winners
    }
    assert any(np.array_equal(stored, ref) for ref in refs.values()), "chunks of both seeds"
    assert ".n.zarr.bigimg-lock" not in s3_bucket.keys()  # released


def _forge(s3_bucket, key: str, *, expires_in: float) -> None:
    body = {"owner": "another-host:1", "term_seconds": 60, "expires": time.time() + expires_in}
    s3_bucket.put(key, json.dumps(body).encode())


def test_a_live_lease_of_another_host_is_refused_and_a_lapsed_one_taken(s3_bucket):
    env = _env(s3_bucket)
    url = s3_bucket.url("h.zarr")
    _forge(s3_bucket, ".h.zarr.bigimg-lock", expires_in=45)
    proc = bigimg("noise", url, "--shape", "64x64", "--length-scale", "2", env=env)
    assert_one_line_error(proc, "another bigimg process (another-host:1)")
    assert "the lease of a stopped writer lapses within" in proc.stderr
    assert not [k for k in s3_bucket.keys() if k.startswith("h.zarr/")]  # nothing written
    _forge(s3_bucket, ".h.zarr.bigimg-lock", expires_in=-1)  # its writer stopped long ago
    loc = Location.of(url, s3_bucket.storage_options)
    bi.to_zarr(bi.correlated_noise((64, 64), length_scale=2), loc, progress=False)
    assert bi.store_info(loc)["complete"]
    assert ".h.zarr.bigimg-lock" not in s3_bucket.keys()


def test_a_writer_whose_lease_is_taken_never_marks_the_store_complete(s3_bucket, monkeypatch):
    monkeypatch.setattr(lock, "LEASE_SECONDS", 1.5)
    loc = Location.of(s3_bucket.url("t.zarr"), s3_bucket.storage_options)
    img = bi.from_array(np.zeros((64, 64), "float32"), chunks=32)

    def slow(block):
        time.sleep(0.5)
        return block

    slowed = img.copy(data=img.data.map_blocks(slow, dtype="float32"))
    taken = threading.Event()

    def take_over():  # a writer that found the lease lapsed (this one stalled a term)
        while ".t.zarr.bigimg-lock" not in s3_bucket.keys():
            time.sleep(0.05)
        _forge(s3_bucket, ".t.zarr.bigimg-lock", expires_in=60)
        taken.set()

    thief = threading.Thread(target=take_over)
    thief.start()
    with pytest.raises(LeaseLost, match="lost the writer lease"):
        bi.to_zarr(slowed, loc, progress=False)
    thief.join()
    assert taken.is_set()
    assert bi.store_info(loc)["complete"] is False


def test_a_lease_is_renewed_while_the_writer_runs(s3_bucket, monkeypatch):
    monkeypatch.setattr(lock, "LEASE_SECONDS", 1.0)
    loc = Location.of(s3_bucket.url("r.zarr"), s3_bucket.storage_options)
    with writer_lock(loc) as outer:
        with writer_lock(loc) as inner:  # a pipeline's to_zarr inside its run's lock
            assert inner is outer and outer is not None  # checked before marking complete
        first = json.loads(s3_bucket.get(".r.zarr.bigimg-lock"))
        time.sleep(2.5)  # more than two terms
        later = json.loads(s3_bucket.get(".r.zarr.bigimg-lock"))
        assert later["expires"] > first["expires"] + 1
        assert "another thread of this process" in _lock_from_another_thread(loc)
    assert ".r.zarr.bigimg-lock" not in s3_bucket.keys()


def _lock_from_another_thread(loc: Location) -> str:
    """The error another thread of this process gets when it takes ``loc``'s writer lock."""
    errors: list[str] = []

    def other() -> None:
        try:
            with writer_lock(loc):
                errors.append("taken")
        except ValueError as e:
            errors.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    return errors[0]


def test_memory_stores_take_one_writer_per_process_thread():
    loc = Location.of("memory://locks/m.zarr")
    with writer_lock(loc), writer_lock(loc):  # re-entrant: a pipeline holding its output
        assert "being written by another thread" in _lock_from_another_thread(loc)
    with writer_lock(loc):  # released
        pass
