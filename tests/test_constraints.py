"""constraints.txt pins every distribution `make` installs: bigimg's requirements with the
extras the Makefile installs, and theirs, all the way down, at the versions installed."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = re.search(r'-e "\.\[([\w,]+)\]"', (ROOT / "Makefile").read_text())


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _closure(extras: set[str]) -> dict[str, str]:
    """Installed distributions reached from bigimg[extras]: name -> installed version."""
    seen: dict[str, str] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    todo = [("bigimg", extras)]
    while todo:
        name, wanted = todo.pop()
        if (name, frozenset(wanted)) in done:
            continue
        done.add((name, frozenset(wanted)))
        dist = metadata.distribution(name)
        for text in dist.requires or []:
            req = Requirement(text)
            env_extras = wanted or {""}
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in env_extras):
                continue
            seen[canonicalize_name(req.name)] = metadata.version(req.name)
            todo.append((req.name, set(req.extras)))
    return seen


def test_make_installs_only_pinned_versions() -> None:
    assert EXTRAS, "the Makefile's install line names the extras"
    pins = _pins()
    installed = _closure(set(EXTRAS.group(1).split(",")))
    unpinned = sorted(n for n in installed if n not in pins)
    assert not unpinned, f"not in constraints.txt: {unpinned}"
    differ = {n: (pins[n], v) for n, v in installed.items() if pins[n] != v}
    assert not differ, f"constraints.txt pin vs installed: {differ}"
