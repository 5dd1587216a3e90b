"""An equirectangular (plate carrée) image reprojected to the Mollweide projection, out of core.

The whole globe fits in a Mollweide map as an ellipse twice as wide as it is
tall; the frame's corners outside that outline are NoData (NaN), as in the
map-projected mosaics bigimg is made for. Each output chunk is computed on its
own: the inverse projection of its pixel centres (numpy), then bilinear
sampling of the band of source rows those pixels fall in. Latitude depends on
the output row only, so a chunk's source rows are known before any data is
read, and a task holds one chunk and one band of source rows, never the
whole source or output.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from bigimg.image import check_image

SQRT2 = math.sqrt(2.0)


def to_mollweide(
    src: xr.DataArray, *, width: int, chunks: int = 2048, dtype: Any = None
) -> xr.DataArray:
    """``src``, a whole-globe equirectangular image, reprojected to Mollweide (lazy).

    Parameters
    ----------
    src : xarray.DataArray
        ``(y, x, band)`` image covering longitudes -180..180 (left to right)
        and latitudes 90..-90 (top to bottom), pixel-is-area; numpy- or
        dask-backed.
    width : int
        Width of the Mollweide map in pixels; its height is ``width // 2``.
    chunks : int, default 2048
        Chunk side of the output in pixels (``y`` and ``x``; ``band`` is one chunk).
    dtype : dtype, optional
        Output dtype; default float32 (float64 for a float64 source).

    Returns
    -------
    xarray.DataArray
        ``(y, x, band)``, NaN exactly at the pixels whose centre lies outside
        the ellipse ``(x / 2√2)² + (y / √2)² <= 1`` (projected units on the
        unit sphere), ``src``'s attrs plus ``bigimg_projection``.

    Raises
    ------
    TypeError
        ``src`` is not an image DataArray; ``width`` or ``chunks`` is not an int.
    ValueError
        ``width`` below 2 or ``chunks`` below 1.

    Notes
    -----
    Inverse Mollweide (Snyder 1987, p. 254) on the unit sphere, for a pixel
    centre ``(x, y)``: ``θ = asin(y / √2)``, latitude
    ``φ = asin((2θ + sin 2θ) / π)``, longitude ``λ = π x / (2√2 cos θ)``.
    The source is sampled bilinearly at ``(φ, λ)``, wrapping around in
    longitude and clamped at the poles. The result does not depend on the
    chunking (each pixel is computed from its own coordinates; within 1e-6,
    as numpy's vectorized ``sin``/``asin`` may differ by an ulp with an
    array's alignment).

    References
    ----------
    J. P. Snyder, *Map Projections: A Working Manual*, USGS Professional
    Paper 1395, 1987.

    Examples
    --------
    >>> import numpy as np, bigimg as bi
    >>> src = bi.from_array(np.ones((90, 180), "uint8"))
    >>> m = to_mollweide(src, width=40, chunks=16)
    >>> m.shape, m.dtype.name, int(np.isnan(m.values).sum())
    ((20, 40, 1), 'float32', 168)
    """
    check_image(src, "src")
    for name, value in {"width": width, "chunks": chunks}.items():
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
    if width < 2:
        raise ValueError(f"width must be at least 2, got {width!r}")
    if chunks < 1:
        raise ValueError(f"chunks must be at least 1, got {chunks!r}")
    src = src.transpose("y", "x", "band")
    out_dtype = np.dtype(dtype) if dtype is not None else _default_dtype(src.dtype)
    width, height = int(width), max(1, int(width) // 2)
    data = src.data if isinstance(src.data, da.Array) else da.from_array(np.asarray(src.data))
    src_h, src_w, nb = data.shape
    rows = [(y0, min(y0 + chunks, height)) for y0 in range(0, height, chunks)]
    cols = [(x0, min(x0 + chunks, width)) for x0 in range(0, width, chunks)]
    blocks = []
    for y0, y1 in rows:
        r0, r1 = source_rows((y0, y1), height, src_h)
        slab = data[r0:r1].rechunk((r1 - r0, src_w, nb))  # one task's band of source rows
        blocks.append(
            [
                [  # da.block: the innermost list runs along the last axis, band
                    da.map_blocks(
                        mollweide_block,
                        slab,
                        dtype=out_dtype,
                        chunks=((y1 - y0,), (x1 - x0,), (nb,)),
                        meta=np.empty((0, 0, 0), out_dtype),
                        rows=(y0, y1),
                        cols=(x0, x1),
                        width=width,
                        height=height,
                        src_row0=r0,
                        src_shape=(src_h, src_w),
                        out_dtype=out_dtype,
                    )
                ]
                for x0, x1 in cols
            ]
        )
    out = da.block(blocks)
    coords = {"band": src["band"]} if "band" in src.coords else {}
    return xr.DataArray(
        out, dims=("y", "x", "band"), coords=coords, attrs=dict(src.attrs)
    ).assign_attrs(
        bigimg_projection="Mollweide (unit sphere), whole globe; NaN outside its outline"
    )


def _default_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype("float64") if dtype == np.float64 else np.dtype("float32")


def _latitudes(rows: tuple[int, int], height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(y, θ, φ)`` of the centres of output rows ``rows[0]..rows[1]-1``."""
    y = (1.0 - 2.0 * (np.arange(rows[0], rows[1], dtype=np.float64) + 0.5) / height) * SQRT2
    theta = np.arcsin(np.clip(y / SQRT2, -1.0, 1.0))
    phi = np.arcsin(np.clip((2.0 * theta + np.sin(2.0 * theta)) / math.pi, -1.0, 1.0))
    return y, theta, phi


def _source_row(phi: np.ndarray, src_h: int) -> np.ndarray:
    """Fractional source row (pixel centres at integers) of latitude ``phi``."""
    return (math.pi / 2.0 - phi) / math.pi * src_h - 0.5


def source_rows(rows: tuple[int, int], height: int, src_h: int) -> tuple[int, int]:
    """``(first, stop)``: the source rows that output rows ``rows`` sample (bilinear: 2 per pixel).

    >>> source_rows((0, 10), 10, 100), source_rows((0, 5), 10, 100)
    ((8, 92), (8, 47))
    """
    _, _, phi = _latitudes(rows, height)
    r = np.floor(_source_row(phi, src_h))
    first = int(np.clip(r.min(), 0, src_h - 1))
    stop = int(np.clip(r.max() + 1, 0, src_h - 1)) + 1
    return first, stop


def mollweide_block(
    src_rows: np.ndarray,
    *,
    rows: tuple[int, int],
    cols: tuple[int, int],
    width: int,
    height: int,
    src_row0: int,
    src_shape: tuple[int, int],
    out_dtype: Any = np.float32,
) -> np.ndarray:
    """Output rows ``rows`` × cols ``cols`` of a ``width``-wide Mollweide map (numpy in and out).

    Parameters
    ----------
    src_rows : numpy.ndarray
        ``(r, src_w, band)``: the source rows ``src_row0 .. src_row0 + r - 1``
        of the whole equirectangular image of ``src_shape`` ``(src_h, src_w)``;
        they must hold :func:`source_rows` ``(rows, height, src_h)``.
    rows, cols : (int, int)
        The output window, ``[start, stop)`` in pixels.
    width, height : int
        The whole output frame.
    src_row0 : int
        The source row of ``src_rows[0]``.
    src_shape : (int, int)
        The whole source's ``(height, width)``.
    out_dtype : dtype, default float32

    Returns
    -------
    numpy.ndarray
        ``(rows, cols, band)``, NaN outside the globe's outline.

    Examples
    --------
    >>> import numpy as np
    >>> src = np.arange(8.0).reshape(2, 4, 1)  # 2 x 4 pixels of 90 degrees
    >>> out = mollweide_block(src, rows=(0, 4), cols=(0, 8), width=8, height=4,
    ...                       src_row0=0, src_shape=(2, 4))
    >>> print(np.where(np.isnan(out[..., 0]), ".", "#"))
    [['.' '#' '#' '#' '#' '#' '#' '.']
     ['#' '#' '#' '#' '#' '#' '#' '#']
     ['#' '#' '#' '#' '#' '#' '#' '#']
     ['.' '#' '#' '#' '#' '#' '#' '.']]
    """
    src_h, src_w = src_shape
    y, theta, phi = _latitudes(rows, height)
    x = (2.0 * (np.arange(cols[0], cols[1], dtype=np.float64) + 0.5) / width - 1.0) * 2.0 * SQRT2
    inside = (x[None, :] / (2.0 * SQRT2)) ** 2 + (y[:, None] / SQRT2) ** 2 <= 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = math.pi * x[None, :] / (2.0 * SQRT2 * np.cos(theta)[:, None])
    lam = np.clip(np.where(inside, lam, 0.0), -math.pi, math.pi)
    srow = _source_row(phi, src_h)  # (rows,)
    scol = (lam + math.pi) / (2.0 * math.pi) * src_w - 0.5  # (rows, cols)
    i0 = np.floor(srow)
    fr = (srow - i0)[:, None, None]
    i0 = i0.astype(np.int64)
    i1 = np.clip(i0 + 1, 0, src_h - 1) - src_row0
    i0 = np.clip(i0, 0, src_h - 1) - src_row0
    j0 = np.floor(scol)
    fc = (scol - j0)[:, :, None]
    j0 = j0.astype(np.int64)
    j1 = (j0 + 1) % src_w
    j0 = j0 % src_w
    s = np.asarray(src_rows)

    def at(i: np.ndarray, j: np.ndarray) -> np.ndarray:  # gathered first, then made float
        return s[i[:, None], j].astype(np.float64)

    top = at(i0, j0) * (1.0 - fc) + at(i0, j1) * fc
    bottom = at(i1, j0) * (1.0 - fc) + at(i1, j1) * fc
    out = top * (1.0 - fr) + bottom * fr
    out[~inside] = np.nan
    return out.astype(out_dtype)
