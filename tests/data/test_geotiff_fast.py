"""`read_tiff_fast` (tifffile) returns exactly what `read_tiff` (rasterio) returns, or defers."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from vqae.data import geotiff
from vqae.data.geotiff import read_tiff, read_tiff_fast
from vqae.errors import DataError


def _write(path, array, **options):
    count = 1 if array.ndim == 2 else array.shape[0]
    with rasterio.open(path, "w", driver="GTiff", height=array.shape[-2], width=array.shape[-1],
                       count=count, dtype=array.dtype.name, **options) as dst:
        dst.write(array if array.ndim == 3 else array[None])


@pytest.mark.parametrize("dtype, options, fast_path", [
    ("uint16", {}, True),
    ("uint16", {"compress": "deflate"}, True),
    ("float32", {"tiled": True, "blockxsize": 16, "blockysize": 16}, True),
    ("int16", {"compress": "lzw"}, False),  # not a fast-path codec
    ("uint16", {"ENDIANNESS": "BIG"}, False),
    ("uint16", {"compress": "deflate", "predictor": 2}, False),
])
def test_fast_equals_rasterio(tmp_path, monkeypatch, dtype, options, fast_path):
    rng = np.random.default_rng(0)
    array = (rng.normal(1000, 300, (60, 60))).astype(dtype)
    path = tmp_path / "b.tif"
    _write(path, array, **options)
    ref = read_tiff(path)
    if fast_path:  # prove tifffile alone read it
        monkeypatch.setattr(geotiff, "read_tiff", lambda p: pytest.fail("rasterio was used"))
    fast = read_tiff_fast(path)
    assert fast.dtype == ref.dtype == np.dtype(dtype) and fast.shape == ref.shape == (1, 60, 60)
    np.testing.assert_array_equal(fast, ref)


def test_multiband_goes_through_rasterio(tmp_path):
    array = np.arange(3 * 20 * 20, dtype=np.int16).reshape(3, 20, 20)
    _write(tmp_path / "m.tif", array)
    np.testing.assert_array_equal(read_tiff_fast(tmp_path / "m.tif"), array)


def test_truncated_file_names_the_file(tmp_path):
    path = tmp_path / "t.tif"
    _write(path, np.ones((120, 120), np.uint16))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=str(path)):
        read_tiff_fast(path)
