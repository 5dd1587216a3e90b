"""The package's shape: imports point one way, ops are registered once, accessors are real.

These tests read the source (``ast``), so an import cycle hidden inside a
function body fails here too, not only one at module level.
"""

from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import numpy as np
import pytest

import bigimg as bi
from bigimg.pipeline import OPS, SOURCES, registry

PACKAGE = Path(bi.__file__).parent
CAPABILITIES = {
    "bigimg.adapthist",
    "bigimg.filters",
    "bigimg.histogram",
    "bigimg.stretch",
    "bigimg.noise",
    "bigimg.register",
    "bigimg.whiten",
    "bigimg.resample",
    "bigimg.quicklook",
    "bigimg.reproject",
}
BASE = {"bigimg.errors", "bigimg._version", "bigimg.files", "bigimg.compute", "bigimg.image"}
# compiled per-block kernels: numpy in, numpy out; between the base and the capabilities
KERNELS = {
    "bigimg.kernels",
    "bigimg.kernels._jit",
    "bigimg.kernels.histogram",
    "bigimg.kernels.gaussian",
    "bigimg.kernels.adapthist",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every bigimg import in module ``name``, function bodies too."""
    path = MODULES[name]
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name.split(".")[0] == "bigimg"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            if base.split(".")[0] != "bigimg":
                continue
            names = [a.name for a in node.names]
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            out += [(m, []) for m in submodules]
            if len(submodules) < len(names):
                out.append((base, [n for n in names if f"{base}.{n}" not in MODULES]))
    return out


@functools.cache
def _graph() -> dict[str, frozenset[str]]:
    return {m: frozenset(dep for dep, _ in _imports(m) if dep != m) for m in MODULES}


def _find_cycle(graph: dict[str, frozenset[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(m: str, stack: list[str]) -> list[str] | None:
        state[m] = 1
        for dep in sorted(graph.get(m, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep, [*stack, dep])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_import_cycle() -> None:
    cycle = _find_cycle(_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_the_cycle_check_finds_cycles_and_sees_real_imports() -> None:
    fake = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"})}
    assert _find_cycle(fake) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": frozenset({"b"}), "b": frozenset()}) is None
    graph = _graph()
    assert "bigimg.io.store" in graph["bigimg.io.api"]
    assert "bigimg.whiten" in graph["bigimg.pipeline.ops"]  # function-level imports count too
    assert "bigimg.cluster" in graph["bigimg.cli"]


@pytest.mark.parametrize("module", sorted(CAPABILITIES | KERNELS | BASE))
def test_lower_layers_never_import_upper_ones(module: str) -> None:
    allowed = BASE | (CAPABILITIES | KERNELS if module in CAPABILITIES else set())
    if module in KERNELS:
        allowed = KERNELS | {"bigimg.errors"}
    bad = sorted({dep for dep in _graph()[module] if dep not in allowed})
    assert not bad, f"{module} imports {bad}; it may import only {sorted(allowed)}"


def test_kernels_are_a_layer_of_plain_numpy() -> None:
    """Every module of bigimg/kernels is listed, and none imports dask, xarray or zarr."""
    assert {m for m in MODULES if m.startswith("bigimg.kernels")} == KERNELS
    assert "bigimg.kernels.gaussian" in _graph()["bigimg.filters"]
    for module in KERNELS:
        tree = ast.parse(MODULES[module].read_text())
        roots = {
            a.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for a in n.names
        }
        roots |= {
            (n.module or "").split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and not n.level
        }
        assert not roots & {"dask", "xarray", "zarr", "distributed"}, f"{module} imports {roots}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_nothing_imports_a_private_name_from_another_module(module: str) -> None:
    private = [f"{dep}.{n}" for dep, names in _imports(module) for n in names if n.startswith("_")]
    private = [p for p in private if p not in {"bigimg._version.__version__"}]
    assert not private, f"{module} imports private names {private}"


def test_every_op_has_a_real_model_and_defaults_from_signatures() -> None:
    assert set(OPS) >= {"gaussian_filter", "equalize_hist", "stack", "zca_fit", "add_noise"}
    assert (
        OPS["gaussian_filter"].params.model_fields["truncate"].default
        == inspect.signature(bi.gaussian_filter).parameters["truncate"].default
    )
    assert OPS["stack"].params.model_fields["method"].default == "bilinear"  # shift_and_add's
    assert OPS["zca_fit"].params.model_fields["eps"].default == 1e-5  # ZCA's
    assert OPS["zca_fit"].params.model_fields["model"].is_required()
    assert [n for n, o in OPS.items() if o.computes] == [
        "equalize_hist",
        "equalize_adapthist",
        "gaussian_stretch",
        "stack",
        "zca_fit",
    ]
    assert SOURCES["noise"].params.model_fields["seed"].default == 0


def test_a_duplicate_op_name_is_an_error() -> None:
    class P(registry.Params):
        sigma: float

    entry = registry.op("blur", bi.gaussian_filter, P)
    with pytest.raises(ValueError, match="op 'blur' is registered twice"):
        registry.table([entry, entry])


def test_a_model_default_or_unknown_key_is_refused() -> None:
    class WithDefault(registry.Params):
        sigma: float
        truncate: float = 3.0

    with pytest.raises(TypeError, match="WithDefault.truncate declares a default"):
        registry.op("blur", bi.gaussian_filter, WithDefault)

    class Unknown(registry.Params):
        sigmaa: float

    with pytest.raises(TypeError, match="Unknown.sigmaa is not a parameter"):
        registry.op("blur", bi.gaussian_filter, Unknown)


def test_accessor_methods_have_the_functions_signatures_and_docs() -> None:
    img = bi.from_array(np.ones((8, 8)))
    sig = inspect.signature(img.bigimg.gaussian_filter)
    assert list(sig.parameters) == list(inspect.signature(bi.gaussian_filter).parameters)[1:]
    assert img.bigimg.gaussian_filter.__doc__ == bi.gaussian_filter.__doc__
    assert "nan_policy" in str(sig)
    out = img.bigimg.gaussian_filter(2.0)
    np.testing.assert_array_equal(out.values, bi.gaussian_filter(img, 2.0).values)


# modules the CLI loads before a command imports what it needs (issue 25): `bigimg --help`
# and `bigimg info` stay fast only while these import nothing heavy at module level
START_UP = ["bigimg", "bigimg.cli", "bigimg.errors", "bigimg.files", "bigimg.io"]
START_UP += ["bigimg.io.info", "bigimg.io.layout", "bigimg.io.location"]  # info: zarr only
HEAVY = {"dask", "xarray", "distributed", "pandas", "numpy", "scipy", "pydantic", "matplotlib"}


def _module_level_imports(name: str) -> set[str]:
    """Top-level modules imported when ``name`` is imported (not in functions or TYPE_CHECKING)."""
    found: set[str] = set()
    todo = list(ast.parse(MODULES[name].read_text()).body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
        elif isinstance(node, ast.If | ast.Try | ast.With):
            todo += [n for part in ("body", "orelse", "finalbody", "handlers") for n in getattr(node, part, [])]  # fmt: skip
        elif isinstance(node, ast.ExceptHandler):
            todo += node.body
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return found


@pytest.mark.parametrize("module", START_UP)
def test_start_up_modules_import_nothing_heavy_at_module_level(module: str) -> None:
    imported = _module_level_imports(module)
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"{module} imports {heavy} at module level; import them where used"
    inner = sorted(m for m in imported if m.startswith("bigimg") and m not in START_UP)
    assert not inner, f"{module} imports {inner} at module level, outside the start-up set"
