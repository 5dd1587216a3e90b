"""Bad input, across the Python API, the CLI and configs.

Every case must fail with a specific exception (Python) or exit code 2 and
one line naming the problem (CLI), before any output is written, leaving any
existing output unchanged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from tests.helpers import bigimg, raise_if_dask_computes

rng = np.random.default_rng(0)
IMG = bi.from_array(rng.random((32, 32, 3)).astype("float32"), chunks={"y": 16, "x": 16})
NAN_IMG = bi.from_array(np.full((8, 8), np.nan, "float32"))
U8 = bi.from_array(rng.integers(0, 256, (16, 16), dtype=np.uint8))
STACK = bi.from_array(rng.random((3, 16, 16, 1)).astype("float32"), chunks={"image": 1})
ROWS = bi.from_array(rng.random((4, 16)).astype("float32"), dims=("y", "x"))

# (id, call, exception, message fragment naming the argument)
API_CASES = [
    ("from_array ndim", lambda: bi.from_array(np.zeros(5)), ValueError, "ndim"),
    ("from_array dims", lambda: bi.from_array(np.zeros((2, 2)), dims=("y",)), ValueError, "dims"),
    (
        "chunks unknown dim",
        lambda: bi.from_array(np.zeros((4, 4)), chunks={"t": 2}),
        ValueError,
        "unknown dim",
    ),
    (
        "chunks negative",
        lambda: bi.from_array(np.zeros((4, 4)), chunks={"y": -3}),
        ValueError,
        "chunks",
    ),
    ("nodata type", lambda: bi.from_array(np.zeros((4, 4)), nodata="0"), TypeError, "nodata"),
    ("open missing", lambda: bi.open_image("/nonexistent/x.tif"), FileNotFoundError, "path"),
    ("sigma unknown dim", lambda: bi.gaussian_filter(IMG, {"z": 1}), ValueError, "sigma"),
    ("sigma negative", lambda: bi.gaussian_filter(IMG, -1.0), ValueError, "sigma"),
    ("sigma nan", lambda: bi.gaussian_filter(IMG, math.nan), ValueError, "sigma"),
    ("sigma inf", lambda: bi.gaussian_filter(IMG, {"y": math.inf}), ValueError, "sigma"),
    ("sigma type", lambda: bi.gaussian_filter(IMG, "2"), TypeError, "sigma"),
    ("truncate", lambda: bi.gaussian_filter(IMG, 1.0, truncate=0), ValueError, "truncate"),
    ("mode", lambda: bi.gaussian_filter(IMG, 1.0, mode="circular"), ValueError, "mode"),
    (
        "nan_policy",
        lambda: bi.gaussian_filter(IMG, 1.0, nan_policy="ignore"),
        ValueError,
        "nan_policy",
    ),
    (
        "filter not dataarray",
        lambda: bi.gaussian_filter(np.zeros((4, 4)), 1.0),
        TypeError,
        "DataArray",
    ),
    ("filter wrong dims", lambda: bi.gaussian_filter(ROWS.rename(y="row"), 1.0), ValueError, "dim"),
    ("stretch std", lambda: bi.gaussian_stretch(IMG, mean=0.5, std=0.0), ValueError, "std"),
    ("stretch n", lambda: bi.gaussian_stretch(IMG, n=-1), ValueError, "n"),
    (
        "stretch out_range",
        lambda: bi.gaussian_stretch(IMG, out_range=(1.0,)),
        (ValueError, TypeError),
        "out_range",
    ),
    ("hist bins zero", lambda: bi.histogram(IMG, bins=0), ValueError, "bins"),
    ("hist range order", lambda: bi.histogram(IMG, range=(1.0, 0.0)), ValueError, "range"),
    ("hist range nonfinite", lambda: bi.histogram(IMG, range=(0.0, math.inf)), ValueError, "range"),
    ("hist exclude type", lambda: bi.histogram(IMG, exclude=["zero"]), TypeError, "exclude"),
    ("hist dims unknown", lambda: bi.histogram(IMG, dims=("t",)), ValueError, "dims"),
    ("hist all NaN", lambda: bi.histogram(NAN_IMG), ValueError, "valid"),
    (
        "equalize all excluded",
        lambda: bi.equalize_hist(bi.from_array(np.zeros((4, 4), "uint8")), exclude=[0]),
        ValueError,
        "valid",
    ),
    ("equalize bins", lambda: bi.equalize_hist(U8.astype("float32"), bins=-4), ValueError, "bins"),
    (
        "noise length_scale",
        lambda: bi.correlated_noise((64, 64), length_scale=0),
        ValueError,
        "length_scale",
    ),
    ("noise shape", lambda: bi.correlated_noise((64, -1), length_scale=2), ValueError, "shape"),
    (
        "noise shape float",
        lambda: bi.correlated_noise((64.5, 64), length_scale=2),
        (ValueError, TypeError),
        "shape",
    ),
    (
        "noise chunks",
        lambda: bi.correlated_noise((64, 64), length_scale=2, chunks=0),
        ValueError,
        "chunks",
    ),
    (
        "noise dtype",
        lambda: bi.correlated_noise((64, 64), length_scale=2, dtype="int16"),
        (ValueError, TypeError),
        "dtype",
    ),
    ("register no image dim", lambda: bi.register(IMG), ValueError, "image"),
    (
        "register upsample",
        lambda: bi.register(STACK, upsample_factor=0),
        ValueError,
        "upsample_factor",
    ),
    ("shifts length", lambda: bi.shift_and_add(STACK, np.zeros((2, 2))), ValueError, "shifts"),
    ("shifts shape", lambda: bi.shift_and_add(STACK, np.zeros((3, 3))), ValueError, "shifts"),
    (
        "shift method",
        lambda: bi.shift_and_add(STACK, np.zeros((3, 2)), method="cubic"),
        ValueError,
        "method",
    ),
    ("zca one sample", lambda: bi.ZCA().fit(STACK.isel(image=slice(0, 1))), ValueError, "sample"),
    ("zca sample_dim", lambda: bi.ZCA(sample_dim="frame").fit(STACK), ValueError, "sample_dim"),
    (
        "zca too many features",
        lambda: bi.ZCA().fit(bi.from_array(np.zeros((4, 130, 130, 1), "float32"))),
        ValueError,
        "16,384|16384",
    ),
    ("standardize dims", lambda: bi.standardize(STACK, dims=("t",)), ValueError, "dims"),
    (
        "int64 span too wide",
        lambda: bi.histogram(bi.from_array(np.array([[0, 2**40]], dtype=np.int64))),
        ValueError,
        "range",
    ),
    (
        "filter empty image",
        lambda: bi.gaussian_filter(bi.from_array(np.zeros((0, 5), "f4")), 1.0),
        ValueError,
        "empty",
    ),
    (
        "equalize empty image",
        lambda: bi.equalize_hist(bi.from_array(np.zeros((0, 5), "f4"))),
        ValueError,
        "empty",
    ),
    (
        "stretch empty image",
        lambda: bi.gaussian_stretch(bi.from_array(np.zeros((0, 5), "f4"))),
        ValueError,
        "empty",
    ),
    (
        "reference shape",
        lambda: bi.register(STACK, reference=np.zeros((4, 4))),
        ValueError,
        "reference",
    ),
    ("to_zarr type", lambda: bi.to_zarr(np.zeros((2, 2)), "x.zarr"), TypeError, "DataArray"),
    ("open_zarr missing", lambda: bi.open_zarr("/nonexistent/o.zarr"), FileNotFoundError, "store"),
    (
        "cluster both",
        lambda: bi.Cluster("tcp://127.0.0.1:1", scheduler_file="f.json"),
        ValueError,
        "scheduler_file",
    ),
    ("cluster n_workers", lambda: bi.Cluster(n_workers=0), ValueError, "n_workers"),
]


@pytest.mark.parametrize(
    ("call", "exc", "match"), [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES]
)
def test_python_api_rejects(call, exc, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc, match=match):
        call()
    assert list(tmp_path.iterdir()) == []  # nothing written


LAZY_CASES = [
    c
    for c in API_CASES
    if c[0].split()[0]
    in {
        "sigma",
        "truncate",
        "mode",
        "nan_policy",
        "stretch",
        "noise",
        "shift",
        "shifts",
        "standardize",
    }
]


@pytest.mark.parametrize(
    ("call", "exc", "match"), [c[1:] for c in LAZY_CASES], ids=[c[0] for c in LAZY_CASES]
)
def test_lazy_operations_validate_before_any_compute(call, exc, match):
    with raise_if_dask_computes(), pytest.raises(exc, match=match):
        call()


# ---------------------------------------------------------------- CLI and configs
def cfg(
    extra_step: str = "", sigma: str = "y = 1, x = 1", inp: str = "in.zarr", out: str = "out.zarr"
) -> str:
    return f"""
