"""Raw band loading from GeoTIFFs: values exactly as stored, errors name the file.

`read_tiff` opens any GeoTIFF with rasterio (GDAL's GTiff driver only). `read_tiff_fast` reads
the plain TIFFs that BigEarthNet ships (one band, little-endian, uncompressed or deflate) with
tifffile, ~3x cheaper per file than a GDAL open, and hands every other file to `read_tiff`.

Both check what a file declares before decoding a pixel (DESIGN.md, Safety): it must be a
regular file, and its band count, height, width and dtype must be what the caller expects
(`Expected`: a BigEarthNet band's native size, a HySpecNet cube), so a 4 MB file declaring
40000 x 40000 pixels is refused from its header instead of inflating to 3.2 GB. The stored
strips of a file tifffile parses may not exceed what that shape needs either.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import tifffile
from rasterio.errors import NotGeoreferencedWarning, RasterioError

from vqae.data.bands import NATIVE_SIZE, S1_DTYPE, S2_DTYPE, check_native_shape, is_s1
from vqae.data.discover import PatchFiles
from vqae.errors import DataError
from vqae.io.limits import require_regular

ANY_MAX_BYTES = 64 << 20  # decoded size allowed when the caller names no shape
CHUNK_MAX = 4 << 20  # one decoded strip or tile (GDAL writes 256 or 512 pixel tiles)


@dataclass(frozen=True)
class Expected:
    """What a GeoTIFF must declare: checked against its header before any pixel is decoded."""

    count: int  # bands in the file
    height: int
    width: int
    dtype: str
    what: str  # the message's subject: "patch P band B02"
    why: str  # where the shape comes from: "for a 1200 m BigEarthNet patch"

    @property
    def nbytes(self) -> int:
        return self.count * self.height * self.width * np.dtype(self.dtype).itemsize


def band_expected(band: str, patch: str) -> Expected | None:
    """A BigEarthNet band's file: one band at its native size, uint16 (S2) or float32 (S1)."""
    size = NATIVE_SIZE.get(band)
    if size is None:
        return None
    dtype = S1_DTYPE if is_s1(band) else S2_DTYPE
    return Expected(1, size, size, dtype, f"patch {patch} band {band}",
                    "for a 1200 m BigEarthNet patch")


def _shape(count: int, height: int, width: int) -> tuple[int, ...]:
    return (height, width) if count == 1 else (count, height, width)


def _declared(count: int, height: int, width: int, dtype: object) -> str:
    return f"{_shape(count, height, width)} {dtype}"


def check_declared(path: str | Path, expected: Expected | None, count: int, height: int,
                   width: int, dtype: object) -> None:
    """Refuse a header whose shape or dtype is not `expected` (or, with no expectation, whose
    decoded size exceeds ANY_MAX_BYTES)."""
    if expected is None:
        itemsize = np.dtype(dtype).itemsize if dtype is not None else 8
        if count * height * width * itemsize > ANY_MAX_BYTES:
            raise DataError(f"GeoTIFF {path} declares {_declared(count, height, width, dtype)}, "
                            f"more than {ANY_MAX_BYTES >> 20} MiB decoded; not a patch, "
                            "remove it")
        return
    same = (count, height, width) == (expected.count, expected.height, expected.width)
    if not same or dtype is None or np.dtype(dtype) != np.dtype(expected.dtype):
        want = _declared(expected.count, expected.height, expected.width, expected.dtype)
        raise DataError(f"{expected.what} has shape {_declared(count, height, width, dtype)} in "
                        f"{path} (its header; nothing decoded), expected {want} {expected.why}: "
                        "replace or remove the file")


def _check_chunks(path, page, file_size: int) -> None:
    """The strips or tiles tifffile would read and decode, for a header that passed
    check_declared: each decodes to at most CHUNK_MAX bytes, and together they store no more
    than the file holds or than twice what they decode to (deflate never expands that much)."""
    itemsize = page.dtype.itemsize if page.dtype is not None else 8
    height, width = page.imagelength, page.imagewidth
    if page.is_tiled:
        rows, cols = page.tilelength, page.tilewidth
    else:
        rows, cols = min(page.rowsperstrip or height, height), width
    samples = page.samplesperpixel if int(page.planarconfig) == 1 else 1
    chunk = max(rows, 1) * max(cols, 1) * max(page.tiledepth, 1) * samples * itemsize
    if chunk > CHUNK_MAX:
        raise DataError(f"GeoTIFF {path} declares strips/tiles of {cols}x{rows} pixels "
                        f"({chunk:,} bytes decoded each, more than {CHUNK_MAX >> 20} MiB); "
                        "not a patch file, replace or remove it")
    planes = page.samplesperpixel // samples * max(page.imagedepth, 1)
    needed = -(-height // max(rows, 1)) * -(-width // max(cols, 1)) * planes * chunk
    stored = sum(int(n) for n in page.databytecounts)
    limit = 2 * needed + (64 << 10)
    if stored > min(file_size, limit):
        raise DataError(f"GeoTIFF {path} declares {stored:,} bytes of strips/tiles, more than "
                        f"its {file_size:,} bytes or the {limit:,} its shape needs; the file "
                        "is damaged, replace or remove it")


def read_tiff(path: str | Path, expected: Expected | None = None) -> np.ndarray:
    """All bands of one GeoTIFF as (bands, H, W) in the stored dtype; no CRS is required."""
    require_regular(path, "GeoTIFF")
    try:
        with warnings.catch_warnings():  # patches need no georeference (DESIGN.md data facts)
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path, driver="GTiff") as src:
                dtype = src.dtypes[0] if len(set(src.dtypes)) == 1 else "mixed dtypes"
                check_declared(path, expected, src.count, src.height, src.width,
                               None if dtype == "mixed dtypes" else dtype)
                _check_blocks(path, src)
                return src.read()
    except (RasterioError, OSError) as err:
        raise DataError(
            f"cannot read GeoTIFF {path}: {err}; the file is truncated or not a TIFF, "
            "re-download or remove that patch"
        ) from err


