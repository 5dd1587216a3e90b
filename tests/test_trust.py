"""Issue 14: nothing lost, nothing silent. Each test reproduces a defect a user met,
through the path they took (CLI, config or Python), on real files and real clusters."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import bigimg as bi
from bigimg.errors import CorruptStoreError
from tests.helpers import assert_one_line_error, bigimg

rng = np.random.default_rng(14)
RGB = (rng.random((300, 260, 3)) * 255).astype("uint8")


def _tree(path: Path) -> dict[Path, bytes]:
    """Every file under ``path`` (or the file itself) with its bytes."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {p: p.read_bytes() for p in files}


@pytest.fixture
def store(tmp_path) -> Path:
    path = tmp_path / "in.zarr"
    bi.to_zarr(bi.from_array(RGB, chunks={"y": 128, "x": 128}), path, progress=False)
    return path


def _toml(path: Path, inp: str, out: str, steps: str = "", input_extra: str = "") -> Path:
    path.write_text(f'[input]\npath = "{inp}"\n{input_extra}\n{steps}\n[output]\npath = "{out}"\n')
    return path


ASTYPE = '[[steps]]\nop = "astype"\ndtype = "float64"\n'


# ------------------------------------------------ 1. TIFF input on a real cluster
def _write_tiffs(d: Path) -> dict[str, np.ndarray]:
    tifffile.imwrite(d / "tiled.tif", RGB, tile=(128, 128), photometric="rgb")
    tifffile.imwrite(d / "striped.tif", RGB, photometric="rgb", rowsperstrip=50)
    tifffile.imwrite(d / "gray.tif", RGB[..., 0])
    out = {"tiled.tif": RGB, "striped.tif": RGB, "gray.tif": RGB[..., :1]}
    try:
        import rasterio
        from rasterio.transform import from_origin
    except ImportError:  # the geo extra
        return out
    profile = dict(driver="GTiff", width=260, height=300, count=3, dtype="uint8")
    profile.update(crs="EPSG:32633", transform=from_origin(5e5, 4e6, 10, 10), tiled=True)
    with rasterio.open(d / "geo.tif", "w", blockxsize=128, blockysize=128, **profile) as dst:
        dst.write(RGB.transpose(2, 0, 1))
    out["geo.tif"] = RGB
    return out


@pytest.mark.parametrize("chunks", ["auto", {"y": 128, "x": 128}, {"y": 70, "x": 90}])
def test_tiff_inputs_on_the_distributed_cluster(tmp_path, client, chunks):
    for name, expected in _write_tiffs(tmp_path).items():
        out = tmp_path / f"{name}-{hash(str(chunks))}.zarr"
        bi.to_zarr(bi.open_image(tmp_path / name, chunks=chunks), out, progress=False)
        np.testing.assert_array_equal(bi.open_zarr(out).values, expected, err_msg=name)


