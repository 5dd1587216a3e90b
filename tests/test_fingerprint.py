"""Issue 22: a resume knows what it computed, whichever way the image reached ``to_zarr``.

Every way in (``open_image``, ``open_zarr``, ``from_array`` of numpy and of dask, an op
chain, ``bi.plan``, a config, a noise source) is written, the store is left as a killed
run leaves it (incomplete), and then resumed: with the same computation it completes, with
a changed op, parameter, input file or in-memory data it is refused, naming what differs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

import bigimg as bi
from bigimg.io.fingerprint import of_computation
from tests.helpers import bigimg

rng = np.random.default_rng(22)
A = (rng.random((96, 80, 3)) * 255).astype("uint8")
B = A[::-1].copy()
CHUNKS = {"y": 48, "x": 40}


def _killed(out: Path, drop: int = 2) -> None:
    """Leave ``out`` as a run killed part-way leaves it: incomplete, some chunks missing."""
    group = zarr.open_group(str(out), mode="r+")
    group.attrs["bigimg_complete"] = False
    chunks = sorted(p for p in (out / "image" / "c").rglob("*") if p.is_file())
    for p in chunks[:drop]:
        p.unlink()


def _resume(write, out: Path) -> bi.WriteResult:
    return write(out, resume=True)


@pytest.fixture
def tif(tmp_path) -> Path:
    path = tmp_path / "in.tif"
    tifffile.imwrite(path, A, photometric="rgb")
    return path


@pytest.fixture
def zstore(tmp_path) -> Path:
    path = tmp_path / "in.zarr"
    bi.to_zarr(bi.from_array(A, chunks=CHUNKS), path, progress=False)
    return path


def _to_zarr(img):
    return lambda out, **kw: bi.to_zarr(img, out, progress=False, **kw)


# each way in: (name, build(variant) -> writer); variants: the same, or one change each
def _ways(tif: Path, zstore: Path):
    def open_image(v):
        img = bi.open_image(tif, chunks=CHUNKS, nodata=0)
        if v == "param":
            return _to_zarr(bi.gaussian_filter(img, 3))
        if v == "op":
            return _to_zarr(bi.gaussian_stretch(img))
        return _to_zarr(bi.gaussian_filter(img, 2))

    def open_zarr(v):
        img = bi.open_zarr(zstore)
        return _to_zarr(bi.gaussian_filter(img, 3 if v == "param" else 2))

    def from_numpy(v):
        data = B if v == "data" else A
        return _to_zarr(bi.gaussian_filter(bi.from_array(data, chunks=CHUNKS), 2))

    def from_dask(v):
        data = da.from_array(B if v == "data" else A, chunks=(48, 40, 3))
        return _to_zarr(bi.from_array(data).astype("float32") * (2 if v == "param" else 1))

    def planned(v):
        img = bi.from_array(B if v == "data" else A, chunks=CHUNKS)
        steps = [{"op": "gaussian_filter", "sigma": 3 if v == "param" else 2}]
        steps.append({"op": "equalize_hist"})
        p = bi.plan(img, steps)
        return lambda out, **kw: p.to_zarr(out, progress=False, **kw)

    def config(v):
        steps = [{"op": "gaussian_filter", "sigma": 3 if v == "param" else 2}]
        p = bi.plan(tif, steps, chunks=CHUNKS)
        return lambda out, **kw: p.to_zarr(out, progress=False, **kw)

    def noise(v):
        img = bi.correlated_noise((96, 80), length_scale=4, seed=2 if v == "data" else 1, chunks=48)
        return _to_zarr(img * (3 if v == "param" else 1))

    return {
        "open_image": (open_image, ["param", "op", "file"]),
        "open_zarr": (open_zarr, ["param", "file"]),
        "from_numpy": (from_numpy, ["data"]),
        "from_dask": (from_dask, ["data", "param"]),
        "plan_of_an_image": (planned, ["data", "param"]),
        "config": (config, ["param", "file"]),
        "noise": (noise, ["data", "param"]),
    }


WAYS = ["open_image", "open_zarr", "from_numpy", "from_dask", "plan_of_an_image", "config", "noise"]


@pytest.mark.parametrize("way", WAYS)
def test_every_way_into_to_zarr_refuses_a_resume_of_another_computation(way, tif, zstore):
    build, variants = _ways(tif, zstore)[way]
    out = tif.parent / "out.zarr"
    build("same")(out)
    expected = bi.open_zarr(out).values
    for v in variants:
        _killed(out)
        if v == "file":  # the input rewritten with other data, same shape and options
            if way == "open_zarr":
                bi.to_zarr(bi.from_array(B, chunks=CHUNKS), zstore, overwrite=True, progress=False)
            else:
                tifffile.imwrite(tif, B, photometric="rgb")
        with pytest.raises(ValueError, match="written from another computation"):
            _resume(build(v), out)
        if v == "file":  # back to the original input (a new file: its identity changed)
            if way == "open_zarr":
                bi.to_zarr(bi.from_array(A, chunks=CHUNKS), zstore, overwrite=True, progress=False)
            else:
                tifffile.imwrite(tif, A, photometric="rgb")
            build("same")(out, overwrite=True)
            continue
        res = _resume(build("same"), out)  # the same computation finishes it
        assert res.chunks_written > 0 and bi.store_info(out)["complete"]
        np.testing.assert_array_equal(bi.open_zarr(out).values, expected)


def test_a_killed_resume_with_another_sigma_is_refused_not_mixed(tmp_path):
    """Issue 22 item 2: killed part-way, resumed with another sigma: it mixed the two."""
    img = bi.from_array(A.astype("float32"), chunks={"y": 16, "x": 16})
    out = tmp_path / "a.zarr"
    bi.to_zarr(bi.gaussian_filter(img, 2), out, progress=False)
    _killed(out, drop=20)
    with pytest.raises(ValueError, match="graph: the operations, their parameters"):
        bi.to_zarr(bi.gaussian_filter(img, 5), out, resume=True, progress=False)
    assert not bi.store_info(out)["complete"]
    bi.to_zarr(bi.gaussian_filter(img, 2), out, resume=True, progress=False)
    ref = bi.gaussian_filter(img, 2).values
    np.testing.assert_array_equal(bi.open_zarr(out).values, ref)


def test_a_complete_store_of_another_computation_is_refused(tmp_path):
    """Issue 22 item 2: '0 written, 4 skipped' and the sigma-2 data stayed."""
    img = bi.from_array(A.astype("float32"), chunks=CHUNKS)
    out = tmp_path / "a.zarr"
    bi.to_zarr(bi.gaussian_filter(img, 2), out, progress=False)
    with pytest.raises(ValueError, match="written from another computation"):
        bi.to_zarr(bi.gaussian_filter(img, 5), out, resume=True, progress=False)
    other = bi.from_array(B.astype("float32"), chunks=CHUNKS)
    with pytest.raises(ValueError, match="written from another computation"):
        bi.to_zarr(bi.gaussian_filter(other, 2), out, resume=True, progress=False)


def test_the_same_chain_resumes_in_a_new_process(tmp_path, tif):
    """The graph's token is the same in every process (a notebook restarted after a kill)."""
    script = (
        "import sys, bigimg as bi\n"
        f"img = bi.open_image({str(tif)!r}, chunks={CHUNKS!r}, nodata=0)\n"
        "out = bi.gaussian_stretch(bi.gaussian_filter(img, 2), n=2)\n"
        "out = bi.equalize_hist(out.bigimg.coarsen_mean({'y': 2, 'x': 2}), exclude=[0])\n"
        f"r = bi.to_zarr(out, {str(tmp_path / 'o.zarr')!r}, resume='resume' in sys.argv,"
        " progress=False)\n"
        "print(r.chunks_written, r.chunks_skipped)\n"
    )
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    _killed(tmp_path / "o.zarr", drop=1)
    again = subprocess.run([sys.executable, "-c", script, "resume"], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["1", "3"]  # 4 chunks: 1 lost, 3 kept


def test_plan_of_another_in_memory_image_is_refused(tmp_path):
    """Issue 22 item 3: every numpy-backed image was recorded as the source 'in-memory'."""
    steps = [{"op": "gaussian_filter", "sigma": 1}]
    out = tmp_path / "p.zarr"
    bi.plan(xr.DataArray(A, dims=("y", "x", "band")), steps).to_zarr(out, progress=False)
    _killed(out, drop=0)
    other = bi.plan(xr.DataArray(B, dims=("y", "x", "band")), steps)
    with pytest.raises(ValueError, match="graph: the operations"):
        other.to_zarr(out, resume=True, progress=False)


def test_open_zarr_then_to_zarr_records_and_checks_its_own_input(tmp_path, zstore):
    """Issue 22 items 4 and 5: the upstream store's provenance was taken for the output's."""
    out = tmp_path / "o.zarr"
    bi.to_zarr(bi.gaussian_filter(bi.open_zarr(zstore), 1), out, progress=False)
    attrs = xr.open_zarr(out).attrs
    assert attrs["bigimg_source"] == str(zstore)
    fp = attrs["bigimg_fingerprint"]
    assert list(fp["reads"]) == [str(zstore)] and fp["reads"][str(zstore)]
    var_attrs = xr.open_zarr(out)["image"].attrs
    assert not [k for k in var_attrs if k.startswith("bigimg_") and k != "bigimg_nodata"]
    _killed(out, drop=1)
    assert xr.open_zarr(out).attrs["bigimg_complete"] is False
    assert "bigimg_complete" not in xr.open_zarr(out)["image"].attrs
    # the input changes: the stale output must not be finished from it
    bi.to_zarr(bi.from_array(B, chunks=CHUNKS), zstore, overwrite=True, progress=False)
    with pytest.raises(ValueError, match=r"inputs changed or differ: .*in.zarr.*changed"):
        bi.to_zarr(bi.gaussian_filter(bi.open_zarr(zstore), 1), out, resume=True, progress=False)


def test_a_chain_of_stores_never_carries_provenance(tmp_path, zstore):
    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    bi.to_zarr(bi.open_zarr(zstore).bigimg.gaussian_filter(sigma=1), a, progress=False)
    bi.to_zarr(bi.open_zarr(a) * 2, b, progress=False)
    group = json.loads((b / "zarr.json").read_text())["attributes"]
    assert group["bigimg_source"] == str(a)
    assert json.loads(group["bigimg_config"]) is None  # not a's (which records no config)
    image = json.loads((b / "image" / "zarr.json").read_text())["attributes"]
    assert not {"bigimg_source", "bigimg_complete", "bigimg_fingerprint"} & set(image)


def test_fingerprint_is_the_graph_and_what_it_reads(tif):
    img = bi.open_image(tif, chunks=CHUNKS)
    fp = of_computation(bi.gaussian_filter(img, 2))
    assert fp == of_computation(bi.gaussian_filter(bi.open_image(tif, chunks=CHUNKS), 2))
    assert fp != of_computation(bi.gaussian_filter(bi.open_image(tif, chunks=24), 2))
    assert list(fp["reads"]) == [str(tif.resolve())]
    assert of_computation(xr.DataArray(A)) != of_computation(xr.DataArray(B))


# ------------------------------------------------ item 9: stray files in chunk folders
@pytest.mark.parametrize("stray", [".DS_Store", "0.bak", "0/.DS_Store", "0/1/._0"])
def test_info_ignores_files_that_are_not_chunks(tmp_path, zstore, stray):
    path = zstore / "image" / "c" / stray
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"Finder")
    info = bi.store_info(zstore)
    assert info["chunks_stored"] == info["chunks_total"] and info["damaged"] is None
    proc = bigimg("info", str(zstore))
    assert proc.returncode == 0 and "complete" in proc.stdout, proc.stderr
    np.testing.assert_array_equal(bi.open_zarr(zstore).values, A)
    out = tmp_path / "r.zarr"
    bi.to_zarr(bi.open_zarr(zstore), out, progress=False)
    _killed(out, drop=1)
    (out / "image" / "c" / ".DS_Store").write_bytes(b"Finder")
    assert bi.to_zarr(bi.open_zarr(zstore), out, resume=True, progress=False).chunks_written == 1


def test_a_user_write_into_an_input_s_pyramid_level_is_refused(tmp_path):
    """Hostile pass: the exemption that lets write_pyramid write levels inside the store it
    reads also let a user replace an input's level with other data."""
    path = tmp_path / "p.zarr"
    img = bi.from_array(A.astype("float32"), chunks=CHUNKS)
    bi.to_zarr(img, path, progress=False)
    bi.write_pyramid(path, max_size=40, progress=False)
    before = bi.open_zarr(path, level=1).values
    with pytest.raises(ValueError, match="overlaps the input"):
        bi.to_zarr(bi.open_zarr(path) * 2, path / "levels" / "1", overwrite=True, progress=False)
    np.testing.assert_array_equal(bi.open_zarr(path, level=1).values, before)
