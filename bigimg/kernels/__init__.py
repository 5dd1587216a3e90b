"""Compiled per-chunk kernels: plain numpy arrays in and out, no dask, no xarray."""