def _readme_quickstart() -> str:
    """The README's Python quickstart, verbatim."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Python quickstart", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_readme_quickstart_verbatim_as_a_script(tmp_path):
    """Copied into a file and run with ``python``, as a user does (a spawned worker
    re-runs the script's top level: without its main guard the cluster failed)."""
    tifffile.imwrite(tmp_path / "mosaic.tif", np.tile(RGB, (2, 2, 1)), photometric="rgb")
    (tmp_path / "quick.py").write_text(_readme_quickstart())
    proc = subprocess.run(
        [sys.executable, "quick.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out, planned = bi.open_zarr(tmp_path / "out.zarr"), bi.open_zarr(tmp_path / "planned.zarr")
    assert out.shape == (600, 520, 3)
    np.testing.assert_array_equal(out.values, planned.values)
    assert (tmp_path / "out.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "planned.zarr.scratch").exists()


def test_cli_run_on_a_tiff(tmp_path):
    _write_tiffs(tmp_path)
    cfg = _toml(tmp_path / "t.toml", "striped.tif", "out.zarr", ASTYPE)
    proc = bigimg("run", str(cfg), "--workers", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    np.testing.assert_array_equal(bi.open_zarr(tmp_path / "out.zarr").values, RGB)


def test_tiff_changed_while_read_is_an_error(tmp_path):
    _write_tiffs(tmp_path)
    img = bi.open_image(tmp_path / "tiled.tif", chunks={"y": 128, "x": 128})
    time.sleep(0.01)
    tifffile.imwrite(tmp_path / "tiled.tif", RGB[::-1], tile=(128, 128), photometric="rgb")
    with pytest.raises(OSError, match="changed while it was being read"):
        img.compute()


def test_large_png_is_read(tmp_path):
    import PIL.Image

    path = tmp_path / "big.png"  # 15000² is over Pillow's decompression-bomb guard
    PIL.Image.fromarray(np.zeros((15000, 15000), np.uint8)).save(path)
    img = bi.open_image(path, chunks={"y": 4096, "x": 4096})
    assert img.shape == (15000, 15000, 1)
    assert int(img[-1, -1, 0]) == 0


# ------------------------------------------------ 2. outputs that overlap the input
@pytest.mark.parametrize("out", ["in.zarr", "in.zarr/image", "in.zarr/sub.zarr", "."])
def test_run_refuses_an_output_overlapping_the_input(store, out):
    before = _tree(store)
    cfg = _toml(store.parent / "o.toml", "in.zarr", out, ASTYPE)
    proc = bigimg("run", str(cfg), "--overwrite", "--quiet", "--workers", "1")
    assert_one_line_error(proc, "overlaps the input")
    assert _tree(store) == before
    np.testing.assert_array_equal(bi.open_zarr(store).values, RGB)


def test_to_zarr_refuses_writing_over_its_own_input(store):
    before = _tree(store)
    with pytest.raises(ValueError, match="overlaps the input"):
        bi.to_zarr(bi.open_zarr(store).astype("float64"), store, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="overlaps the input"):
        bi.to_zarr(bi.open_image(store), store.parent, overwrite=True, progress=False)
    assert _tree(store) == before


# ------------------------------------------------ 3. every file bigimg writes
def _zca_config(d: Path, model: str) -> Path:
    bi.to_zarr(
        bi.from_array(rng.random((6, 4, 4, 1)), chunks={"image": 3}),
        d / "stack.zarr",
        progress=False,
    )
    steps = f'[[steps]]\nop = "zca_fit"\nmodel = "{model}"\n'
    return _toml(d / "zca.toml", "stack.zarr", "white.zarr", steps)


@pytest.mark.parametrize("model", ["zca.toml", "stack.zarr/zarr.json", "white.zarr/m.npz"])
def test_zca_model_never_replaces_an_input_or_the_output(tmp_path, model):
    cfg = _zca_config(tmp_path, model)
    before = {**_tree(cfg), **_tree(tmp_path / "stack.zarr")}
    proc = bigimg("run", str(cfg), "--overwrite", "--quiet", "--workers", "1")
    assert_one_line_error(proc, "overlaps")
    assert {**_tree(cfg), **_tree(tmp_path / "stack.zarr")} == before
    assert not (tmp_path / "white.zarr").exists()


def test_zca_model_refuses_an_existing_file_unless_overwrite(tmp_path):
    cfg = _zca_config(tmp_path, "notes.txt")
    (tmp_path / "notes.txt").write_text("mine")
    proc = bigimg("run", str(cfg), "--quiet", "--workers", "1")
    assert_one_line_error(proc, "already exists")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "white.zarr").exists()  # refused before any work
    proc = bigimg("run", str(cfg), "--quiet", "--workers", "1", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert bi.ZCA.load(tmp_path / "notes.txt").is_fitted


def test_quicklook_info_and_demo_refuse_existing_files(store):
    d = store.parent
    for name in ("q.png", "h.png"):
        (d / name).write_text("mine")
    assert_one_line_error(bigimg("quicklook", str(store), str(d / "q.png")), "already exists")
    assert_one_line_error(bigimg("info", str(store), "--hist", str(d / "h.png")), "already exists")
    assert_one_line_error(bigimg("quicklook", str(store), str(store / "q.png")), "overlaps")
    assert (d / "q.png").read_text() == "mine" and (d / "h.png").read_text() == "mine"
    assert not (store / "q.png").exists()
    proc = bigimg("quicklook", str(store), str(d / "q.png"), "--overwrite", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    proc = bigimg("info", str(store), "--hist", str(d / "h.png"), "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (d / "q.png").read_bytes()[:4] == (d / "h.png").read_bytes()[:4] == b"\x89PNG"
    demo = d / "demo"
    demo.mkdir()
    (demo / "quicklook.png").write_text("mine")
    proc = bigimg("demo", "--size", "64", "--out", str(demo), "--workers", "1", "--quiet")
    assert_one_line_error(proc, "already exists")
    assert (demo / "quicklook.png").read_text() == "mine"
    assert not (demo / "mosaic.zarr").exists()  # every output checked before any work


# ------------------------------------------------ 4. resume checks a fingerprint
def test_resume_refuses_a_changed_input_or_steps(store):
    d = store.parent
    cfg = _toml(d / "r.toml", "in.zarr", "out.zarr", ASTYPE)
    assert bigimg("run", str(cfg), "--quiet", "--workers", "1").returncode == 0
    again = bigimg("run", str(cfg), "--quiet", "--workers", "1", "--resume")
    assert again.returncode == 0 and "0 chunks written, 9 already stored" in again.stdout
    _toml(cfg, "in.zarr", "out.zarr", ASTYPE, input_extra="nodata = 0")
    assert_one_line_error(bigimg("run", str(cfg), "--quiet", "--resume"), "inputs: stored")
    _toml(cfg, "in.zarr", "out.zarr", ASTYPE.replace("float64", "float32"))
    assert_one_line_error(bigimg("run", str(cfg), "--quiet", "--resume"), "steps: stored")
    # the input itself rewritten (same options and steps)
    bi.to_zarr(bi.from_array(RGB[::-1], chunks=128), store, overwrite=True, progress=False)
    _toml(cfg, "in.zarr", "out.zarr", ASTYPE)
    assert_one_line_error(bigimg("run", str(cfg), "--quiet", "--resume"), "source_identity")


def test_resume_of_an_interrupted_store_refuses_other_input_options(store):
    out = store.parent / "out.zarr"
    img = bi.open_image(store)
    bi.to_zarr(img, out, inputs={"nodata": None}, progress=False)
    group = zarr.open_group(str(out), mode="r+")
    group.attrs["bigimg_complete"] = False  # as a killed run leaves it
    with pytest.raises(ValueError, match="inputs: stored"):
        bi.to_zarr(img, out, resume=True, inputs={"nodata": 0}, progress=False)
    res = bi.to_zarr(img, out, resume=True, inputs={"nodata": None}, progress=False)
    assert res.chunks_written == 0 and bi.store_info(out)["complete"]


# ------------------------------------------------ 5. reading never modifies
def test_info_never_deletes_a_running_writes_temporaries(store):
    partial = store / "image" / "c" / "0" / "0" / "0.123.partial"
    partial.write_bytes(b"in flight")
    before = _tree(store)
    assert bigimg("info", str(store)).returncode == 0
    bi.store_info(store)
    bi.open_zarr(store).compute()
    assert _tree(store) == before


# ------------------------------------------------ 6. a missing chunk is damage
def test_missing_chunk_of_a_complete_store_is_named(store):
    (store / "image" / "c" / "0" / "1" / "1").unlink()  # keys in on-disk order: band, y, x
    with pytest.raises(CorruptStoreError, match=r"chunk \(0, 1, 1\) is missing"):
        bi.open_zarr(store).compute()
    with pytest.raises(CorruptStoreError, match="is missing"):
        bi.open_zarr(store, chunks={"y": 256, "x": 256}).compute()
    info = bi.store_info(store)
    assert info["complete"] and "1 of 9 chunks missing" in info["damaged"]
    cfg = _toml(store.parent / "m.toml", "in.zarr", "out.zarr", ASTYPE)
    assert_one_line_error(bigimg("run", str(cfg), "--quiet", "--workers", "1"), "is missing")


def test_corrupt_root_metadata_is_named(store):
    (store / "zarr.json").write_text("{ not json")
    for cmd in (["info", str(store)], ["quicklook", str(store), str(store.parent / "q.png")]):
        assert_one_line_error(bigimg(*cmd), "metadata cannot be read")


# ------------------------------------------------ 8-10. hangs, tracebacks, task errors
def test_a_scheduler_that_never_answers_fails_fast():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted = []
    threading.Thread(
        target=lambda: accepted.extend(sock.accept() for _ in range(8)), daemon=True
    ).start()
    addr = f"tcp://127.0.0.1:{sock.getsockname()[1]}"
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="no answer"), bi.Cluster(addr, connect_timeout=2):
        pass
    assert time.monotonic() - t0 < 15
    sock.close()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--memory-limit", "1KB"], "at least 256MiB"),
        (["--memory-limit=-5GB"], "at least 256MiB"),
        (["--memory-limit", "lots"], "memory_limit must be a size"),
        (["--scheduler-file", "{d}/bad.json"], "is not the JSON"),
    ],
)
def test_cluster_options_fail_in_one_line(tmp_path, args, match):
    (tmp_path / "bad.json").write_text("{not json")
    args = [a.format(d=tmp_path) for a in args]
    proc = bigimg(
        "noise", str(tmp_path / "n.zarr"), "--shape", "64x64", "--length-scale", "2", *args
    )
    assert_one_line_error(proc, match)
    assert not (tmp_path / "n.zarr").exists()


def test_config_op_must_be_a_string(store):
    cfg = _toml(store.parent / "l.toml", "in.zarr", "out.zarr", '[[steps]]\nop = ["astype"]\n')
    assert_one_line_error(bigimg("run", str(cfg)), "op must be a string")


def test_task_errors_reach_the_cli_as_one_line(store):
    chunk = store / "image" / "c" / "0" / "1" / "1"  # band, y, x
    data = bytearray(chunk.read_bytes())
    data[20] ^= 0xFF
    chunk.write_bytes(bytes(data))
    cfg = _toml(store.parent / "c.toml", "in.zarr", "out.zarr", ASTYPE)
    proc = bigimg("run", str(cfg), "--quiet", "--workers", "1")
    assert_one_line_error(proc, "chunk (0, 1, 1) cannot be read")


def test_ctrl_c_prints_one_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigimg", "noise", str(tmp_path / "n.zarr"), "--shape"]
        + ["8192x8192", "--length-scale", "40", "--chunks", "512", "--workers", "1", "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "n.zarr" / "zarr.json").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == "bigimg: interrupted", err
    assert bi.store_info(tmp_path / "n.zarr")["complete"] is False


def test_ctrl_c_while_the_cluster_starts_prints_one_line_and_leaves_no_worker(tmp_path):
    """distributed's exit hook printed 'AssertionError: Status.init' for a half-made cluster."""
    psutil = pytest.importorskip("psutil")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigimg", "noise", str(tmp_path / "n.zarr"), "--shape", "64x64"]
        + ["--length-scale", "2", "--workers", "1", "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
    )
    me = psutil.Process(proc.pid)
    deadline = time.monotonic() + 60
    while not me.children() and time.monotonic() < deadline:  # a worker process is starting
        time.sleep(0.005)
    children = me.children(recursive=True)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip() == "bigimg: interrupted", err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive


def test_ctrl_c_during_a_statistics_pass_prints_one_line(tmp_path):
    """asyncio logged "Task exception was never retrieved ... Client._gather ... AllExit()"
    above "bigimg: interrupted" when a Ctrl-C cancelled the gather of a pass's statistics."""
    from bigimg.demo import synthetic_mosaic

    bi.to_zarr(synthetic_mosaic(3072, chunks=512), tmp_path / "m.zarr", progress=False)
    steps = '[[steps]]\nop = "gaussian_filter"\nsigma = 2\n[[steps]]\nop = "equalize_hist"\n'
    cfg = _toml(tmp_path / "c.toml", "m.zarr", "out.zarr", steps, input_extra="nodata = 0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bigimg", "run", str(cfg), "--quiet", "--workers", "2"],
        stderr=subprocess.PIPE,
        text=True,
    )
    scratch = tmp_path / "out.zarr.scratch" / "steps-1.zarr" / "zarr.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # until the counts pass runs
        with contextlib.suppress(OSError, ValueError):
            if json.loads(scratch.read_text())["attributes"].get("bigimg_complete"):
                break
        time.sleep(0.01)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip() == "bigimg: interrupted", err


GC_CTRL_C = """
import gc, signal, time
from bigimg import cli

fired = []

def callback(phase, info):
    if phase == "start" and not fired:
        fired.append(1)
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while a garbage-collection callback runs

with cli._interruptible():
    gc.callbacks.append(callback)
    try:
        gc.collect()
        time.sleep(5)
        print("not interrupted")
    except KeyboardInterrupt:
        print("interrupted")
"""


def test_ctrl_c_during_a_gc_callback_interrupts_without_a_traceback():
    """CI caught "Exception ignored in: <... GCDiagnosis._gc_callback ...> KeyboardInterrupt"
    printed above "bigimg: interrupted": Python drops an exception raised in a gc callback."""
    proc = subprocess.run(
        [sys.executable, "-c", GC_CTRL_C], capture_output=True, text=True, timeout=60
    )
    assert proc.stdout.strip() == "interrupted", proc.stdout + proc.stderr
    assert proc.stderr == ""


def test_a_write_stopped_before_its_array_was_made_is_incomplete_and_resumes(tmp_path):
    """Ctrl-C between the group's creation and the array's (CI caught the window)."""
    img = bi.from_array(RGB, chunks={"y": 128, "x": 128}).astype("float32")
    path = tmp_path / "out.zarr"
    bi.to_zarr(img, path, progress=False)
    for name in ("image", "y", "x", "band"):  # back to the state after the group's creation
        shutil.rmtree(path / name, ignore_errors=True)
    meta = json.loads((path / "zarr.json").read_text())
    meta.pop("consolidated_metadata", None)
    meta["attributes"]["bigimg_complete"] = False
    (path / "zarr.json").write_text(json.dumps(meta))

    info = bi.store_info(path)
    assert info["complete"] is False and info["chunks_stored"] == 0
    assert "interrupted before its 'image' array was created" in info["damaged"]
    for allow in (False, True):
        with pytest.raises(ValueError, match="is incomplete .*resume"):
            bi.open_zarr(path, allow_incomplete=allow)
    shown = bigimg("info", str(path))
    assert shown.returncode == 0 and "complete: False" in shown.stdout
    with pytest.raises(ValueError, match="another computation"):  # still checked
        bi.to_zarr(img * 2, path, resume=True, progress=False)
    result = bi.to_zarr(img, path, resume=True, progress=False)
    assert result.chunks_written == 9
    np.testing.assert_array_equal(bi.open_zarr(path).values, RGB.astype("float32"))


# ------------------------------------------------ 11. noise --resume
def test_noise_resume(tmp_path):
    out = str(tmp_path / "n.zarr")
    args = ["noise", out, "--shape", "128x128", "--length-scale", "3", "--chunks", "64", "--quiet"]
    assert bigimg(*args, "--workers", "1").returncode == 0
    shutil.rmtree(tmp_path / "n.zarr" / "image" / "c" / "1")
    group = zarr.open_group(out, mode="r+")
    group.attrs["bigimg_complete"] = False  # as a killed run leaves it
    proc = bigimg(*args, "--workers", "1", "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "2 chunks written, 2 already stored" in proc.stdout
    clean = tmp_path / "clean.zarr"
    bi.to_zarr(bi.correlated_noise((128, 128), length_scale=3, chunks=64), clean, progress=False)
    np.testing.assert_array_equal(bi.open_zarr(out).values, bi.open_zarr(clean).values)
    assert_one_line_error(bigimg(*args, "--seed", "2", "--resume"), "steps: stored")


# ------------------------------------------------ 12. pyramids
def test_a_failed_pyramid_level_leaves_the_root_incomplete(tmp_path, monkeypatch):
    import bigimg.io.pyramid as ms

    real = ms._write_multiscales

    def fail_at_level_2(root, base, k):
        if k == 2:
            raise OSError("disk full")  # as the level-2 write would fail
        return real(root, base, k)

    monkeypatch.setattr(ms, "_write_multiscales", fail_at_level_2)
    out = tmp_path / "p.zarr"
    img = bi.from_array(rng.random((4096, 64)), chunks=1024)  # levels 1 (2048) and 2 (1024)
    with pytest.raises(OSError, match="disk full"):
        bi.to_zarr(img, out, pyramid=True, progress=False)
    info = bi.store_info(out)
    assert info["complete"] is False
    monkeypatch.setattr(ms, "_write_multiscales", real)
    bi.to_zarr(img, out, pyramid=True, resume=True, progress=False)
    assert bi.store_info(out)["complete"] is True


def test_info_names_an_interrupted_level(tmp_path):
    out = tmp_path / "p.zarr"
    bi.to_zarr(bi.from_array(rng.random((64, 64)), chunks=16), out, progress=False)
    bi.write_pyramid(out, max_size=16, progress=False)
    group = zarr.open_group(str(out / "levels" / "2"), mode="r+")
    group.attrs["bigimg_complete"] = False
    desc = json.loads(bigimg("info", str(out), "--json").stdout)
    assert "pyramid level(s) [2] interrupted" in desc["damaged"]
    assert desc["levels"] == [1]


def test_no_cli_command_leaves_files_behind_on_refusal(tmp_path):
    before = set(os.listdir(tmp_path))
    bigimg("quicklook", str(tmp_path / "none.zarr"), str(tmp_path / "q.png"))
    assert set(os.listdir(tmp_path)) == before


# ------------------------------------------------ stores written by other tools
A = np.arange(12.0).reshape(3, 4)


@pytest.mark.parametrize(
    "write",
    [
        lambda p: __import__("xarray").Dataset({"image": (("y", "x"), A)}).to_zarr(p),
        lambda p: __import__("xarray").Dataset({"t": (("x", "y"), A.T)}).to_zarr(p),
        lambda p: __import__("xarray").Dataset({"t": (("x", "y"), A.T)}).to_zarr(p, zarr_format=2),
        lambda p: zarr.save_array(p, A, zarr_format=2),
        lambda p: zarr.create_array(p, data=A.T, dimension_names=("x", "y")),
    ],
    ids=["xarray-image-var", "xarray-swapped-dims", "xarray-zarr-v2", "bare-v2", "bare-v3-named"],
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_stores_written_by_other_tools_open_by_dim_name(tmp_path, write):
    path = str(tmp_path / "other.zarr")
    write(path)
    for chunks in ("auto", {"y": 2}):
        img = bi.open_image(path, chunks=chunks)
        assert img.dims == ("y", "x", "band")
        np.testing.assert_array_equal(img.values[..., 0], A)


def test_a_second_writer_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "n.zarr"
    args = ["noise", str(out), "--shape", "16384x16384", "--length-scale", "40"]
    args += ["--chunks", "512"]  # 1 GiB: still writing when the second writer is refused
    first = subprocess.Popen(
        [sys.executable, "-m", "bigimg", *args, "--workers", "1", "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "image" / "c").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        second = bigimg(*args[:-2], "--chunks", "1024", "--overwrite", "--quiet")
        assert_one_line_error(second, "being written by another bigimg process")
        assert first.poll() is None  # the first write goes on, untouched
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # the kernel released the killed writer's lock: another write may start at once
    assert bi.store_info(out)["complete"] is False
    bi.to_zarr(bi.from_array(np.zeros((8, 8))), out, overwrite=True, progress=False)
    assert bi.store_info(out)["complete"] is True


def test_tiffs_are_read_by_their_axes(tmp_path):
    tifffile.imwrite(tmp_path / "sep.tif", RGB.transpose(2, 0, 1), planarconfig="separate")
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([RGB, RGB[::-1]]), photometric="rgb")
    sep = bi.open_image(tmp_path / "sep.tif", chunks={"y": 128})
    assert sep.dims == ("y", "x", "band")
    np.testing.assert_array_equal(sep.values, RGB)
    stack = bi.open_image(tmp_path / "stack.tif")
    assert stack.dims == ("image", "y", "x", "band")
    np.testing.assert_array_equal(stack.values, np.stack([RGB, RGB[::-1]]))


def test_open_zarr_refuses_chunks_for_an_unknown_dim(store):
    with pytest.raises(ValueError, match="unknown dim"):
        bi.open_zarr(store, chunks={"q": 3})


def test_files_get_the_usual_permissions(tmp_path):
    from bigimg.files import new_file

    with new_file(tmp_path / "a.txt") as tmp:
        tmp.write_text("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~mask


def test_info_on_a_zarr_v2_store_with_an_image_variable(tmp_path):
    import xarray as xr

    path = tmp_path / "v2.zarr"
    xr.Dataset({"image": (("y", "x"), A)}).to_zarr(path, zarr_format=2)
    desc = json.loads(bigimg("info", str(path), "--json").stdout)
    assert desc["dims"] == ["y", "x"] and desc["complete"] is False


def test_main_in_process_leaves_the_environment_alone(tmp_path, monkeypatch):
    from bigimg.cli import main

    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    before = (dict(os.environ), signal.getsignal(signal.SIGINT))
    with pytest.raises(SystemExit):
        main(["info", str(tmp_path / "none.zarr")])
    assert (dict(os.environ), signal.getsignal(signal.SIGINT)) == before
