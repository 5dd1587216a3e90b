"""bigimg.noise: correlated noise against a global scipy.signal.fftconvolve.

Statistical tests use fixed seeds (deterministic) and tolerances of about
4-5 standard errors of the estimate, stated next to each assertion.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.signal
import scipy.stats
import skimage.data
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import bigimg as bi
from bigimg import noise as noise_mod
from bigimg.noise import _white_noise, add_noise, correlated_noise
from bigimg.pipeline import parse_config
from tests.helpers import raise_if_dask_computes
from tests.strategies import chunkings

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


@pytest.fixture(autouse=True)
def _sync_scheduler():
    with dask.config.set(scheduler="sync"):
        yield


def _gauss(ls, truncate=4.0):
    r = int(truncate * ls + 0.5)
    return np.exp(-0.5 * (np.arange(-r, r + 1) / ls) ** 2)


def _reference(seed, shape, ls_y, ls_x, *, truncate=4.0, mean=0.0, std=1.0):
    """One global fftconvolve of the same white noise over the padded domain."""
    ky, kx = _gauss(ls_y, truncate), _gauss(ls_x, truncate)
    ry, rx = len(ky) // 2, len(kx) // 2
    white = _white_noise(seed, ("y", "x"), (-ry, -rx), (shape[0] + 2 * ry, shape[1] + 2 * rx))
    kernel = np.outer(ky, kx)
    kernel /= np.sqrt(np.sum(kernel**2))
    return mean + std * scipy.signal.fftconvolve(white.astype(np.float64), kernel, mode="valid")


# ---------------------------------------------------------------- white noise kernel
def test_white_noise_is_a_function_of_the_global_index():
    big = _white_noise(7, ("y", "x"), (-20, -35), (60, 90))
    for y0, x0, ny, nx in [(-20, -35, 1, 1), (-3, -9, 11, 17), (0, 0, 40, 55), (5, -1, 3, 1)]:
        part = _white_noise(7, ("y", "x"), (y0, x0), (ny, nx))
        np.testing.assert_array_equal(part, big[y0 + 20 : y0 + 20 + ny, x0 + 35 : x0 + 35 + nx])
    # the dims' order only transposes
    np.testing.assert_array_equal(_white_noise(7, ("x", "y"), (-35, -20), (90, 60)), big.T)


def test_white_noise_negative_indices_and_other_dims_are_distinct():
    a = _white_noise(1, ("y", "x"), (0, 0), (16, 16))
    assert not np.any(a == _white_noise(1, ("y", "x"), (-16, 0), (16, 16)))
    assert not np.any(a == _white_noise(1, ("y", "x"), (0, -16), (16, 16)))
    assert not np.any(a == _white_noise(1, ("y", "x"), (0, 0), (16, 16))[::-1])  # sanity
    banded = _white_noise(1, ("y", "x", "band"), (0, 0, -1), (16, 16, 3))
    np.testing.assert_array_equal(banded[..., 1], a)  # band 0 is the 2-D field
    assert not np.any(banded[..., 0] == a) and not np.any(banded[..., 2] == a)
    stack = _white_noise(1, ("image", "y", "x"), (0, 0, 0), (2, 16, 16))
    np.testing.assert_array_equal(stack[0], a)
    assert not np.any(stack[1] == a)
    assert not np.any(_white_noise(2, ("y", "x"), (0, 0), (16, 16)) == a)


def test_white_noise_is_standard_normal_and_uncorrelated():
    w = _white_noise(3, ("y", "x"), (-100, -100), (400, 500)).astype(np.float64)
    assert w.dtype == np.float64 and w.shape == (400, 500)
    # KS against N(0, 1) on 200k values: p-value of a true N(0,1) sample is uniform
    assert scipy.stats.kstest(w.ravel(), "norm").pvalue > 1e-3
    se = 1 / np.sqrt(w.size)  # standard error of a correlation at zero truth
    for a, b in [(w[:, 1:], w[:, :-1]), (w[1:], w[:-1]), (w[:, 2:], w[:, :-2])]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 * se


# ---------------------------------------------------------------- against scipy
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    ("shape", "length_scale", "chunks"),
    [
        ((64, 80), 3.0, {"y": 16, "x": 32}),
        ((50, 37), {"y": 2.0, "x": 5.5}, 7),  # chunks smaller than the radius (22)
        ((40, 30), 15.0, 8),  # radius 60: larger than the chunks and the image
    ],
)
def test_matches_global_fftconvolve(dtype, shape, length_scale, chunks):
    ls = length_scale if isinstance(length_scale, dict) else {"y": length_scale, "x": length_scale}
    out = correlated_noise(
        shape, length_scale=length_scale, seed=11, chunks=chunks, mean=2.0, std=0.5, dtype=dtype
    )
    assert out.dims == ("y", "x") and out.shape == shape and out.dtype == dtype
    ref = _reference(11, shape, ls["y"], ls["x"], mean=2.0, std=0.5)
    np.testing.assert_allclose(out.values, ref, rtol=0, atol=1e-5)


def test_tiles_agree_across_seams(monkeypatch):
    """With a tiny tile budget the field is many tiles; seams must not show."""
    monkeypatch.setattr(noise_mod, "_TILE_PIXELS", 32 * 32)
    out = correlated_noise((100, 90), length_scale=2.5, seed=4, dtype="float64")
    assert len(out.chunks[0]) > 2 and len(out.chunks[1]) > 2
    np.testing.assert_allclose(out.values, _reference(4, (100, 90), 2.5, 2.5), rtol=0, atol=1e-10)


def test_band_dim_gets_independent_fields():
    out = correlated_noise({"y": 30, "x": 40, "band": 3}, length_scale=4, seed=9, chunks=16)
    assert out.dims == ("y", "x", "band")
    a = out.values
    for b in range(3):
        white = _white_noise(9, ("y", "x", "band"), (-16, -16, b), (62, 72, 1))[..., 0]
        k = np.outer(_gauss(4), _gauss(4))
        ref = scipy.signal.fftconvolve(white.astype(float), k / np.sqrt((k**2).sum()), "valid")
        np.testing.assert_allclose(a[..., b], ref, atol=1e-5)
    assert abs(np.corrcoef(a[..., 0].ravel(), a[..., 1].ravel())[0, 1]) < 0.3


# ---------------------------------------------------------------- chunk invariance
@settings(deadline=None)
@given(
    data=st.data(),
    length_scale=st.sampled_from([0.7, 3.0, 9.0]),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_chunking_never_changes_a_bit(data, length_scale, dtype):
    """Chunk boundaries anywhere, also through the kernel (radius up to 36 > chunks)."""
    shape = (45, 38)
    chunks = data.draw(chunkings({"y": 45, "x": 38}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(noise_mod, "_TILE_PIXELS", 16 * 16)  # several FFT tiles per axis
        whole = correlated_noise(shape, length_scale=length_scale, seed=5, chunks=-1, dtype=dtype)
        out = correlated_noise(shape, length_scale=length_scale, seed=5, chunks=chunks, dtype=dtype)
        assert out.chunks == (chunks["y"], chunks["x"])
        np.testing.assert_array_equal(out.values, whole.values)


def test_one_pixel_chunks(monkeypatch):
    monkeypatch.setattr(noise_mod, "_TILE_PIXELS", 8 * 8)
    whole = correlated_noise((17, 13), length_scale=2.0, seed=5, chunks=-1)
    np.testing.assert_array_equal(
        correlated_noise((17, 13), length_scale=2.0, seed=5, chunks=1).values, whole.values
    )


def test_same_field_on_every_scheduler_and_tiling_budget(monkeypatch):
    field = correlated_noise((70, 64), length_scale=3, seed=8, chunks=13)
    ref = field.values
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(field.compute().values, ref)
    np.testing.assert_array_equal(correlated_noise((70, 64), length_scale=3, seed=8).values, ref)


def test_on_local_cluster(client):
    field = correlated_noise((96, 80), length_scale=4, seed=2, chunks=24)
    got = client.compute(field.data).result()
    with dask.config.set(scheduler="sync"):
        np.testing.assert_array_equal(got, field.data.compute())


def test_laziness():
    img = bi.from_array(np.zeros((64, 64)), chunks=16)
    with raise_if_dask_computes():
        field = correlated_noise((4096, 4096), length_scale=50, seed=1, chunks=512)
        noisy = add_noise(img, length_scale=3, seed=1)
    assert field.chunks[0][0] == 512 and noisy.shape == img.shape


# ---------------------------------------------------------------- statistics
def test_seeds_differ():
    a = correlated_noise((64, 64), length_scale=2, seed=1).values
    b = correlated_noise((64, 64), length_scale=2, seed=2).values
    # 64x64 pixels, ~64**2 / (4 pi 2**2) ~ 80 independent patches: se ~ 0.11
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.4
    np.testing.assert_array_equal(a, correlated_noise((64, 64), length_scale=2, seed=1).values)


def test_per_pixel_mean_and_std_across_seeds():
    n = 200
    fields = np.stack(
        [
            correlated_noise((20, 24), length_scale=2, seed=s, mean=3.0, std=2.0).values
            for s in range(n)
        ]
    ).astype(np.float64)
    mean, std = fields.mean(axis=0), fields.std(axis=0, ddof=1)
    # per pixel: se(mean) = 2/sqrt(200) = 0.14, se(std) ~ 2/sqrt(400) = 0.1; tolerance 5 se
    np.testing.assert_allclose(mean, 3.0, atol=0.71)
    np.testing.assert_allclose(std, 2.0, atol=0.5)
    # averaged over the 480 pixels (~30 independent): tolerance ~5 se
    assert abs(mean.mean() - 3.0) < 0.15 and abs(std.mean() - 2.0) < 0.1


def test_autocorrelation_matches_theory():
    ls, lags = 4.0, np.arange(0, 17)
    acf_y, acf_x = np.zeros(len(lags)), np.zeros(len(lags))
    seeds = range(4)
    for seed in seeds:
        f = correlated_noise((512, 512), length_scale=ls, seed=seed, dtype="float64").values
        for i, r in enumerate(lags):
            acf_x[i] += np.mean(f[:, r:] * f[:, : f.shape[1] - r]) / len(seeds)
            acf_y[i] += np.mean(f[r:] * f[: f.shape[0] - r]) / len(seeds)
    theory = np.exp(-(lags**2) / (4 * ls**2))
    # se of one lag ~ sqrt(2 pi ls^2 / 512^2) / sqrt(4 seeds) ~ 0.01: tolerance 0.04
    np.testing.assert_allclose(acf_x, theory, atol=0.04)
    np.testing.assert_allclose(acf_y, theory, atol=0.04)


def test_border_variance_equals_centre_variance():
    ls = 3.0
    stack = correlated_noise(
        {"image": 400, "y": 21, "x": 21}, length_scale={"y": ls, "x": ls}, seed=6, dtype="float64"
    ).values
    var = stack.var(axis=0)
    edges = np.concatenate([var[0], var[-1], var[:, 0], var[:, -1]])
    centre = var[8:13, 8:13]
    # se of one pixel's variance over 400 samples: sqrt(2/400) = 0.07; an edge of a
    # zero-padded convolution would have variance ~0.5 and a corner ~0.25
    assert np.all(np.abs(var[[0, 0, -1, -1], [0, -1, 0, -1]] - 1) < 0.35)  # corners, 5 se
    assert abs(edges.mean() - 1) < 0.1 and abs(centre.mean() - 1) < 0.1
    assert abs(edges.mean() - centre.mean()) < 0.15


# ---------------------------------------------------------------- add_noise
def test_add_noise_on_a_real_image():
    cam = skimage.data.camera()[:128, :160]
    img = bi.from_array(cam, chunks={"y": 50, "x": 64})
    img = img.assign_coords(y=np.arange(128) * 0.5, x=np.arange(160) * 0.5)
    img.attrs["units"] = "DN"
    out = img.bigimg.add_noise(length_scale=3, seed=4, std=10.0)
    assert out.dtype == np.float32 and out.chunks == img.chunks
    assert out.attrs["units"] == "DN"
    xr.testing.assert_identical(out.coords.to_dataset(), img.coords.to_dataset())
    field = correlated_noise((128, 160, 1), length_scale=3, seed=4, std=10.0).values
    np.testing.assert_array_equal(out.values, cam[..., None].astype(np.float32) + field)


def test_add_noise_keeps_nodata():
    a = np.ones((32, 32), np.float32)
    a[:5] = np.nan
    out = add_noise(bi.from_array(a, chunks=8), length_scale=2).values
    assert np.isnan(out[:5]).all() and np.isfinite(out[5:]).all()


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"length_scale": 0}, ValueError, "length_scale must be > 0"),
        ({"length_scale": -2.0}, ValueError, "length_scale must be > 0"),
        ({"length_scale": float("nan")}, ValueError, "length_scale must be > 0"),
        ({"length_scale": float("inf")}, ValueError, "length_scale"),
        ({"length_scale": {}}, ValueError, "length_scale must name at least one dim"),
        ({"length_scale": {"y": 0, "x": 3}}, ValueError, r"length_scale\['y'\] must be > 0"),
        ({"length_scale": {"z": 3}}, ValueError, "length_scale names unknown dim"),
        ({"length_scale": "big"}, TypeError, "length_scale"),
        ({"shape": (0, 10)}, ValueError, r"shape\['y'\] must be a positive int"),
        ({"shape": (10, -3)}, ValueError, r"shape\['x'\] must be a positive int"),
        ({"shape": (10.5, 10)}, TypeError, r"shape\['y'\] must be an int"),
        ({"shape": (10,)}, ValueError, "shape must have 2"),
        ({"shape": {"y": 10}}, ValueError, "shape must name dims 'y' and 'x'"),
        ({"shape": {"y": 10, "x": 10, "t": 2}}, ValueError, "shape names unknown dim"),
        ({"shape": "10x10"}, TypeError, "shape must be"),
        ({"chunks": 0}, ValueError, "chunks"),
        ({"chunks": {"y": -4}}, ValueError, "chunks"),
        ({"chunks": {"t": 4}}, ValueError, "chunks names unknown dim"),
        ({"dtype": "int16"}, ValueError, "dtype must be a floating dtype"),
        ({"dtype": "nonsense"}, TypeError, "dtype"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"std": -1.0}, ValueError, "std must be >= 0"),
        ({"mean": float("nan")}, ValueError, "mean must be finite"),
        ({"truncate": 0}, ValueError, "truncate must be > 0"),
    ],
)
def test_validation(kwargs, error, match):
    args = {"shape": (32, 32), "length_scale": 2.0, **kwargs}
    with pytest.raises(error, match=match):
        correlated_noise(args.pop("shape"), **args)


def test_add_noise_validation():
    with pytest.raises(TypeError, match="img must be an xarray.DataArray"):
        add_noise(np.zeros((4, 4)), length_scale=1)
    img = xr.DataArray(np.zeros((2, 4, 4)), dims=("t", "y", "x"))
    with pytest.raises(ValueError, match="img has dim"):
        add_noise(img, length_scale=1)


# ---------------------------------------------------------------- pipeline + CLI
def test_config(tmp_path):
    data = tomllib.loads((CONFIGS / "noise.toml").read_text())
    data["input"]["noise"]["shape"] = [96, 80]
    data["input"]["chunks"] = {"y": 32, "x": 48}
    pipeline = parse_config(data, base=tmp_path)
    result = pipeline.run(progress=False)
    out = bi.open_zarr(result.path)
    assert out.dims == ("y", "x", "band") and out.chunks[:2] == ((32,) * 3, (48, 32))
    src = data["input"]["noise"]
    step = data["steps"][0]
    expected = (
        correlated_noise(
            (96, 80), length_scale=src["length_scale"], seed=src["seed"], std=src["std"]
        ).values
        + correlated_noise(
            (96, 80), length_scale=step["length_scale"], seed=step["seed"], std=step["std"]
        ).values
    )
    np.testing.assert_array_equal(out.values[..., 0], expected)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "bigimg", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_cli_writes_a_complete_store(tmp_path, local_client):
    """On the session's LocalCluster via --scheduler (no worker start-up in the subprocess)."""
    path = tmp_path / "noise.zarr"
    args = ["noise", str(path), "--shape", "96x80", "--length-scale", "3", "--seed", "5"]
    res = _cli(
        *args,
        "--chunks",
        "32",
        "--mean",
        "1",
        "--std",
        "2",
        "--quiet",
        "--scheduler",
        local_client.scheduler.address,
    )
    assert res.returncode == 0, res.stderr
    info = bi.store_info(path)
    assert info["complete"] and info["chunks_stored"] == info["chunks_total"] == 9
    out = bi.open_zarr(path)
    assert out.dims == ("y", "x") and out.attrs["bigimg_source"] == "correlated_noise"
    expected = correlated_noise((96, 80), length_scale=3, seed=5, mean=1, std=2).values
    np.testing.assert_array_equal(out.values, expected)
    shutil.rmtree(path)


