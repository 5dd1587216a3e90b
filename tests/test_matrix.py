"""Every registered op and source × every input kind (issue 22, "close the classes").

A 2-D Zarr array worked with ``open_image`` and failed at the first filter: the
inputs were tested alone and the ops on ``from_array`` images, never together.
Here each cell opens one input the way a user does and runs one op on it, and
checks the result against the same op on the in-memory array that the input
holds (``bi.from_array(values)``). A cell that cannot apply checks the refusal
(a model fitted with a ``band`` feature on a plain 2-D DataArray) or skips with
the reason (no S3 server).

Rows (inputs), each 2-D ``(64, 48)`` and 3-D ``(64, 48, 3)``, in chunks that
the filter's halo crosses:

* in memory: a numpy-backed DataArray, a dask-backed one (``from_array`` of dask);
  the ``noise`` source of a pipeline;
* Zarr written by bigimg (``to_zarr``; read by ``open_image`` and ``open_zarr``),
  by ``bigimg noise`` (the CLI) and by ``bi.correlated_noise`` + ``to_zarr``, by
  plain zarr (v2; v3 without and with ``dimension_names``, also channel-first)
  and by plain xarray;
* TIFF (tifffile, tiled), GeoTIFF (rasterio), COG (``bi.to_cog``) and PNG;
* each file or store at a local path, at ``memory://`` and on the S3 server.

Columns (ops): ``read`` (the values and dims), then every op of
:data:`bigimg.pipeline.ops.OPS`, called through the registry with its
validated parameters as a pipeline calls it. The threaded scheduler runs
every cell; :func:`test_cluster_cells` runs a representative subset on the
session's LocalCluster.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import bigimg as bi
from bigimg.pipeline.ops import OPS, SOURCES
from tests.s3server import create_bucket, remove_bucket, s3_server_fixture  # noqa: F401

SHAPE = {2: (64, 48), 3: (64, 48, 3)}
CHUNKS = (32, 24)
YX_CHUNKS = {"y": CHUNKS[0], "x": CHUNKS[1]}
NOISE = {"length_scale": 3.0, "seed": 7}

# ---------------------------------------------------------------- the rows
# (kind, ndims it has, locations it is stored at)
KINDS: dict[str, tuple[tuple[int, ...], tuple[str, ...]]] = {
    "numpy-backed": ((2, 3), ("in-memory",)),
    "dask-backed": ((2, 3), ("in-memory",)),
    "noise-source": ((2, 3), ("in-memory",)),
    "bigimg-zarr": ((2, 3), ("local", "memory://", "s3")),
    "bigimg-zarr-open_zarr": ((2, 3), ("local", "memory://", "s3")),
    "bigimg-noise-cli": ((2, 3), ("local", "memory://", "s3")),
    "correlated_noise-zarr": ((2, 3), ("local", "memory://", "s3")),
    "zarr-v2": ((2, 3), ("local", "memory://", "s3")),
    "zarr-v3": ((2, 3), ("local", "memory://", "s3")),
    "zarr-v3-dimension_names": ((2, 3), ("local", "memory://", "s3")),
    "zarr-v3-channel-first": ((3,), ("local", "memory://", "s3")),
    "xarray-zarr": ((2, 3), ("local", "memory://", "s3")),
    "tiff": ((2, 3), ("local", "memory://", "s3")),
    "geotiff": ((2, 3), ("local", "memory://", "s3")),
    "cog": ((2, 3), ("local", "memory://", "s3")),
    "png": ((2, 3), ("local", "memory://", "s3")),
}


def _row_id(row: tuple[str, int, str]) -> str:
    kind, ndim, where = row
    return f"{kind}-{ndim}d-{where.rstrip(':/')}"


ROWS = [
    (kind, ndim, where)
    for kind, (ndims, wheres) in KINDS.items()
    for ndim in ndims
    for where in wheres
]
COLUMNS = ["read", *OPS]
# Where the input is stored changes only its read layer (zarr's and fsspec's stores, byte
# ranges): every op runs on local and in-memory inputs; at memory:// and on S3 the columns
# that use the read layer in each way: read it (read), recompute a block's read in the
# halo task (gaussian_filter, issue 22's item 1), read it once per statistics pass
# (equalize_hist, memory:// only: the S3 server answers a request in ~10 ms).
LOCATION_COLUMNS = {
    "memory://": ("read", "gaussian_filter", "equalize_hist"),
    "s3": ("read", "gaussian_filter"),
}
# memory:// takes fsspec's remote code paths for every kind in 2-D and 3-D; the S3 server
# adds real requests (~0.3 s a cell), for the 2-D inputs of every kind.
CELLS = [
    pytest.param(row, op, id=f"{_row_id(row)}-{op}")
    for row in ROWS
    for op in COLUMNS
    if op in LOCATION_COLUMNS.get(row[2], COLUMNS) and (row[2] != "s3" or row[1] == 2)
]


def _values(kind: str, ndim: int) -> np.ndarray:
    """What the input holds, as ``(y, x[, band])``."""
    if kind in ("bigimg-noise-cli", "correlated_noise-zarr", "noise-source"):
        return bi.correlated_noise(_noise_shape(ndim), **NOISE, chunks=-1).values
    rng = np.random.default_rng(ndim)
    if kind == "png":
        return rng.integers(0, 256, SHAPE[ndim], dtype="uint8")
    data = rng.normal(10.0, 3.0, SHAPE[ndim]).astype("float32")
    data[5:9, 7:20] = np.nan  # NoData crossing a chunk edge
    if ndim == 3:
        data[40:50, 30:33, 1] = np.nan
    return data


def _noise_shape(ndim: int) -> Any:
    return SHAPE[2] if ndim == 2 else dict(zip(("y", "x", "band"), SHAPE[3], strict=True))


def _band_last(values: np.ndarray) -> np.ndarray:
    return values[..., None] if values.ndim == 2 else values


# ---------------------------------------------------------------- writing the inputs
def _write(kind: str, ndim: int, path: Path, cli_scheduler: str) -> None:
    """Write the local file or store of ``kind`` at ``path``."""
    import zarr

    values = _values(kind, ndim)
    names = ("y", "x", "band")[:ndim]
    if kind in ("bigimg-zarr", "bigimg-zarr-open_zarr"):
        bi.to_zarr(bi.from_array(values, chunks=YX_CHUNKS), path, progress=False)
    elif kind == "correlated_noise-zarr":
        field = bi.correlated_noise(_noise_shape(ndim), **NOISE, chunks=YX_CHUNKS)
        bi.to_zarr(field, path, progress=False)
    elif kind == "bigimg-noise-cli":
        from bigimg.cli import main

        shape = "x".join(map(str, SHAPE[ndim]))
        args = ["noise", str(path), "--shape", shape, "--chunks", "32", "--quiet"]
        args += ["--length-scale", str(NOISE["length_scale"]), "--seed", str(NOISE["seed"])]
        with pytest.raises(SystemExit) as done:  # the command line, in this process (fast)
            main([*args, "--scheduler", cli_scheduler])
        assert done.value.code == 0
    elif kind.startswith("zarr-"):
        chunks = (*CHUNKS, 3)[:ndim]
        kwargs: dict[str, Any] = {"zarr_format": 2 if kind == "zarr-v2" else 3}
        if kind == "zarr-v3-dimension_names":
            kwargs["dimension_names"] = names
        if kind == "zarr-v3-channel-first":
            values, chunks = values.transpose(2, 0, 1), (3, *CHUNKS)
            kwargs["dimension_names"] = ("c", "y", "x")
        z = zarr.create_array(path, shape=values.shape, chunks=chunks, dtype=values.dtype, **kwargs)
        z[:] = values
    elif kind == "xarray-zarr":
        arr = xr.DataArray(values, dims=names).chunk(YX_CHUNKS)
        xr.Dataset({"image": arr}).to_zarr(path)
    elif kind == "tiff":
        import tifffile

        extra = {"photometric": "rgb"} if ndim == 3 else {"photometric": "minisblack"}
        tifffile.imwrite(path, values, tile=(16, 16), **extra)
    elif kind == "geotiff":
        import rasterio
        from rasterio.transform import from_origin

        bands = _band_last(values).transpose(2, 0, 1)
        profile = dict(
            driver="GTiff", width=SHAPE[2][1], height=SHAPE[2][0], count=bands.shape[0],
            dtype="float32", crs="EPSG:32633", transform=from_origin(500000, 6000000, 10, 10),
            tiled=True, blockxsize=16, blockysize=16,
        )  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(bands)
    elif kind == "cog":
        bi.to_cog(bi.from_array(values), path, tile=16, progress=False)
    elif kind == "png":
        import PIL.Image

        PIL.Image.fromarray(values).save(path)
    else:  # pragma: no cover
        raise AssertionError(kind)


SUFFIX = {"tiff": ".tif", "geotiff": ".tif", "cog": ".tif", "png": ".png"}


@dataclass
class Inputs:
    """Every stored input, written once per module, at each of its locations."""

    root: Path
    s3: Any = None  # (bucket, storage_options), once the S3 server is up

    def location(self, kind: str, ndim: int, where: str) -> tuple[str, dict[str, Any] | None]:
        name = f"{kind}-{ndim}d{SUFFIX.get(kind, '.zarr')}"
        if where == "local":
            return str(self.root / name), None
        if where == "memory://":
            return f"memory://matrix-{self.root.name}/{name}", None
        if self.s3 is None:
            pytest.skip(f"the S3 server is not available: {self.s3_reason}")
        bucket, options = self.s3
        return bucket.url(name), options

    s3_reason = "not started"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, request, local_client) -> Any:
    """The inputs of every row, local, in ``memory://`` and on the S3 server."""
    import fsspec

    root = tmp_path_factory.mktemp("matrix")
    scheduler = local_client.scheduler.address
    for kind, (ndims, wheres) in KINDS.items():
        if "local" in wheres:
            for ndim in ndims:
                _write(kind, ndim, root / f"{kind}-{ndim}d{SUFFIX.get(kind, '.zarr')}", scheduler)
    out = Inputs(root)
    mem = fsspec.filesystem("memory")
    for entry in sorted(root.iterdir()):  # byte copies: the same store or file elsewhere
        mem.put(str(entry), f"/matrix-{root.name}/{entry.name}", recursive=entry.is_dir())
    bucket = None
    try:
        server = request.getfixturevalue("s3_server")
        bucket = create_bucket(server)
        s3 = fsspec.filesystem("s3", **bucket.storage_options)
        for entry in sorted(root.iterdir()):
            s3.put(str(entry), f"{bucket.name}/{entry.name}", recursive=entry.is_dir())
        out.s3 = (bucket, bucket.storage_options)
    except pytest.skip.Exception as e:
        Inputs.s3_reason = str(e)
    try:
        yield out
    finally:
        mem.rm(f"/matrix-{root.name}", recursive=True)
        if bucket is not None and server.process.poll() is None:
            remove_bucket(bucket)


