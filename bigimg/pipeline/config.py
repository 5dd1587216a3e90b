"""Pipeline configs (TOML) -> lazy graph -> Zarr.

A config is data only: an ``[input]`` table (a path, or one registered source
such as ``noise``), a list of ``[[steps]]`` each naming a registered ``op`` and
its parameters, and an ``[output]`` table. Every table is validated by a
pydantic model that forbids unknown keys. The ops and sources are listed in
:mod:`bigimg.pipeline.ops`, the one place that knows every capability.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import xarray as xr
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, model_validator

from bigimg.cog import CogResult, to_cog
from bigimg.compute import run_passes
from bigimg.errors import ConfigError
from bigimg.files import check_disjoint, check_new_object, is_url, read_paths
from bigimg.image import check_image, from_array
from bigimg.io.api import open_zarr, to_zarr
from bigimg.io.fingerprint import check_fingerprint, of_computation, of_config, source_of
from bigimg.io.info import store_info
from bigimg.io.location import Location
from bigimg.io.lock import writer_lock
from bigimg.io.read import open_image
from bigimg.io.store import WriteResult, check_output, is_complete, write
from bigimg.pipeline.ops import OPS, SOURCES
from bigimg.pipeline.registry import Params


# ---------------------------------------------------------------- models
class InputConfig(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)  # extra = registered sources

    path: Path | str | None = None  # a local path (resolved), or a URL
    nodata: float | None = None
    chunks: Literal["auto"] | int | dict[str, int] = "auto"
    storage_options: dict[str, Any] = {}  # never recorded or printed


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    path: Path | str  # a local path (resolved), or a URL
    format: Literal["zarr", "cog"] = "zarr"
    pyramid: StrictBool = False
    shards: dict[str, int] | None = None
    storage_options: dict[str, Any] = {}  # never recorded or printed
    nodata: float | None = None  # COG only: the GDAL NoData value

    @model_validator(mode="after")
    def _cog_options(self) -> OutputConfig:
        if self.format == "cog":
            bad = [k for k in ("pyramid", "shards", "storage_options") if getattr(self, k)]
            if bad:
                raise ValueError(f"{bad} apply to Zarr output, not format = 'cog'")
            if is_url(str(self.path)):
                raise ValueError("a COG is written to a local path")
        elif self.nodata is not None:
            raise ValueError("nodata applies to format = 'cog' (Zarr keeps NaN)")
        return self


class StepConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    op: str
    params: Params


@dataclass(frozen=True)
class Pipeline:
    """A validated config, paths resolved against its folder.

    Built from a TOML config (:func:`load_config`), a mapping
    (:func:`parse_config`) or in Python (:func:`plan`, where ``image`` is the
    input and the output is given to :meth:`to_zarr` / :meth:`to_cog`).
    """

    input: InputConfig
    steps: tuple[StepConfig, ...]
    output: OutputConfig
    source_name: str | None
    source_params: Params | None
    raw_steps: tuple[dict[str, Any], ...]
    config_path: Path | None = None
    image: xr.DataArray | None = None

    def to_zarr(
        self,
        store: str | os.PathLike[str],
        *,
        storage_options: Mapping[str, Any] | None = None,
        shards: Mapping[str, int] | None = None,
        pyramid: bool = False,
        overwrite: bool = False,
        resume: bool = False,
        progress: bool | None = None,
    ) -> WriteResult:
        """Run the planned pipeline into a Zarr store (computes); :func:`bigimg.to_zarr`'s options."""
        output = {"path": os.fspath(store), "pyramid": pyramid, "shards": shards}
        output["storage_options"] = dict(storage_options or {})
        return cast(
            WriteResult,
            self._with_output(output).run(overwrite=overwrite, resume=resume, progress=progress),
        )

    def to_cog(
        self,
        path: str | os.PathLike[str],
        *,
        nodata: float | None = None,
        overwrite: bool = False,
        progress: bool | None = None,
    ) -> CogResult:
        """Run the planned pipeline into a Cloud-Optimized GeoTIFF (computes); see :func:`bigimg.to_cog`."""
        output = {"path": os.fspath(path), "format": "cog", "nodata": nodata}
        return cast(
            CogResult, self._with_output(output).run(overwrite=overwrite, progress=progress)
        )

    def _with_output(self, data: Mapping[str, Any]) -> Pipeline:
        output = _validate(OutputConfig, {k: v for k, v in data.items() if v is not None}, "output")
        return dataclasses.replace(
            self, output=output.model_copy(update={"path": _abs(output.path, Path.cwd())})
        )

    def paths(self) -> tuple[list[Path | str], list[tuple[str, Path | str]]]:
        """``(reads, writes)``: every path the run reads, and ``(key, path)`` of every one it writes."""
        reads: list[Path | str] = [p for p in (self.input.path, self.config_path) if p is not None]
        if self.image is not None and self.image.chunks is not None:
            reads += sorted(read_paths(self.image.data))
        writes: list[tuple[str, Path | str]] = [("output.path", self.output.path)]
        for i, step in enumerate(self.steps):
            for field, value in step.params:
                if isinstance(value, Path) or is_url(value):
                    if field in OPS[step.op].writes:
                        writes.append((f"steps[{i}].{field}", value))
                    else:
                        reads.append(value)
        return reads, writes

    def as_cog(self) -> Pipeline:
        """This pipeline writing a Cloud-Optimized GeoTIFF (``bigimg run --cog``)."""
        data = self.output.model_dump() | {"format": "cog"}
        try:
            output = OutputConfig.model_validate(data)
        except ValidationError as e:
            raise ConfigError(f"--cog: {e.errors()[0]['msg']}") from None
        if Path(str(output.path)).suffix.lower() not in (".tif", ".tiff"):
            raise ConfigError(f"--cog: output.path {str(output.path)!r} must end in .tif or .tiff")
        return dataclasses.replace(self, output=output)

    def plan_note(self) -> str | None:
        """One line saying which steps compute statistics and what the run reads for them."""
        computing = [i for i, s in enumerate(self.steps) if OPS[s.op].computes]
        if not computing:
            return None
        scratched = self.scratch_steps()
        parts = []
        for i in computing:
            name = f"steps[{i}] ({self.steps[i].op})"
            if i in scratched:
                parts.append(f"{name} reads its input from a scratch copy written once")
            else:
                parts.append(f"{name} reads its input once per statistics pass")
        where = f"; scratch: {self._scratch_root()} (deleted when done)" if scratched else ""
        return "note: " + ", ".join(parts) + where

    def check(self, *, overwrite: bool = False, resume: bool = False) -> str:
        """Refuse a run that would lose data, before any work; returns the store action.

        No written path may overlap a read one or another written one
        (whatever ``overwrite`` says); existing files are refused unless
        ``overwrite`` (or, for an op's files, ``resume``); a resumed store must
        have been written from this same input, options and steps.
        """
        if self.output is _NO_OUTPUT:
            raise ValueError("a plan() is run by its to_zarr(path) or to_cog(path)")
        reads, writes = self.paths()
        for i, (key, path) in enumerate(writes):
            others = [p for j, (_k, p) in enumerate(writes) if j != i]
            check_disjoint(path, [*reads, *others], what=key)
        if self.output.format == "cog":
            if resume:
                raise ValueError("resume: a COG is written in one go; run again with overwrite")
            check_new_object(self.output.path, overwrite=overwrite, what="output.path")
            for key, path in writes[1:]:
                check_new_object(path, overwrite=overwrite, what=key)
            self._check_scratch(overwrite=overwrite, resume=False)
            return "replace" if Path(self.output.path).exists() else "create"
        action = check_output(self._output(), overwrite=overwrite, resume=resume)
        if action == "resume":
            check_fingerprint(self._output(), self.fingerprint())
        for key, path in writes[1:]:
            check_new_object(path, overwrite=overwrite or resume, what=key)
        if not (action == "resume" and is_complete(self._output())):
            self._check_scratch(overwrite=overwrite, resume=resume)
        return action

    def scratch_steps(self) -> list[int]:
        """The computing steps whose input the run writes once to a scratch array.

        A step that computes statistics reads its input once per pass, and
        then once more for the output. When that input is costly to recompute
        (a generated source, or any step that is not ``pointwise``, such as a
        filter, since the last scratch array), the run writes it once to a
        scratch store beside the output, ``<output>.scratch/steps-<i>.zarr``,
        computing the step's first statistics pass in the same graph, and every
        later pass reads the scratch store instead. The scratch stores resume
        like the output and are deleted once the output is complete.
        """
        out = []
        costly = self.source_name is not None
        for i, step in enumerate(self.steps):
            op = OPS[step.op]
            if op.computes and costly:
                out.append(i)
                costly = False
            costly = costly or not op.pointwise
        return out

    def _output(self) -> Location:
        return Location.of(self.output.path, self.output.storage_options or None)

    def _scratch_root(self) -> Location:
        out = self._output()
        return out.parent.child(f"{out.name}.scratch")

    def _scratch(self, i: int) -> Location:
        return self._scratch_root().child(f"steps-{i}.zarr")

    def _check_scratch(self, *, overwrite: bool, resume: bool) -> None:
        """Scratch stores left by an interrupted run are resumed or replaced, never silently reused."""
        root = self._scratch_root()
        if root.local and not root.path.exists():
            return
        for i in self.scratch_steps():
            check_output(self._scratch(i), overwrite=overwrite, resume=resume)

    def fingerprint(self, steps: int | None = None) -> dict[str, Any]:
        """What determines the output, or the input of ``steps[steps]`` (a scratch store).

        The config's input, options and steps (:func:`bigimg.io.fingerprint.of_config`);
        for a plan of an image, the image's own computation too (its graph's
        token and what it reads), so that another image is never taken for it.
        """
        out = of_config(
            self._source(),
            self._input_options(),
            list(self.raw_steps[:steps]),
            storage_options=self.input.storage_options or None,
        )
        if self.image is not None:
            image = of_computation(self.image, self._output())
            out.update(graph=image["graph"], reads=image["reads"])
        return out

    def _source(self) -> str:
        if self.image is not None:
            return source_of(self.image)
        return str(self.input.path) if self.source_name is None else self.source_name

    def _input_options(self) -> dict[str, Any]:
        options = self.input.model_dump(mode="json", exclude={"path", "storage_options"})
        if self.source_params is not None:
            options[self.source_name or ""] = self.source_params.model_dump(mode="json")
        return options

    def build(self, *, overwrite: bool = False) -> xr.DataArray:
        """The lazy output image, every step recomputed from the input (may compute statistics).

        ``overwrite`` is passed to the ops that write files of their own.
        :meth:`run` plans its reads instead (see :meth:`scratch_steps`).
        """
        img = self._input_image()
        for step in self.steps:
            img = OPS[step.op].func(img, **self._kwargs(step, overwrite))
        return img

    def _kwargs(self, step: StepConfig, overwrite: bool) -> dict[str, Any]:
        kwargs = dict(step.params)
        if OPS[step.op].writes:
            kwargs["overwrite"] = overwrite
        return kwargs

    def _input_image(self) -> xr.DataArray:
        # a dict[str, int] for a Mapping[Hashable, Any] (Mapping's key type is invariant)
        chunks = cast("str | int | Mapping[Hashable, Any]", self.input.chunks)
        if self.image is not None:
            return self.image
        if self.source_name is not None:
            assert self.source_params is not None
            img = SOURCES[self.source_name].func(**dict(self.source_params))
            img = from_array(img, chunks=chunks) if self.input.chunks != "auto" else img
        else:
            assert self.input.path is not None
            img = open_image(
                self.input.path,
                chunks=chunks,
                nodata=self.input.nodata,
                storage_options=self.input.storage_options or None,
            )
        return img

    def _planned(self, *, overwrite: bool, resume: bool, progress: bool | None) -> xr.DataArray:
        """The lazy output image, through the scratch stores of :meth:`scratch_steps` (computes)."""
        img = self._input_image()
        scratched = self.scratch_steps()
        for i, step in enumerate(self.steps):
            op = OPS[step.op]
            kwargs = self._kwargs(step, overwrite or resume)
            if i not in scratched:
                img = op.func(img, **kwargs)
                continue
            passes = op.passes(img, **kwargs) if op.passes is not None else None
            first = next(passes) if passes is not None else ()  # checks the arguments
            where = self._scratch(i)
            if where.local:
                where.path.parent.mkdir(exist_ok=True)
            done = write(
                img,
                where,
                overwrite=overwrite,
                resume=resume,
                config=list(self.raw_steps[:i]),
                source=self._source(),
                fingerprint=self.fingerprint(i),
                progress=progress,
                also=first,
                compress=False,  # read back twice, soon: raw bytes cost less than zstd
            )
            # read back in img's own chunks and dim order: a reduction over other blocks
            # would sum in another order, and the plan gives the functions' bits (issue 22)
            chunks = None if img.chunks is None else dict(zip(img.dims, img.chunks, strict=True))
            stored = open_zarr(where, chunks=chunks)
            if set(stored.dims) == set(img.dims):
                stored = stored.transpose(*img.dims)
            stored = stored.assign_attrs(img.attrs)
            if op.passes is None:
                img = op.func(stored, **kwargs)
            else:  # the same passes on the stored copy; the first one is done when fused
                img = run_passes(op.passes(stored, **kwargs), first=done.also)
        return img

    def run(
        self,
        *,
        overwrite: bool = False,
        resume: bool = False,
        progress: bool | None = None,
        pyramid: bool | None = None,
    ) -> Any:
        """Build the graph and write it to ``output.path`` (computes).

        Returns a :class:`bigimg.WriteResult` for Zarr output, a
        :class:`bigimg.cog.CogResult` for ``format = "cog"``.
        """
        action = self.check(overwrite=overwrite, resume=resume)  # fail before any work
        if action == "resume" and is_complete(self._output()):
            stored = store_info(self._output())["chunks_stored"]
            return WriteResult(self.output.path, 0, stored, 0.0)
        if self.output.format == "cog":
            return self._run(overwrite=overwrite, resume=resume, progress=progress, pyramid=pyramid)
        with writer_lock(self._output()):  # the whole run, scratch stores included
            return self._run(overwrite=overwrite, resume=resume, progress=progress, pyramid=pyramid)

    def _run(
        self, *, overwrite: bool, resume: bool, progress: bool | None, pyramid: bool | None
    ) -> Any:
        img = self._planned(overwrite=overwrite, resume=resume, progress=progress)
        result: Any
        if self.output.format == "cog":
            result = to_cog(
                img,
                self.output.path,
                overwrite=overwrite,
                nodata=self.output.nodata,
                progress=progress,
            )
        else:
            result = to_zarr(
                img,
                self.output.path,
                storage_options=self.output.storage_options or None,
                shards=cast("Mapping[Hashable, int] | None", self.output.shards),
                overwrite=overwrite,
                resume=resume,
                config=list(self.raw_steps),
                source=self._source(),
                progress=progress,
                pyramid=self.output.pyramid if pyramid is None else pyramid,
                fingerprint=self.fingerprint(),
            )
        self._remove_scratch()
        return result

    def _remove_scratch(self) -> None:
        """Delete the scratch stores this run wrote, and their folder if nothing else is in it."""
        for i in self.scratch_steps():
            self._scratch(i).remove()
        root = self._scratch_root()
        if root.local and root.path.is_dir() and not any(root.path.iterdir()):
            root.path.rmdir()