def test_cli_bad_shape_in_a_subprocess(tmp_path):
    res = _cli(
        "noise", str(tmp_path / "n.zarr"), "--shape", "96y80", "--length-scale", "3", "--quiet"
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "--shape" in lines[0], res.stderr
    assert not (tmp_path / "n.zarr").exists()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--shape", "0x80", "--length-scale", "3"], "--shape"),
        (["--shape", "96x80x1x1", "--length-scale", "3"], "--shape"),
        (["--shape", "96x80", "--length-scale", "-1"], "length_scale must be > 0"),
        (["--shape", "96x80", "--length-scale", "2", "--std", "-1"], "std must be >= 0"),
        (["--shape", "96x80"], "--length-scale"),
    ],
)
def test_cli_bad_input(tmp_path, capsys, args, match):
    from bigimg.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["noise", str(tmp_path / "n.zarr"), *args, "--quiet"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], lines
    assert not (tmp_path / "n.zarr").exists()


# ---------------------------------------------------------------- issue 14: bounded graphs and tasks
def _no_graph(*args, **kwargs):
    raise AssertionError("the graph was built before the input was refused")


def test_huge_shape_is_refused_before_building_the_graph(monkeypatch):
    monkeypatch.setattr(noise_mod, "_correlated_dask", _no_graph)
    with pytest.raises(ValueError, match=r"shape \{'y': 1099511627776.*tiles.*limit of 1,048,576"):
        correlated_noise((2**40, 2**40), length_scale=5)


