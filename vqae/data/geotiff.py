"""Raw band loading from GeoTIFFs: values exactly as stored, errors name the file.

`read_tiff` opens any GeoTIFF with rasterio. `read_tiff_fast` reads the plain TIFFs that
BigEarthNet ships (one band, little-endian, uncompressed or deflate) with tifffile, ~3x cheaper
per file than a GDAL open, and hands every other file to `read_tiff`.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
import tifffile
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from vqae.data.bands import check_native_shape
from vqae.data.discover import PatchFiles
from vqae.errors import DataError


def read_tiff(path: str | Path) -> np.ndarray:
    """All bands of one GeoTIFF as (bands, H, W) in the stored dtype; no CRS is required."""
    try:
        with warnings.catch_warnings():  # patches need no georeference (DESIGN.md data facts)
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.read()
    except (RasterioError, OSError) as err:
        raise DataError(
            f"cannot read GeoTIFF {path}: {err}; the file is truncated or not a TIFF, "
            "re-download or remove that patch"
        ) from err


# Compressions tifffile decodes without imagecodecs: none, deflate (Adobe and old code).
FAST_COMPRESSIONS = {1, 8, 32946}
FAST_DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "int16", "uint32", "int32", "float32",
                                     "float64")}


def _plain_page(tif: tifffile.TiffFile):
    page = tif.pages.first
    plain = (tif.byteorder == "<" and page.samplesperpixel == 1 and page.dtype in FAST_DTYPES
             and int(page.compression) in FAST_COMPRESSIONS and int(page.predictor) == 1)
    return page if plain else None


def read_tiff_fast(path: str | Path) -> np.ndarray:
    """Same result as `read_tiff` (bands, H, W); tifffile for plain single-band TIFFs."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = _plain_page(tif)
            if page is not None:
                return page.asarray()[None]  # (1, H, W)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError, KeyError):
        pass  # truncated or odd: rasterio reads it or raises the DataError naming the file
    return read_tiff(path)


def read_band(path: str | Path, band: str, patch: str,
              read: Callable[[str | Path], np.ndarray] = read_tiff) -> np.ndarray:
    """One single-band GeoTIFF as (H, W), checked against the band's native BigEarthNet size."""
    array = read(path)
    if array.shape[0] != 1:
        raise DataError(f"{path}: expected 1 band in the file, found {array.shape[0]}")
    array = array[0]
    check_native_shape(array, band, patch, path)
    return array


def load_patch_bands(patch: PatchFiles, bands: list[str],
                     read: Callable[[str | Path], np.ndarray] = read_tiff
                     ) -> dict[str, np.ndarray]:
    """Band name -> native array for the bands asked for; a missing band names its path."""
    out = {}
    for band in bands:
        path = patch.files.get(band)
        if path is None:
            raise DataError(
                f"patch {patch.name} has no band {band}: expected {patch.expected(band)}"
            )
        out[band] = read_band(path, band, patch.name, read)
    return out