[input]
path = "{inp}"
nodata = 0

[[steps]]
op = "gaussian_filter"
sigma = {{ {sigma} }}
{extra_step}
[output]
path = "{out}"
"""


@pytest.fixture(scope="module")
def clidir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    bi.to_zarr(
        bi.from_array(rng.integers(0, 255, (64, 64), dtype=np.uint8)), d / "in.zarr", progress=False
    )
    bi.to_zarr(bi.from_array(np.ones((4, 4))), d / "existing.zarr", progress=False)
    (d / "afile.zarr").write_text("I am a file")
    return d


def _write(d: Path, name: str, text: str) -> str:
    (d / name).write_text(text)
    return str(d / name)


CLI_CASES = [
    ("missing config", lambda d: ["run", str(d / "none.toml")], "no such file"),
    ("toml syntax", lambda d: ["run", _write(d, "syn.toml", "[input\n")], "not valid TOML"),
    (
        "unknown top key",
        lambda d: ["run", _write(d, "top.toml", cfg() + "\n[cluster]\nn = 1\n")],
        "unknown top-level key",
    ),
    (
        "unknown step key",
        lambda d: ["run", _write(d, "sk.toml", cfg(extra_step="sigmaa = 1\n"))],
        "unknown key 'steps[0].sigmaa'",
    ),
    (
        "unknown op",
        lambda d: ["run", _write(d, "op.toml", cfg(extra_step='[[steps]]\nop = "sharpen"\n'))],
        "'sharpen' is unknown",
    ),
    (
        "wrong type",
        lambda d: [
            "run",
            _write(
                d, "ty.toml", cfg(extra_step='[[steps]]\nop = "equalize_hist"\nbins = "many"\n')
            ),
        ],
        "steps[1].bins",
    ),
    ("sigma unknown dim", lambda d: ["run", _write(d, "dim.toml", cfg(sigma="t = 1"))], "sigma"),
    ("negative sigma", lambda d: ["run", _write(d, "neg.toml", cfg(sigma="y = -1"))], "sigma"),
    (
        "missing input",
        lambda d: ["run", _write(d, "mi.toml", cfg(inp="nope.zarr"))],
        "no such file",
    ),
    (
        "output exists",
        lambda d: ["run", _write(d, "ex.toml", cfg(out="existing.zarr"))],
        "already exists",
    ),
    (
        "output is a file",
        lambda d: ["run", _write(d, "fi.toml", cfg(out="afile.zarr")), "--overwrite"],
        "is a file",
    ),
    ("info missing", lambda d: ["info", str(d / "none.zarr")], "no such Zarr store"),
    ("info file", lambda d: ["info", str(d / "afile.zarr")], "not a Zarr store"),
    (
        "noise bad shape",
        lambda d: ["noise", str(d / "n.zarr"), "--shape", "64xabc", "--length-scale", "2"],
        "--shape",
    ),
    (
        "noise bad scale",
        lambda d: ["noise", str(d / "n.zarr"), "--shape", "64x64", "--length-scale", "-2"],
        "length",
    ),
    ("workers zero", lambda d: ["demo", "--workers", "0"], "--workers"),
    ("unknown command", lambda d: ["sharpen"], "No such command"),
]


@pytest.mark.parametrize(
    ("args", "match"), [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES]
)
def test_cli_rejects(clidir, args, match):
    before = {p: p.stat().st_mtime_ns for p in clidir.rglob("*") if p.is_file()}
    argv = args(clidir)
    quiet = ["--quiet"] if argv[0] in {"run", "noise"} else []
    proc = bigimg(*argv, *quiet, cwd=clidir, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert match in lines[0], lines[0]
    after = {
        p: p.stat().st_mtime_ns
        for p in clidir.rglob("*")
        if p.is_file() and not p.suffix == ".toml"
    }
    assert after == {
        p: t for p, t in before.items() if p.suffix != ".toml"
    }  # nothing written or changed
    assert not (clidir / "out.zarr").exists() and not (clidir / "n.zarr").exists()