def test_too_many_chunks_are_refused_before_building_the_graph(monkeypatch):
    monkeypatch.setattr(noise_mod, "_correlated_dask", _no_graph)
    with pytest.raises(ValueError, match=r"chunks=16 .* 16,777,216 chunks.*use larger chunks"):
        correlated_noise((65536, 65536), length_scale=5, chunks=16)
    with pytest.raises(ValueError, match=r"chunks=\{'x': 1\} .* 1,048,577 chunks"):
        correlated_noise((256, 2**20 + 1), length_scale=5, chunks={"x": 1})


def test_huge_but_reasonable_shape_builds_lazily():
    with raise_if_dask_computes():
        field = correlated_noise((65536, 65536), length_scale=5, chunks=4096)
    assert field.shape == (65536, 65536) and field.data.npartitions == 256


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"length_scale": 1e6}, r"length_scale=.*1000000.0.*truncate=4.0.*radius.*limit of 2 GiB"),
        ({"length_scale": {"x": 1e6}}, r"length_scale=.*truncate=4.0.*limit of 2 GiB"),
        ({"length_scale": 1e308}, r"length_scale\['y'\]=1e\+308 with truncate=4.0 .*infinite"),
        ({"length_scale": 2.0, "truncate": 1e308}, "infinite kernel radius"),
        ({"length_scale": 100.0, "truncate": 1e6}, r"truncate=1000000.0.*limit of 2 GiB"),
    ],
)
def test_kernel_too_large_for_a_task_is_refused_up_front(monkeypatch, kwargs, match):
    monkeypatch.setattr(noise_mod, "_correlated_dask", _no_graph)
    with pytest.raises(ValueError, match=match):
        correlated_noise((1000, 1000), **kwargs)


