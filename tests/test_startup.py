"""Start-up (issue 25): `import bigimg` and `bigimg --help` import no dask, xarray or zarr;
the accessor still works however bigimg and xarray are imported; Ctrl-C at start-up is
one line. Fresh interpreters in subprocesses; no timings (benchmarks/startup.py has them)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from tests.helpers import bigimg

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("dask", "xarray", "zarr", "numpy", "distributed", "pandas", "pydantic")


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, **kwargs
    )


def _loaded(code: str) -> list[str]:
    proc = _python(f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_bigimg_imports_no_heavy_library() -> None:
    loaded = _loaded("import bigimg")
    assert not [m for m in HEAVY if m in loaded]


def test_cli_help_imports_no_heavy_library() -> None:
    code = (
        "import sys, json\nsys.argv = ['bigimg', '--help']\nfrom bigimg.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = _loaded(code)
    assert not [m for m in HEAVY if m in loaded]


def test_info_imports_zarr_but_not_dask_or_xarray(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    bi.to_zarr(bi.from_array(np.ones((8, 8), "float32")), store, progress=False)
    code = (
        f"import sys\nsys.argv = ['bigimg', 'info', {str(store)!r}]\n"
        "from bigimg.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = _loaded(code)
    assert "zarr" in loaded
    assert not [m for m in ("dask", "xarray", "distributed", "pandas") if m in loaded]


_NAMES = (
    "import bigimg as bi\nnames = dir(bi)\n"
    "assert set(bi.__all__) <= set(names), set(bi.__all__) - set(names)\n"
    "assert callable(bi.gaussian_filter) and bi.__version__\n"
    "import bigimg.histogram, bigimg.register, bigimg.quicklook\n"
    "assert callable(bi.histogram) and callable(bi.register) and callable(bi.quicklook)\n"
    "assert bi.io.store_info is bi.store_info\n"
    "try:\n    bi.no_such_name\nexcept AttributeError as e:\n    print(e)\n"
)
_ACCESSOR = (
    "{setup}\nout = da.bigimg.gaussian_filter(1.0)\n"
    "ref = bi.gaussian_filter(da, 1.0)\n"
    "np.testing.assert_array_equal(out.values, ref.values)\n"
    "import inspect\nassert 'nan_policy' in str(inspect.signature(da.bigimg.gaussian_filter))\n"
    "print(type(da.bigimg).__name__)"
)
_SETUPS = {
    # the notebook path: bigimg first, xarray after
    "bigimg-then-xarray": "import bigimg as bi\nimport numpy as np, xarray as xr\n"
    "da = xr.DataArray(np.ones((8, 8)), dims=('y', 'x'))",
    "xarray-then-bigimg": "import numpy as np, xarray as xr\nimport bigimg as bi\n"
    "da = xr.DataArray(np.ones((8, 8)), dims=('y', 'x'))",
    "from_array": "import numpy as np, bigimg as bi\nda = bi.from_array(np.ones((8, 8)))",
}


def test_names_completions_and_the_accessor_in_fresh_interpreters() -> None:
    """Each import order in its own interpreter (run side by side)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    codes = {k: _ACCESSOR.format(setup=v) for k, v in _SETUPS.items()}
    codes["from_array"] = f"{_NAMES}\n{codes['from_array']}"
    procs = {
        k: subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k, code in codes.items()
    }
    results = {k: (*p.communicate(timeout=120), p.returncode) for k, p in procs.items()}
    for k, (out, err, rc) in results.items():
        assert rc == 0, (k, err)
        assert "Warning" not in err, (k, err)
        assert out.strip().endswith("BigimgAccessor"), (k, out)
    assert "has no attribute 'no_such_name'" in results["from_array"][0]


def test_bare_bigimg_prints_help_and_exits_0() -> None:
    proc = bigimg()
    assert proc.returncode == 0, proc.stderr
    assert "Usage: bigimg" in proc.stdout and "Commands:" in proc.stdout
    assert "error" not in (proc.stdout + proc.stderr).lower()


_SIGINT_DURING_IMPORT = """
import os, signal, sys
class Interrupt:
    '''Delivers a real SIGINT to this process while it imports {module} (a start-up import).'''
    def find_spec(self, name, path=None, target=None):
        if name == {module!r}:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, Interrupt())
sys.argv = ["bigimg", *{args!r}]
from bigimg.cli import main
main()
"""


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("zarr", ["info", "{store}"]),  # inside the command, after main() took over Ctrl-C
        ("click", ["--help"]),  # while bigimg.cli itself is imported
        ("dask.array", ["noise", "{out}", "--shape", "64x64", "--length-scale", "2"]),
    ],
    ids=["zarr", "click", "dask"],
)
def test_ctrl_c_during_startup_imports_is_one_line(tmp_path: Path, module: str, args) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "s.zarr"
    bi.to_zarr(bi.from_array(np.ones((8, 8), "float32")), store, progress=False)
    args = [a.format(store=store, out=tmp_path / "n.zarr") for a in args]
    code = _SIGINT_DURING_IMPORT.format(module=module, args=args)
    # argv[0] "bigimg": the process is the command, as the `bigimg` script is
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.argv[0] = 'bigimg'\n{code}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.stderr.strip() == "bigimg: interrupted", proc.stderr  # click ends the ^C line first
    assert proc.returncode == 130
    assert not (tmp_path / "n.zarr").exists()


def test_ctrl_c_at_any_moment_of_startup_is_one_line(tmp_path: Path) -> None:
    """The real `bigimg` command, interrupted after various delays: never a traceback."""
    store = tmp_path / "s.zarr"
    bi.to_zarr(bi.from_array(np.ones((8, 8), "float32")), store, progress=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    exe = Path(sys.executable).parent / "bigimg"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "bigimg"]
    outcomes = []
    for delay in (0.4, 0.8):  # after Python's own start-up (~0.05 s), during bigimg's imports
        proc = subprocess.Popen(
            [*cmd, "info", str(store), "--hist", str(tmp_path / f"h{delay}.png")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        outcomes.append(proc.returncode)
        assert "Traceback" not in err, err
        if proc.returncode == 130:
            assert err.strip() == "bigimg: interrupted", err
        else:  # it finished before the signal came
            assert proc.returncode == 0, err
    assert 130 in outcomes
