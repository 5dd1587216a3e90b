"""The plumbing of the compiled kernels: one decorator, numba imported on first call.

Kernels are short plain loops over numpy arrays (numbagg's style). They are
compiled by numba with ``cache=True`` (the machine code is stored next to
this package, or under ``NUMBA_CACHE_DIR``, and reused by every later
process and dask worker), ``nogil=True`` (dask's threads run them in
parallel) and IEEE arithmetic (no ``fastmath``: the order of every sum is
fixed, so a value never depends on where a chunk starts, and SIMD and scalar
code give the same bits).

numba itself is imported when a kernel is first *called*, never at
``import bigimg``: the command line's start-up does not pay for it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_LOCK = threading.Lock()

OPTIONS: dict[str, Any] = {
    "cache": True,
    "nogil": True,
    "fastmath": False,
    "error_model": "numpy",  # x / 0 gives inf or NaN, as numpy, and no check per division
    "boundscheck": False,
}


class LazyKernel:
    """A Python function compiled by ``numba.njit(**OPTIONS)`` on its first call.

    Calling it compiles (or loads from the on-disk cache) a specialization
    per argument types, like any numba dispatcher. ``py_func`` is the plain
    Python function, for tests and debugging.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.py_func = func
        self._compiled: Callable[..., Any] | None = None
        functools.update_wrapper(self, func)

    def __call__(self, *args: Any) -> Any:
        compiled = self._compiled
        if compiled is None:
            compiled = self.compile()
        return compiled(*args)

    def compile(self) -> Callable[..., Any]:
        """The numba dispatcher (imports numba the first time)."""
        with _LOCK:
            if self._compiled is None:
                import numba

                self._compiled = numba.njit(**OPTIONS)(self.py_func)
        return self._compiled

    def __reduce__(self) -> str:  # pickled by name (dask ships tasks that reference a kernel)
        return self.py_func.__qualname__


def kernel(func: Callable[..., Any]) -> LazyKernel:
    """Decorate a plain-loop function as a compiled kernel (see the module docstring)."""
    return LazyKernel(func)