def test_large_kernel_on_a_small_image_is_still_allowed():
    """The task size counts the tile actually used, not a full 2048 px tile."""
    field = correlated_noise((4, 5), length_scale=100, seed=2, dtype="float64")
    np.testing.assert_allclose(field.values, _reference(2, (4, 5), 100, 100), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"length_scale": float("nan")}, ValueError, "length_scale"),
        ({"length_scale": float("inf")}, ValueError, "length_scale"),
        ({"length_scale": 0.0}, ValueError, "length_scale must be > 0"),
        ({"length_scale": -2.0}, ValueError, "length_scale must be > 0"),
        ({"std": float("nan")}, ValueError, "std must be finite"),
        ({"std": float("inf")}, ValueError, "std must be finite"),
        ({"truncate": float("nan")}, ValueError, "truncate must be finite"),
        ({"truncate": -1.0}, ValueError, "truncate must be > 0"),
        ({"mean": float("-inf")}, ValueError, "mean must be finite"),
    ],
)
def test_non_finite_and_non_positive_parameters(kwargs, error, match):
    args = {"length_scale": 2.0, **kwargs}
    with pytest.raises(error, match=match):
        correlated_noise((32, 32), **args)


def test_cli_huge_length_scale_leaves_no_store(tmp_path, capsys):
    from bigimg.cli import main

    out = tmp_path / "n.zarr"
    with pytest.raises(SystemExit) as exit_info:
        main(["noise", str(out), "--shape", "1000x1000", "--length-scale", "1e6", "--quiet"])
    assert exit_info.value.code == 2
    assert "length_scale" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("scale", [1e300, {"y": 1e300}, 1e200, 1e160])