def _check_blocks(path, src) -> None:
    """GDAL decodes one block (strip or tile) at a time: each within CHUNK_MAX."""
    rows, cols = src.block_shapes[0]
    chunk = rows * cols * np.dtype(src.dtypes[0]).itemsize
    if chunk > CHUNK_MAX:
        raise DataError(f"GeoTIFF {path} declares blocks of {cols}x{rows} pixels ({chunk:,} "
                        f"bytes decoded each, more than {CHUNK_MAX >> 20} MiB); not a patch "
                        "file, replace or remove it")


# Compressions tifffile decodes without imagecodecs: none, deflate (Adobe and old code).
FAST_COMPRESSIONS = {1, 8, 32946}
FAST_DTYPES = {np.dtype(t) for t in ("uint8", "uint16", "int16", "uint32", "int32", "float32",
                                     "float64")}


def _plain_page(tif: tifffile.TiffFile):
    page = tif.pages.first
    plain = (tif.byteorder == "<" and page.samplesperpixel == 1 and page.dtype in FAST_DTYPES
             and int(page.compression) in FAST_COMPRESSIONS and int(page.predictor) == 1)
    return page if plain else None


def read_tiff_fast(path: str | Path, expected: Expected | None = None) -> np.ndarray:
    """Same result as `read_tiff` (bands, H, W); tifffile for plain single-band TIFFs."""
    size = require_regular(path, "GeoTIFF").st_size
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            check_declared(path, expected, page.samplesperpixel * max(page.imagedepth, 1),
                           page.imagelength, page.imagewidth, page.dtype)
            _check_chunks(path, page, size)
            if _plain_page(tif) is not None:
                return page.asarray()[None]  # (1, H, W)
    except (tifffile.TiffFileError, ValueError, OSError, struct.error, IndexError, KeyError,
            AttributeError, TypeError, RuntimeError, zlib.error):  # RuntimeError: imagecodecs
        pass  # truncated, damaged or odd: rasterio reads it or raises the DataError naming it
    return read_tiff(path, expected)


def read_band(path: str | Path, band: str, patch: str,
              read: Callable[..., np.ndarray] = read_tiff) -> np.ndarray:
    """One single-band GeoTIFF as (H, W), checked against the band's native BigEarthNet size
    (from its header, before decoding)."""
    array = read(path, band_expected(band, patch))
    if array.shape[0] != 1:
        raise DataError(f"{path}: expected 1 band in the file, found {array.shape[0]}")
    array = array[0]
    check_native_shape(array, band, patch, path)
    return array


def load_patch_bands(patch: PatchFiles, bands: list[str],
                     read: Callable[..., np.ndarray] = read_tiff
                     ) -> dict[str, np.ndarray]:
    """Band name -> native array for the bands asked for; a missing band names its path."""
    out, files = {}, patch.files
    for band in bands:
        path = files.get(band)
        if path is None:
            raise DataError(
                f"patch {patch.name} has no band {band}: expected {patch.expected(band)}"
            )
        out[band] = read_band(path, band, patch.name, read)
    return out


def patch_georef(patch: PatchFiles, bands: list[str]) -> dict | None:
    """A GeoTIFF patch's georeferencing as plain fields {crs: WKT, transform: the 10 m grid's
    affine, nodata}, read from its finest band's header; None when it has neither CRS nor
    geotransform (BigEarthNet v1 tiffs have both, and no nodata)."""
    files = patch.files
    band = min((b for b in bands if b in files), key=lambda b: -NATIVE_SIZE.get(b, 0))
    path = files[band]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                crs, t, nodata = ds.crs, ds.transform, ds.nodata
    except RasterioError as err:
        raise DataError(f"{path} is not a GeoTIFF GDAL reads ({err})") from err
    if crs is None and t.is_identity:
        return None
    f = 120 // NATIVE_SIZE.get(band, 120)
    usable = nodata is not None and float(nodata).is_integer() and 0 <= nodata <= 0xFFFF
    return {"crs": crs_text(crs),
            "transform": [t.a / f, t.b, t.c, t.d, t.e / f, t.f],
            "nodata": int(nodata) if usable else None}


def crs_text(crs) -> str | None:
    """A CRS as its authority code where it is one ("EPSG:32618": a few bytes a file), else
    as WKT; rasterio reads either back to an equal CRS."""
    if crs is None:
        return None
    epsg = crs.to_epsg(confidence_threshold=100)
    return f"EPSG:{epsg}" if epsg is not None else crs.to_wkt()
