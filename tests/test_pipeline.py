"""Pipeline configs: validation, path resolution, running, every example config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from bigimg.demo import synthetic_mosaic
from bigimg.pipeline import ConfigError, load_config, parse_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.fixture
def mosaic_dir(tmp_path) -> Path:
    bi.to_zarr(synthetic_mosaic(256, chunks=128), tmp_path / "mosaic.zarr", progress=False)
    return tmp_path


def _config(**over):
    base = {
        "input": {"path": "mosaic.zarr", "nodata": 0},
        "steps": [{"op": "astype", "dtype": "float64"}],
        "output": {"path": "out.zarr"},
    }
    base.update(over)
    return base


def test_astype_config_runs_and_records_provenance(mosaic_dir):
    shutil.copy(CONFIGS / "astype.toml", mosaic_dir)
    pipe = load_config(mosaic_dir / "astype.toml")
    assert pipe.output.path == (mosaic_dir / "astype.zarr").resolve()
    res = pipe.run(progress=False)
    out = bi.open_zarr(res.path)
    src = bi.open_image(mosaic_dir / "mosaic.zarr", nodata=0)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out.values, src.values.astype(np.float64))
    assert json.loads(out.attrs["bigimg_config"]) == [{"op": "astype", "dtype": "float64"}]
    assert out.attrs["bigimg_source"] == str((mosaic_dir / "mosaic.zarr").resolve())


def test_relative_paths_resolve_against_config_folder(tmp_path):
    pipe = parse_config(_config(), base=tmp_path / "sub")
    assert pipe.input.path == (tmp_path / "sub" / "mosaic.zarr").resolve()


@pytest.mark.parametrize(
    ("config", "match"),
    [
        (_config(extra=1), r"unknown top-level key\(s\) \['extra'\]"),
        (
            _config(input={"path": "a", "nodatta": 0}),
            r"unknown key\(s\) \['nodatta'\] in \[input\]",
        ),
        (_config(output={"path": "o", "compress": True}), "unknown key 'output.compress'"),
        (
            _config(steps=[{"op": "astype", "dtype": "float64", "colour": 1}]),
            r"unknown key 'steps\[0\].colour'",
        ),
        (_config(steps=[{"op": "sharpen"}]), r"steps\[0\].op 'sharpen' is unknown; known ops"),
        (_config(steps=[{"dtype": "float64"}]), r"steps\[0\] needs an 'op' key"),
        (_config(steps=[{"op": "astype", "dtype": "int8"}]), r"steps\[0\].dtype"),
        (_config(steps={"op": "astype"}), "steps must be an array"),
        (_config(input={"path": "a", "chunks": {"y": "big"}}), r"input.chunks"),
        (_config(input={"nodata": 0}), "needs exactly one of 'path'"),
        ({"steps": []}, r"\[input\] table is required"),
        (_config(output={}), r"missing key .output.path."),
    ],
)
def test_bad_configs(tmp_path, config, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(config, base=tmp_path)


def test_load_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="config"):
        load_config(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("[input\npath=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_missing_input_fails_before_writing(tmp_path):
    pipe = parse_config(_config(), base=tmp_path)
    with pytest.raises(FileNotFoundError, match="mosaic.zarr"):
        pipe.run(progress=False)
    assert not (tmp_path / "out.zarr").exists()
