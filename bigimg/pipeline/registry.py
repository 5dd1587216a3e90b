"""The op registry's building blocks: parameter models, ops, sources, one table.

An op is a function ``func(img, **params) -> DataArray`` with a pydantic
model of its config keys. The model declares the keys and their types only:
each key's default is read from the signature of the function it is passed
to, so a default is written once, where a Python user sees it too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
import xarray as xr
from pydantic import BaseModel, BeforeValidator, ConfigDict, create_model, model_validator
from pydantic.fields import FieldInfo

from bigimg.compute import Passes


class Params(BaseModel):
    """Base of every step's parameter model: strict keys and strict values, no coercion.

    ``sigma = true`` or ``sigma = "2"`` is an error, not 1 or 2; an int is a
    float where a float is expected. A TOML array is a tuple where a tuple is
    expected (:data:`FloatPair`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _plain_values(cls, data: Any) -> Any:
        """numpy scalars and arrays (from Python, ``bi.plan``) as the Python values they hold."""
        return _plain(data)


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars as Python scalars and arrays as lists, recursively.

    >>> _plain({"factor": np.int64(2), "out_range": np.array([0.0, 1.0])})
    {'factor': 2, 'out_range': [0.0, 1.0]}
    """
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _as_tuple(value: object) -> object:
    """A TOML array (a list) where a tuple is expected; anything else as given."""
    return tuple(value) if isinstance(value, list) else value


FloatPair = Annotated[tuple[float, float], BeforeValidator(_as_tuple)]
"""Two floats, e.g. ``out_range = [0, 1]`` (strict: no bools or strings)."""


@dataclass(frozen=True)
class Op:
    """A pipeline op (``[[steps]] op = name``) or input source (``[input] name = {...}``).

    ``writes`` names the ``Path`` params that are files the op writes: the
    pipeline refuses them when they exist (unless ``overwrite``) or overlap
    any input or output, and calls the op with ``overwrite=``; every other
    ``Path`` param is an input. ``computes`` is true for an op that computes
    global statistics or fits before it returns, so reads its input once
    more than the write does. ``passes`` is the same op written as
    :data:`bigimg.compute.Passes` (same arguments), so that the pipeline can
    compute its first statistics pass with other work. ``pointwise`` marks an
    op that maps each pixel on its own, cheaply: recomputing its output costs
    less than writing it and reading it back (see :meth:`Pipeline.scratch_steps
    <bigimg.pipeline.config.Pipeline.scratch_steps>`).
    """

    name: str
    func: Callable[..., xr.DataArray]
    params: type[Params]
    writes: tuple[str, ...] = ()
    computes: bool = False
    passes: Callable[..., Passes[xr.DataArray]] | None = None
    pointwise: bool = False


def op(
    name: str,
    func: Callable[..., xr.DataArray],
    params: type[Params],
    *,
    defaults_from: Iterable[Callable[..., Any]] = (),
    writes: tuple[str, ...] = (),
    computes: bool = False,
    passes: Callable[..., Passes[xr.DataArray]] | None = None,
    pointwise: bool = False,
) -> Op:
    """An :class:`Op` whose params take their defaults from ``func`` (then ``defaults_from``).

    Raises
    ------
    TypeError
        The model declares a default itself, or names a key that none of the
        functions takes.
    ValueError
        ``passes`` is given for an op that does not compute.
    """
    if passes is not None and not computes:
        raise ValueError(f"op {name!r}: passes= is for an op that computes (computes=True)")
    model = _with_defaults(name, params, [func, *defaults_from])
    return Op(name, func, model, writes, computes, passes, pointwise)


def table(entries: Iterable[Op]) -> dict[str, Op]:
    """``{name: op}``; a name registered twice is an error, never a silent replacement."""
    out: dict[str, Op] = {}
    for entry in entries:
        if entry.name in out:
            raise ValueError(
                f"op {entry.name!r} is registered twice ({out[entry.name].func.__qualname__} "
                f"and {entry.func.__qualname__})"
            )
        out[entry.name] = entry
    return out


def _with_defaults(
    name: str, params: type[Params], funcs: list[Callable[..., Any]]
) -> type[Params]:
    signatures = [inspect.signature(f) for f in funcs]
    fields: dict[str, Any] = {}
    for key, field in params.model_fields.items():
        if not field.is_required():
            raise TypeError(
                f"op {name!r}: {params.__name__}.{key} declares a default; defaults come from "
                f"the signature of {funcs[0].__qualname__}"
            )
        found = [s.parameters[key] for s in signatures if key in s.parameters]
        if not found:
            raise TypeError(
                f"op {name!r}: {params.__name__}.{key} is not a parameter of "
                f"{[f.__qualname__ for f in funcs]}"
            )
        defaults = [p.default for p in found if p.default is not inspect.Parameter.empty]
        if defaults:
            fields[key] = (
                field.annotation,
                FieldInfo.merge_field_infos(field, default=defaults[0]),
            )
    if not fields:
        return params
    return create_model(
        params.__name__,
        __base__=params,
        __doc__=params.__doc__,
        __module__=params.__module__,
        **fields,
    )