def test_astronomic_length_scale_is_refused_with_its_sizes(scale):
    """Issue 22, item 8: the message's own ``bytes / 2**30`` raised OverflowError."""
    with pytest.raises(ValueError, match=r"kernel radius of \{'y': [34]\.\d\de\d+.*GiB\), more"):
        correlated_noise((64, 64), length_scale=scale)
    with pytest.raises(ValueError, match="use a smaller length_scale"):
        add_noise(bi.from_array(np.zeros((8, 8), "float32")), length_scale=scale)


def test_cli_and_config_astronomic_length_scale_is_one_line(tmp_path):
    """The same through ``bigimg noise`` and an ``[input] noise`` source: exit 2, one line."""
    from tests.helpers import assert_one_line_error, bigimg

    proc = bigimg("noise", str(tmp_path / "n.zarr"), "--shape", "64x64", "--length-scale", "1e300")
    assert_one_line_error(proc, "use a smaller length_scale")
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        "[input]\nnoise = { shape = [64, 64], length_scale = 1e300 }\n"
        '[[steps]]\nop = "add_noise"\nlength_scale = 1e300\n[output]\npath = "o.zarr"\n'
    )
    assert_one_line_error(bigimg("run", str(cfg), "--quiet"), "use a smaller length_scale")
    assert not (tmp_path / "n.zarr").exists() and not (tmp_path / "o.zarr").exists()


