"""A real full and a real read-only disk: a small tmpfs mounted for the test.

Mounting needs root (or CAP_SYS_ADMIN); elsewhere the tests skip. Nothing is
simulated: zarr, the COG writer and the CLI meet the kernel's ENOSPC and EROFS.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from tests.helpers import assert_one_line_error, bigimg


class Disk:
    """A tmpfs of ``size`` mounted at ``path``; :meth:`remount` changes its options."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def remount(self, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    path = tmp_path / "disk"
    path.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)]
    if os.geteuid() != 0 or subprocess.run(mount, capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield Disk(path)
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


NOISE = ["--shape", "1024x1024", "--length-scale", "4", "--chunks", "256", "--seed", "3"]


def test_a_full_disk_is_one_line_and_resume_finishes_once_there_is_room(disk):
    out = disk.path / "n.zarr"  # 4 MiB of float32 noise on a 2 MiB disk
    full = bigimg("noise", str(out), *NOISE, "--workers", "1", "--quiet")
    assert_one_line_error(full, f"store: cannot write '{out}': No space left on device")
    assert "finish it with --resume" in full.stderr
    info = bi.store_info(out)
    assert info["complete"] is False and 0 < info["chunks_stored"] < info["chunks_total"]

    disk.remount("size=16m")  # the user frees space
    resumed = bigimg("noise", str(out), *NOISE, "--workers", "1", "--quiet", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    ref = bi.correlated_noise((1024, 1024), length_scale=4, chunks=256, seed=3)
    np.testing.assert_array_equal(bi.open_zarr(out).values, ref.values)


def test_a_full_disk_leaves_no_cog_and_an_incomplete_store(disk):
    rng = np.random.default_rng(0)
    img = bi.from_array(rng.random((1024, 1024, 3)).astype("float32"), chunks=256)
    with pytest.raises(OSError, match="disk full|No space left"):
        bi.to_cog(img, disk.path / "o.tif")
    assert list(disk.path.iterdir()) == []  # no file at the path, no spool, no temporary
    with pytest.raises(OSError, match="cannot write .*No space left on device"):
        bi.to_zarr(img, disk.path / "o.zarr", progress=False)
    assert bi.store_info(disk.path / "o.zarr")["complete"] is False


def test_a_read_only_disk_refuses_writes_in_one_line_and_still_reads(disk, tmp_path):
    store = disk.path / "n.zarr"
    field = bi.correlated_noise((256, 256), length_scale=4, chunks=128)
    bi.to_zarr(field, store, progress=False, pyramid=True)
    before = {p: p.read_bytes() for p in sorted(disk.path.rglob("*")) if p.is_file()}
    disk.remount("ro")

    new = disk.path / "m.zarr"
    proc = bigimg("noise", str(new), "--shape", "64x64", "--length-scale", "4", "--workers", "1")
    assert_one_line_error(proc, f"store: cannot write '{new}': Read-only file system")
    assert "--resume" not in proc.stderr  # nothing was created, so nothing to resume
    with pytest.raises(OSError, match="cannot write .*Read-only file system; it is incomplete"):
        bi.to_zarr(field, store, overwrite=True, progress=False)

    assert bi.store_info(store)["complete"] is True  # reading needs no write
    bi.quicklook(bi.open_zarr(store), tmp_path / "q.png")
    np.testing.assert_array_equal(bi.open_zarr(store).values, field.values)
    after = {p: p.read_bytes() for p in sorted(disk.path.rglob("*")) if p.is_file()}
    assert after == before
