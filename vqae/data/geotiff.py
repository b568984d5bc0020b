"""Raw band loading from GeoTIFFs with rasterio: values exactly as stored, errors name the file."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
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


def read_band(path: str | Path, band: str, patch: str) -> np.ndarray:
    """One single-band GeoTIFF as (H, W), checked against the band's native BigEarthNet size."""
    array = read_tiff(path)
    if array.shape[0] != 1:
        raise DataError(f"{path}: expected 1 band in the file, found {array.shape[0]}")
    array = array[0]
    check_native_shape(array, band, patch, path)
    return array


def load_patch_bands(patch: PatchFiles, bands: list[str]) -> dict[str, np.ndarray]:
    """Band name -> native array for the bands asked for; a missing band names its path."""
    out = {}
    for band in bands:
        path = patch.files.get(band)
        if path is None:
            raise DataError(
                f"patch {patch.name} has no band {band}: expected {patch.expected(band)}"
            )
        out[band] = read_band(path, band, patch.name)
    return out
