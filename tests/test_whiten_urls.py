"""ZCA models at URLs (issue #16): ``ZCA.save`` / ``ZCA.load`` and the ``zca_fit`` /
``zca_transform`` ops on ``memory://`` (in process) and on a real S3 server (moto).

Storage options (credentials) must never show up in a message or in the model file.
"""

from __future__ import annotations

import uuid

import fsspec
import numpy as np
import pytest
from fsspec.implementations.memory import MemoryFileSystem

import bigimg as bi
from bigimg.pipeline import parse_config
from bigimg.pipeline.ops import zca_fit_op, zca_transform_op
from bigimg.whiten import _ARRAYS
from tests.helpers import raise_if_dask_computes
from tests.s3server import s3_bucket_fixture, s3_server_fixture  # noqa: F401  (fixtures)

SECRET = "not-a-real-secret-0123456789"


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(60, 2, 2, 2)) @ np.eye(2) + rng.normal(size=(1, 2, 2, 2))
    return bi.from_array(data, chunks={"image": 20})


@pytest.fixture(scope="module")
def zca(stack):
    return bi.ZCA(1e-3).fit(stack)


@pytest.fixture
def memdir():
    """A fresh ``memory://`` folder, removed afterwards (the memory filesystem is global)."""
    root = f"memory://bigimg-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def assert_same_model(a, b):
    for name in ("mean_", "components_", "explained_variance_", "whitening_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.eps, a.sample_dim, a.feature_dims_, a.feature_shape_, a.n_samples_) == (
        b.eps,
        b.sample_dim,
        b.feature_dims_,
        b.feature_shape_,
        b.n_samples_,
    )


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------- memory://
def test_memory_round_trip(zca, memdir):
    url = f"{memdir}/m.npz"
    assert zca.save(url) == url
    assert_same_model(bi.ZCA.load(url), zca)
    fs, root = fsspec.core.url_to_fs(memdir)
    assert fs.ls(root, detail=False) == [f"{root}/m.npz"]  # one object, no temporary sibling
    with fs.open(f"{root}/m.npz") as fh, np.load(fh, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(["metadata", *_ARRAYS])


def test_memory_refuses_an_existing_object_unless_overwrite(zca, stack, memdir):
    url = f"{memdir}/m.npz"
    fs = fsspec.filesystem("memory")
    fs.pipe_file(url, b"precious")
    with pytest.raises(FileExistsError) as e:
        zca.save(url)
    assert one_line(e) == (
        f"path: {url!r} already exists; pass overwrite=True (--overwrite) to replace it"
    )
    assert fs.cat_file(url) == b"precious"
    assert zca.save(url, overwrite=True) == url
    assert_same_model(bi.ZCA.load(url), zca)
    with pytest.raises(IsADirectoryError, match="path: .* is a folder"):
        zca.save(memdir, overwrite=True)  # a prefix with objects under it
    other = bi.ZCA(0.5).fit(stack)
    other.save(url, overwrite=True)
    assert bi.ZCA.load(url).eps == 0.5


def test_memory_write_error_leaves_nothing(zca, memdir, monkeypatch):
    url = f"{memdir}/m.npz"

    def fail(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(np, "savez", fail)
    with pytest.raises(RuntimeError, match="disk on fire"):
        zca.save(url)
    assert not fsspec.filesystem("memory").exists(url)


def test_memory_load_errors_are_one_line_naming_the_argument(zca, memdir):
    with pytest.raises(FileNotFoundError) as e:
        bi.ZCA.load(f"{memdir}/missing.npz", what="model")
    assert one_line(e) == f"model: no such ZCA model file: '{memdir}/missing.npz'"
    zca.save(f"{memdir}/sub/m.npz")
    with pytest.raises(IsADirectoryError) as e:
        bi.ZCA.load(f"{memdir}/sub", what="model")
    assert one_line(e).startswith(f"model: '{memdir}/sub' is a folder")
    fsspec.filesystem("memory").pipe_file(f"{memdir}/junk.npz", b"not an npz")
    with pytest.raises(ValueError, match=rf"model: '{memdir}/junk.npz' is not a bigimg ZCA"):
        bi.ZCA.load(f"{memdir}/junk.npz", what="model")
    blob = fsspec.filesystem("memory").cat_file(f"{memdir}/sub/m.npz")
    fsspec.filesystem("memory").pipe_file(f"{memdir}/cut.npz", blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="is not a bigimg ZCA model"):
        bi.ZCA.load(f"{memdir}/cut.npz")


def test_storage_options_are_refused_for_local_paths(zca, tmp_path):
    with pytest.raises(ValueError, match="path: storage_options apply to URLs"):
        zca.save(tmp_path / "m.npz", storage_options={"key": "k"})
    assert not (tmp_path / "m.npz").exists()
    zca.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="model: storage_options apply to URLs"):
        bi.ZCA.load(tmp_path / "m.npz", what="model", storage_options={"key": "k"})


def test_storage_failures_are_one_line_without_the_secret(zca, memdir, monkeypatch):
    url = f"{memdir}/m.npz"

    def refuse(self, path, *args, **kwargs):
        raise PermissionError(f"Access denied for secret {SECRET}\n<Error>details</Error>")

    monkeypatch.setattr(MemoryFileSystem, "pipe_file", refuse)
    monkeypatch.setattr(MemoryFileSystem, "cat_file", refuse)
    options = {"secret": SECRET}
    with pytest.raises(OSError) as e:
        zca.save(url, storage_options=options)
    text = one_line(e)
    assert text.startswith(f"path: cannot access {url!r}: PermissionError: Access denied")
    assert SECRET not in text and e.value.__cause__ is None
    with pytest.raises(OSError) as e:
        bi.ZCA.load(url, what="model", storage_options=options)
    assert one_line(e).startswith("model: cannot access") and SECRET not in str(e.value)


def test_url_with_user_and_password_is_never_shown(zca):
    url = "memory://user:hunter22@bigimg-redact/m.npz"  # nothing there
    with pytest.raises(FileNotFoundError) as e:
        bi.ZCA.load(url)
    assert "hunter22" not in one_line(e) and "bigimg-redact/m.npz" in str(e.value)


# ---------------------------------------------------------------- the ops and pipelines
def test_zca_ops_on_memory_urls(stack, memdir):
    url = f"{memdir}/m.npz"
    kw = dict(eps=1e-3, sample_dim="image", nan_policy="raise")
    out = zca_fit_op(stack, model=url, **kw)
    assert_same_model(bi.ZCA.load(url), bi.ZCA(1e-3).fit(stack))
    np.testing.assert_array_equal(zca_transform_op(stack, model=url).values, out.values)
    with raise_if_dask_computes():  # refused before the expensive fit
        with pytest.raises(FileExistsError) as e:
            zca_fit_op(stack, model=url, **kw)
    assert one_line(e).startswith(f"model: {url!r} already exists; pass overwrite=True")
    assert zca_fit_op(stack, model=url, overwrite=True, transform=False, **kw) is stack
    with pytest.raises(FileNotFoundError, match=f"model: no such ZCA model file: '{memdir}/x'"):
        zca_transform_op(stack, model=f"{memdir}/x")


def test_pipeline_writes_and_reads_a_model_url(tmp_path, memdir):
    url = f"{memdir}/model.npz"
    noise = {"shape": [120, 3], "length_scale": 2, "seed": 1}
    fit = parse_config(
        {
            "input": {"noise": noise},
            "steps": [{"op": "zca_fit", "model": url, "sample_dim": "y", "eps": 1e-3}],
            "output": {"path": "white.zarr"},
        },
        base=tmp_path,
    )
    assert fit.steps[0].params.model == url  # a URL stays a str; a local name becomes a Path
    fit.run(progress=False)
    white = bi.open_zarr(tmp_path / "white.zarr")
    model = bi.ZCA.load(url)
    assert model.sample_dim == "y" and model.feature_shape_ == (3, 1)
    again = parse_config(
        {
            "input": {"noise": noise},
            "steps": [{"op": "zca_transform", "model": url}],
            "output": {"path": "again.zarr"},
        },
        base=tmp_path,
    ).build()
    np.testing.assert_allclose(again.values, white.values, rtol=1e-6, atol=1e-6)
    refit = parse_config(
        {
            "input": {"noise": noise},
            "steps": [{"op": "zca_fit", "model": url, "sample_dim": "y"}],
            "output": {"path": "other.zarr"},
        },
        base=tmp_path,
    )
    with pytest.raises(FileExistsError, match=f"model: {url!r} already exists"):
        refit.run(progress=False)
    local = parse_config(
        {
            "input": {"noise": noise},
            "steps": [{"op": "zca_fit", "model": "m.npz", "sample_dim": "y"}],
            "output": {"path": "x.zarr"},
        },
        base=tmp_path,
    )
    assert local.steps[0].params.model == tmp_path / "m.npz"


def test_pipeline_refuses_a_model_url_inside_the_output(tmp_path, memdir):
    pipe = parse_config(
        {
            "input": {"noise": {"shape": [64, 3], "length_scale": 2, "seed": 1}},
            "steps": [{"op": "zca_fit", "model": f"{memdir}/out.zarr/m.npz", "sample_dim": "y"}],
            "output": {"path": f"{memdir}/out.zarr"},
        },
        base=tmp_path,
    )
    with pytest.raises(ValueError, match="overlaps"):
        pipe.check()


# ---------------------------------------------------------------- a real S3 server
def test_s3_round_trip_overwrite_and_errors_never_show_the_secret(zca, stack, s3_bucket):
    url = s3_bucket.url("models/m.npz")
    opts = s3_bucket.storage_options
    secret = opts["secret"]
    assert zca.save(url, storage_options=opts) == url
    assert s3_bucket.keys() == ["models/m.npz"]  # one object, no temporary key
    assert secret.encode() not in s3_bucket.get("models/m.npz")
    assert_same_model(bi.ZCA.load(url, storage_options=opts), zca)
    errors = []
    with pytest.raises(FileExistsError) as e:
        zca.save(url, storage_options=opts)
    errors.append(one_line(e))
    assert errors[-1].startswith(f"path: {url!r} already exists; pass overwrite=True")
    bi.ZCA(0.25).fit(stack).save(url, overwrite=True, storage_options=opts)
    assert bi.ZCA.load(url, storage_options=opts).eps == 0.25
    assert s3_bucket.keys() == ["models/m.npz"]
    with pytest.raises(FileNotFoundError) as e:
        bi.ZCA.load(s3_bucket.url("nope.npz"), what="model", storage_options=opts)
    errors.append(one_line(e))
    assert errors[-1] == f"model: no such ZCA model file: {s3_bucket.url('nope.npz')!r}"
    fast = {"config_kwargs": {"connect_timeout": 2, "retries": {"max_attempts": 1}}}
    wrong = {**opts, **fast, "secret": "wrong-secret-value"}
    with pytest.raises(OSError) as e:
        bi.ZCA.load(url, what="model", storage_options=wrong)
    errors.append(one_line(e))
    assert errors[-1].startswith(f"model: cannot access {url!r}")
    with pytest.raises(OSError) as e:
        zca.save(s3_bucket.url("other.npz"), storage_options=wrong)
    errors.append(one_line(e))
    for text in errors:
        assert secret not in text and "wrong-secret-value" not in text, text
