"""Compiled per-block kernels: plain numpy arrays in, numpy arrays out.

No dask and no xarray here: the capability modules (``bigimg.filters``,
``bigimg.histogram``, ``bigimg.adapthist``) cut their blocks and call these. Each kernel is a
short loop compiled by numba on first use (see :mod:`bigimg.kernels._jit`)
and is tested directly against its numpy/scipy reference
(``tests/test_kernels.py``).
"""