# ---------------------------------------------------------------- issue 14: hostile pass
def test_seed_near_2_64_is_its_own_key():
    """numpy turned the key list [2**64 - 1, tag] into float64, so the seed became 0."""
    top = _white_noise(2**64 - 1, ("y", "x"), (0, 0), (2, 8))
    assert not np.array_equal(top, _white_noise(0, ("y", "x"), (0, 0), (2, 8)))
    assert not np.array_equal(top, _white_noise(2**64 - 2, ("y", "x"), (0, 0), (2, 8)))
    np.testing.assert_array_equal(
        correlated_noise((3, 4), length_scale=1, seed=2**64 - 1).values,
        correlated_noise((3, 4), length_scale=1, seed=np.uint64(2**64 - 1)).values,
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": None}, TypeError, "dtype must be 'float32' or 'float64', got None"),
        ({"dtype": ">f4"}, ValueError, "native byte order, got '>f4'"),
        ({"mean": 1e300}, ValueError, r"mean=1e\+300 and std=1.0 overflow float32"),
        ({"std": 1e39}, ValueError, "overflow float32"),
        ({"std": 1e308, "dtype": "float64"}, ValueError, "overflow float64"),
    ],
)
def test_dtype_and_range_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        correlated_noise((8, 8), length_scale=2.0, **kwargs)


def test_large_mean_fits_float64():
    out = correlated_noise((4, 4), length_scale=2.0, mean=1e300, std=1e290, dtype="float64")
    assert np.isfinite(out.values).all()


@pytest.mark.parametrize("dtype", ["complex128", "<U1", "object", "datetime64[s]"])
def test_add_noise_refuses_non_real_images(dtype):
    img = xr.DataArray(np.zeros((2, 2)).astype(dtype), dims=("y", "x"))
    with pytest.raises(
        TypeError, match=f"img must have a real numeric dtype.*got {re.escape(dtype)}"
    ):
        add_noise(img, length_scale=2)


def test_add_noise_on_swapped_dims_and_numpy_data():
    """(x, y) order and in-memory data: the noise follows the dims by name."""
    a = np.zeros((5, 4), np.float32)
    out = add_noise(xr.DataArray(a, dims=("x", "y")), length_scale=1.5, seed=4)
    assert out.dims == ("x", "y")
    expected = correlated_noise({"x": 5, "y": 4}, length_scale=1.5, seed=4)
    np.testing.assert_array_equal(out.values, expected.values)
    np.testing.assert_allclose(  # same field; the FFTs run in another axis order
        out.transpose("y", "x").values,
        correlated_noise((4, 5), length_scale=1.5, seed=4).values,
        rtol=1e-5,
        atol=1e-6,
    )


def test_add_noise_on_an_image_with_too_many_chunks_names_them_briefly():
    img = bi.from_array(da.zeros((4096, 4096), np.float32, chunks=2))
    with pytest.raises(ValueError, match=r"4,194,304 chunks.*use larger chunks") as info:
        add_noise(img, length_scale=2)
    assert len(str(info.value)) < 400  # not the whole chunks tuple