def load_config(path: str | Path) -> Pipeline:
    """Read and validate a TOML pipeline config.

    Raises
    ------
    FileNotFoundError
        No such config file.
    ConfigError
        Invalid TOML, unknown keys or ops, or bad values; the message names
        the offending key.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"config: {str(path)!r} is a folder, not a TOML config file")
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file: {str(path)!r}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config: {str(path)!r} is not valid TOML: {e}") from None
    return dataclasses.replace(parse_config(data, base=path.parent), config_path=path.resolve())


def parse_config(data: Mapping[str, Any], *, base: Path) -> Pipeline:
    """Validate a config mapping; relative paths resolve against ``base``."""
    unknown = sorted(set(data) - {"input", "steps", "output"})
    if unknown:
        raise ConfigError(
            f"config: unknown top-level key(s) {unknown}; expected input, steps, output"
        )
    for key in ("input", "output"):
        if not isinstance(data.get(key), Mapping):
            raise ConfigError(f"config: [{key}] table is required")
    inp = _validate(InputConfig, data["input"], "input")
    extra = sorted((inp.model_extra or {}).keys())
    bad = [k for k in extra if k not in SOURCES]
    if bad:
        allowed = ["path", "nodata", "chunks", "storage_options", *sorted(SOURCES)]
        raise ConfigError(f"config: unknown key(s) {bad} in [input]; allowed: {allowed}")
    if len(extra) + (inp.path is not None) != 1:
        raise ConfigError(
            f"config: [input] needs exactly one of 'path' or a source {sorted(SOURCES)}, got "
            f"{['path'] * (inp.path is not None) + extra}"
        )
    source_name = extra[0] if extra else None
    source_params = None
    if source_name is not None:
        raw = (inp.model_extra or {})[source_name]
        if not isinstance(raw, Mapping):
            raise ConfigError(f"config: input.{source_name} must be a table")
        source_params = _resolve(
            _validate(SOURCES[source_name].params, raw, f"input.{source_name}"), base
        )
    else:
        inp = inp.model_copy(update={"path": _abs(inp.path, base)})
    out = _validate(OutputConfig, data["output"], "output")
    out = out.model_copy(update={"path": _abs(out.path, base)})
    raw_steps = data.get("steps", [])
    steps = _parse_steps(raw_steps, base)
    return Pipeline(inp, steps, out, source_name, source_params, tuple(dict(s) for s in raw_steps))


def plan(
    source: xr.DataArray | str | os.PathLike[str],
    steps: Sequence[Mapping[str, Any]],
    *,
    nodata: float | None = None,
    chunks: Literal["auto"] | int | dict[str, int] = "auto",
    storage_options: Mapping[str, Any] | None = None,
) -> Pipeline:
    """A pipeline in Python: the steps of a config, run with the same read plan as ``bigimg run``.

    Nothing is computed until :meth:`Pipeline.to_zarr` or :meth:`Pipeline.to_cog`.
    There, a step that computes statistics (``equalize_hist``, ``gaussian_stretch``,
    ``zca_fit``...) after a costly step (a filter) gets its input written once to a
    scratch store beside the output instead of recomputing it for every pass
    (see :meth:`Pipeline.scratch_steps`). Calling the functions one after
    another (``bi.equalize_hist(bi.gaussian_filter(img, 2))``) computes the
    histogram at once, from the filter recomputed for each pass.

    Parameters
    ----------
    source : xarray.DataArray, str or path-like
        The input image, or a path/URL that :func:`bigimg.open_image` opens
        (with ``nodata``, ``chunks`` and ``storage_options``).
    steps : sequence of dict
        ``{"op": name, **params}`` per step, as ``[[steps]]`` tables in a
        config; checked here (unknown ops or keys raise :class:`ConfigError`).

    Examples
    --------
    >>> import numpy as np, bigimg as bi, tempfile, os
    >>> img = bi.from_array(np.random.default_rng(0).random((64, 64)), chunks=32)
    >>> steps = [{"op": "gaussian_filter", "sigma": 2}, {"op": "equalize_hist"}]
    >>> p = bi.plan(img, steps)
    >>> p.scratch_steps()  # equalize's input, the filtered image, is written once
    [1]
    >>> out = os.path.join(tempfile.mkdtemp(), "out.zarr")
    >>> p.to_zarr(out, progress=False).chunks_written
    4
    """
    if isinstance(source, xr.DataArray):
        check_image(source, "source")
        if nodata is not None or chunks != "auto" or storage_options:
            raise ValueError(
                "nodata, chunks and storage_options apply to a path source, not an image"
            )
        inp, image = InputConfig(), source
    else:
        options = dict(storage_options or {})
        inp = _validate(
            InputConfig,
            {
                "path": os.fspath(source),
                "nodata": nodata,
                "chunks": chunks,
                "storage_options": options,
            },
            "input",
        )
        inp, image = inp.model_copy(update={"path": _abs(inp.path, Path.cwd())}), None
    if isinstance(steps, Mapping) or not isinstance(steps, Sequence):
        raise TypeError(f"steps must be a sequence of dicts, got {type(steps).__name__}")
    raw = [dict(s) if isinstance(s, Mapping) else s for s in steps]
    parsed = _parse_steps(raw, Path.cwd())
    return Pipeline(inp, parsed, _NO_OUTPUT, None, None, tuple(raw), image=image)


_NO_OUTPUT = OutputConfig(path="(no output yet: call to_zarr or to_cog)")


def _parse_steps(raw_steps: Any, base: Path) -> tuple[StepConfig, ...]:
    """Validate ``[[steps]]`` tables; relative paths resolve against ``base``."""
    if not isinstance(raw_steps, list):
        raise ConfigError("config: steps must be an array of tables ([[steps]])")
    steps = []
    for i, raw in enumerate(raw_steps):
        where = f"steps[{i}]"
        if not isinstance(raw, Mapping) or "op" not in raw:
            raise ConfigError(f"config: {where} needs an 'op' key")
        name = raw["op"]
        if not isinstance(name, str):
            raise ConfigError(
                f"config: {where}.op must be a string naming an op, got {name!r}; "
                f"known ops: {sorted(OPS)}"
            )
        if name not in OPS:
            raise ConfigError(f"config: {where}.op {name!r} is unknown; known ops: {sorted(OPS)}")
        params = _validate(OPS[name].params, {k: v for k, v in raw.items() if k != "op"}, where)
        steps.append(StepConfig(op=name, params=_resolve(params, base)))
    return tuple(steps)


def _validate(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        # an unknown key (often a typo) explains a "missing" one: report it first
        errors = sorted(e.errors(), key=lambda x: x["type"] != "extra_forbidden")
        err = errors[0]
        key = _key(err["loc"])
        loc = ".".join(str(p) for p in (where, *key))
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"config: unknown key {loc!r}") from None
        if err["type"] == "missing":
            raise ConfigError(f"config: missing key {loc!r}") from None
        tags = [next(p for p in x["loc"] if _is_type_tag(p)) for x in errors if _key(x["loc"]) == key and any(_is_type_tag(p) for p in x["loc"])]  # fmt: skip
        if len(tags) > 1:  # a union (sigma: a number or a table): name every type allowed
            allowed = " or ".join(dict.fromkeys(str(t) for t in tags))
            raise ConfigError(
                f"config: {loc}: expected {allowed} (got {err.get('input')!r})"
            ) from None
        raise ConfigError(f"config: {loc}: {err['msg']} (got {err.get('input')!r})") from None


def _key(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """An error's location without pydantic's names of union members."""
    return tuple(p for p in loc if not _is_type_tag(p))


def _is_type_tag(part: object) -> bool:
    """pydantic's name of one member of a union in an error's location (``float``, ``dict[str,float]``)."""
    return isinstance(part, str) and (
        "[" in part or part in ("float", "int", "str", "bool", "none", "is-instance[Path]")
    )


def _abs(path: Path | str | None, base: Path) -> Path | str | None:
    """A local path resolved against ``base``; a URL unchanged."""
    if path is None or is_url(path):
        return path
    path = Path(path).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _resolve(params: Params, base: Path) -> Params:
    update = {k: _abs(v, base) for k, v in params if isinstance(v, Path)}
    return params.model_copy(update=update) if update else params