def _open(inputs: Inputs, kind: str, ndim: int, where: str) -> xr.DataArray:
    """The input the way a user opens it."""
    values = _values(kind, ndim)
    if kind == "numpy-backed":
        return xr.DataArray(values, dims=("y", "x", "band")[:ndim])
    if kind == "dask-backed":
        return bi.from_array(da.from_array(values, chunks=(*CHUNKS, -1)[:ndim]))
    if kind == "noise-source":
        return SOURCES["noise"].func(shape=_noise_shape(ndim), **NOISE)
    path, options = inputs.location(kind, ndim, where)
    if kind == "bigimg-zarr-open_zarr":
        return bi.open_zarr(path, storage_options=options)
    return bi.open_image(path, storage_options=options)


# ---------------------------------------------------------------- the columns
@pytest.fixture(scope="module")
def zca_models(tmp_path_factory) -> dict[int, Path]:
    """A ZCA model per ndim (features: x and band, samples: rows), fitted in memory."""
    root = tmp_path_factory.mktemp("zca")
    out = {}
    for ndim in (2, 3):
        path = root / f"zca-{ndim}d.npz"
        ref = bi.from_array(_values("tiff", ndim))
        bi.ZCA(sample_dim="y", nan_policy="omit").fit(ref).save(path)
        out[ndim] = path
    return out


def _params(op: str, tmp: Path, ndim: int, models: dict[int, Path]) -> dict[str, Any]:
    given: dict[str, Any] = {
        "astype": {"dtype": "float64"},
        "gaussian_filter": {"sigma": 1.5},
        "equalize_hist": {"bins": 32},
        "add_noise": {"length_scale": 2.0, "seed": 1, "std": 0.1},
        # eps=1 bounds W's gain: 64 rows of 144 features make a singular covariance
        "zca_fit": {"model": tmp / f"zca-{uuid.uuid4().hex}.npz", "sample_dim": "y", "eps": 1.0},
        "zca_transform": {"model": models[ndim]},
        "stack": {"upsample_factor": 4},
    }.get(op, {})
    if op == "zca_fit":
        given["nan_policy"] = "omit"
    return dict(OPS[op].params(**given))


def _apply(op: str, img: xr.DataArray, params: dict[str, Any]) -> xr.DataArray:
    if op == "stack":  # a stack of the image and a copy of it: registers to zero shifts
        img = xr.concat([img, img], dim="image")
    return OPS[op].func(img, **params)


REFERENCES: dict[tuple[str, int, str], np.ndarray] = {}


def _reference(kind: str, ndim: int, op: str, params: dict[str, Any]) -> np.ndarray:
    """The op on the in-memory array the input holds, ``(y, x, band)``, cached."""
    ref_kind = "noise" if "noise" in kind else "png" if kind == "png" else "float"
    key = (ref_kind, ndim, op)
    if key not in REFERENCES:
        img = bi.from_array(_band_last(_values(kind, ndim)))
        if op == "read":
            REFERENCES[key] = img.values
        else:
            if op == "zca_fit":
                params = {**params, "model": Path(str(params["model"]) + ".ref.npz")}
            REFERENCES[key] = _apply(op, img, params).values
    return REFERENCES[key]


TOLERANCE = {  # chunking never changes a result: within 1e-6 (DESIGN), per-pixel ops exact
    "read": 0.0,
    "astype": 0.0,
    "coarsen_mean": 1e-6,
    # the fit sums X^T X in the chunks' order; 64 rows of 144 features (3-D) make a singular
    # covariance whose eigenvectors are nearly degenerate: float32 outputs within ~30 ulp
    "zca_fit": 1e-5,
}


def _check(out: xr.DataArray, ref: np.ndarray, op: str) -> None:
    assert {"y", "x"} <= set(out.dims), out.dims
    if "band" in out.dims:
        assert out.dims[-1] == "band" and out.dims.index("y") < out.dims.index("x"), out.dims
    values = np.asarray(out.values)
    if "band" not in out.dims:  # a numpy-backed 2-D input keeps its two dims
        values = values[..., None]
    assert values.shape == ref.shape, (values.shape, ref.shape)
    assert np.array_equal(np.isnan(values), np.isnan(ref))
    tol = TOLERANCE.get(op, 1e-6)
    if tol == 0.0:
        np.testing.assert_array_equal(values, ref)
    else:
        np.testing.assert_allclose(values, ref, rtol=tol, atol=tol)


def _cell(inputs, models, tmp_path, kind, ndim, where, op) -> None:
    img = _open(inputs, kind, ndim, where)
    if op == "zca_transform" and "band" not in img.dims:
        # the model's features are (x, band): a plain 2-D DataArray has no band, refused by name
        with pytest.raises(ValueError, match=r"feature dims \{'x': 48\}, but this ZCA was fitted"):
            _apply(op, img, _params(op, tmp_path, ndim, models))
        return
    params = {} if op == "read" else _params(op, tmp_path, ndim, models)
    out = img if op == "read" else _apply(op, img, params)
    if op == "zca_fit":
        assert Path(params["model"]).exists()
    _check(out, _reference(kind, ndim, op, params), op)


@pytest.fixture(autouse=True)
def _threads(request):
    if "client" in request.fixturenames:
        yield
        return
    with dask.config.set(scheduler="threads"):
        yield


@pytest.mark.parametrize(("row", "op"), CELLS)
def test_cell(inputs, zca_models, tmp_path, row, op):
    kind, ndim, where = row
    _cell(inputs, zca_models, tmp_path, kind, ndim, where, op)


# ---------------------------------------------------------------- on the cluster
CLUSTER_ROWS = [  # the paths (a noise store, a bare 2-D array on S3) and one of a kind
    ("bigimg-noise-cli", 2, "local"),
    ("zarr-v3", 2, "s3"),
    ("dask-backed", 2, "in-memory"),
    ("geotiff", 3, "local"),
]
CLUSTER_OPS = ["gaussian_filter", "equalize_hist"]  # a halo recompute, a statistics pass


@pytest.mark.cluster
@pytest.mark.parametrize("op", CLUSTER_OPS)
@pytest.mark.parametrize("row", CLUSTER_ROWS, ids=_row_id)
def test_cluster_cells(inputs, zca_models, tmp_path, client, row, op):
    """A representative subset on the LocalCluster (worker processes read the stores).

    ``memory://`` is not here: it lives in the client's process, which the
    workers do not share.
    """
    kind, ndim, where = row
    _cell(inputs, zca_models, tmp_path, kind, ndim, where, op)


def test_every_op_and_source_is_in_the_matrix(tmp_path, zca_models):
    """A newly registered op gets its parameters here, a new source its row, or this fails."""
    for op in OPS:
        _params(op, tmp_path, 2, zca_models)  # required parameters given, and valid
    assert {f"{name}-source" for name in SOURCES} <= set(KINDS)


@pytest.mark.cluster
def test_noise_then_run_with_a_filter_on_the_command_line(tmp_path, local_client):
    """Issue 22, item 1, as reported: ``bigimg noise`` then ``bigimg run`` with a filter step.

    It failed with exit 1 and "internal error: FutureCancelledError ... lost dependencies".
    """
    from bigimg.cli import main

    address = local_client.scheduler.address
    field = tmp_path / "f.zarr"
    (tmp_path / "run.toml").write_text(
        '[input]\npath = "f.zarr"\n[[steps]]\nop = "gaussian_filter"\nsigma = 2\n'
        '[output]\npath = "o.zarr"\n'
    )
    for args in (
        ["noise", str(field), "--shape", "64x48", "--length-scale", "3", "--chunks", "16"],
        ["run", str(tmp_path / "run.toml")],
    ):
        with pytest.raises(SystemExit) as done:
            main([*args, "--quiet", "--scheduler", address])
        assert done.value.code == 0
    noise = bi.from_array(bi.correlated_noise((64, 48), length_scale=3).values)
    expected = bi.gaussian_filter(noise, 2).values
    np.testing.assert_allclose(bi.open_zarr(tmp_path / "o.zarr").values, expected, atol=1e-6)
