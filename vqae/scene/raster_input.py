"""A scene's rasters, read in windows: a folder of single-band rasters (GeoTIFF or COG per band
as BigEarthNet stores them, or a Sentinel-2 SAFE `IMG_DATA` folder of JPEG 2000 files) or one
multi-band GeoTIFF holding the model's bands.

Everything a file declares is checked before a pixel is read: one CRS, one extent, each band
at its native pixel size (10, 20 or 60 m: a factor 1, 2 or 6 over the 10 m grid), uint16, and
a size within `max_pixels`. Windows past the raster's edge come back mirrored (the scene is
padded to whole tiles), with their nodata mask.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from vqae.data.bands import NATIVE_SIZE, PATCH_SIZE
from vqae.errors import DataError
from vqae.io.limits import require_regular

SUFFIXES = (".tif", ".tiff", ".jp2")
# <anything>_B02.tif, T33UUP_20200101T100000_B8A_20m.jp2 (L2A), ..._B02_10m.jp2
BAND_NAME = re.compile(r"(?:^|_)(B(?:0[1-9]|1[0-2]|8A))(?:_(\d+)m)?$", re.IGNORECASE)
MAX_PIXELS = 1 << 30  # 10 m pixels: 32768 x 32768, nine Sentinel-2 tiles
MAX_FILES = 10_000  # files looked at in a scene folder
TOLERANCE = 1e-6  # of a pixel: how far origins and pixel sizes may differ


def factor(band: str) -> int:
    """A band's pixel size over the 10 m grid's (1, 2 or 6)."""
    return PATCH_SIZE // NATIVE_SIZE[band]


@dataclass(frozen=True)
class BandFile:
    band: str
    path: Path
    index: int  # the band of the file (1-based)
    factor: int  # its pixel size over the 10 m grid's
    width: int
    height: int


def _open(path: Path):
    require_regular(path, "scene raster")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except RasterioError as err:
        raise DataError(f"{path} is not a raster GDAL reads ({err}); give GeoTIFF or JPEG "
                        "2000 files") from err


def find_band_files(folder: Path, bands: tuple[str, ...]) -> dict[str, Path]:
    """Each band's file in a scene folder (searched at any depth); where a band comes at
    several resolutions (an L2A product's R10m, R20m, R60m), the finest."""
    found: dict[str, list[tuple[int, Path]]] = {}
    for i, path in enumerate(sorted(folder.rglob("*"))):
        if i >= MAX_FILES:
            raise DataError(f"{folder} holds over {MAX_FILES:,} files; point at the scene's "
                            "own folder (its IMG_DATA)")
        if path.suffix.lower() not in SUFFIXES or path.name.startswith("."):
            continue
        m = BAND_NAME.search(path.stem)
        if m and m.group(1).upper() in bands:
            found.setdefault(m.group(1).upper(), []).append((int(m.group(2) or 0), path))
    missing = [b for b in bands if b not in found]
    if missing:
        raise DataError(f"{folder} has no raster for band(s) {' '.join(missing)}: the model "
                        f"codes {' '.join(bands)}; expected files named like "
                        f"<scene>_{missing[0]}.tif or .jp2")
    return {b: _finest(b, found[b]) for b in bands}


def _finest(band: str, candidates: list[tuple[int, Path]]) -> Path:
    """The file of the band's own resolution where a name says it, else the only one."""
    own = [p for res, p in candidates if res in (0, 10 * factor(band))]
    if len(own) == 1 or (own and len(candidates) == len(own) == 1):
        return own[0]
    names = ", ".join(str(p) for _, p in candidates[:3])
    raise DataError(f"band {band} has {len(candidates)} candidate rasters ({names}); keep one "
                    "per band in the scene folder")


class SceneRasters:
    """The open rasters of one scene; `window(i, ...)` reads band i's native pixels."""

    def __init__(self, path: str | Path, bands: tuple[str, ...], nodata: int | None = None,
                 ignore_nodata: bool = False, max_pixels: int = MAX_PIXELS):
        self.path, self.bands = Path(path), tuple(bands)
        self.datasets: dict[Path, object] = {}
        try:
            self.files = self._files()
            self._check_grid(max_pixels)
            self.nodata = None if ignore_nodata else self._nodata(nodata)
        except BaseException:
            self.close()
            raise

    # ---- what the files declare -------------------------------------------------------------
    def _dataset(self, path: Path):
        if path not in self.datasets:
            self.datasets[path] = _open(path)
        return self.datasets[path]

    def _files(self) -> list[BandFile]:
        if self.path.is_dir():
            paths = find_band_files(self.path, self.bands)
            return [self._band_file(b, paths[b], 1, factor(b)) for b in self.bands]
        if not self.path.exists():
            raise DataError(f"scene {self.path} does not exist")
        ds = self._dataset(self.path)
        order = self._stack_order(ds)
        return [self._band_file(b, self.path, i, 1) for b, i in zip(self.bands, order)]

    def _stack_order(self, ds) -> list[int]:
        """Band i of a multi-band file: by its description (B02 ...) where every band has one,
        else in the model's order."""
        names = [(d or "").strip().upper() for d in ds.descriptions]
        named = [n for n in names if BAND_NAME.search(n)]
        if named:  # band names given: each model band exactly once, by name
            twice = sorted({n for n in named if names.count(n) > 1})
            missing = [b for b in self.bands if b not in names]
            if twice or missing:
                raise DataError(f"{self.path}: its band descriptions name "
                                f"{' '.join(twice) + ' twice' if twice else ''}"
                                f"{'; ' if twice and missing else ''}"
                                f"{'no ' + ' '.join(missing) if missing else ''}; the model "
                                f"codes {' '.join(self.bands)}: fix the descriptions")
            return [names.index(b) + 1 for b in self.bands]
        if ds.count != len(self.bands):
            raise DataError(f"{self.path} has {ds.count} bands without band names; the model "
                            f"codes {len(self.bands)} ({' '.join(self.bands)}): give a file "
                            "with those bands in that order, or name them (band descriptions)")
        return list(range(1, ds.count + 1))

    def _band_file(self, band: str, path: Path, index: int, f: int) -> BandFile:
        ds = self._dataset(path)
        if self.path.is_dir() and ds.count != 1:
            raise DataError(f"{path} has {ds.count} bands; a scene folder holds one raster "
                            f"per band (band {band})")
        if ds.dtypes[index - 1] != "uint16":
            raise DataError(f"{path} band {band} is {ds.dtypes[index - 1]}; Sentinel-2 "
                            "digital numbers are uint16 (convert with gdal_translate -ot UInt16 "
                            "if the values are digital numbers)")
        return BandFile(band, path, index, f, ds.width, ds.height)

    def _check_grid(self, max_pixels: int) -> None:
        """One CRS, one origin, each band at its factor's pixel size and extent."""
        base = min(self.files, key=lambda b: b.factor)
        ref = self._dataset(base.path)
        self.crs = ref.crs
        t = ref.transform
        if t.b or t.d:
            raise DataError(f"{base.path} has a rotated geotransform; warp it north-up first "
                            "(gdalwarp)")
        res = (t.a / base.factor, t.e / base.factor)
        self.width, self.height = base.width * base.factor, base.height * base.factor
        self.transform = (res[0], 0.0, t.c, 0.0, res[1], t.f)
        if self.width * self.height > max_pixels:
            raise DataError(f"{base.path} declares {base.width:,} x {base.height:,} pixels, a "
                            f"{self.width:,} x {self.height:,} scene at 10 m: over the "
                            f"{max_pixels:,} pixels allowed; raise --max-pixels if it is real")
        for b in self.files:
            ds = self._dataset(b.path)
            if ds.crs != self.crs:
                raise DataError(f"{b.path} (band {b.band}) has CRS {ds.crs or 'none'}, "
                                f"{base.path} has {self.crs or 'none'}: one scene has one CRS")
            u = ds.transform
            want = (res[0] * b.factor, res[1] * b.factor)
            if abs(u.a - want[0]) > TOLERANCE * abs(want[0]) or abs(u.e - want[1]) > \
                    TOLERANCE * abs(want[1]) or u.b or u.d:
                raise DataError(f"{b.path} (band {b.band}) has {abs(u.a):g} x {abs(u.e):g} "
                                f"pixels; at its native resolution it needs {abs(want[0]):g} "
                                f"x {abs(want[1]):g} (the 10 m grid of {base.path} times "
                                f"{b.factor})")
            if abs(u.c - t.c) > TOLERANCE * abs(res[0]) * 1e3 or \
                    abs(u.f - t.f) > TOLERANCE * abs(res[1]) * 1e3:
                raise DataError(f"{b.path} (band {b.band}) starts at ({u.c}, {u.f}), "
                                f"{base.path} at ({t.c}, {t.f}): the rasters cover different "
                                "extents")
            if not (self.width <= b.width * b.factor < self.width + b.factor
                    and self.height <= b.height * b.factor < self.height + b.factor):
                raise DataError(f"{b.path} (band {b.band}) is {b.width} x {b.height} pixels; "
                                f"a {self.width} x {self.height} scene at 10 m needs "
                                f"{-(-self.width // b.factor)} x {-(-self.height // b.factor)}"
                                " at its resolution: the rasters cover different extents")

    def _nodata(self, given: int | None) -> int | None:
        """The scene's nodata value: `given`, else the one every file declares (or none)."""
        if given is not None:
            return given
        values = {b.path: self._dataset(b.path).nodatavals[b.index - 1] for b in self.files}
        distinct = set(values.values())
        if len(distinct) > 1:
            shown = ", ".join(f"{p.name}: {v}" for p, v in list(values.items())[:4])
            raise DataError(f"the scene's rasters declare different nodata values ({shown}); "
                            "pass --nodata V (or --ignore-nodata)")
        value = distinct.pop() if distinct else None
        if value is None:
            return None
        if not (float(value).is_integer() and 0 <= value <= 0xFFFF):
            raise DataError(f"{self.files[0].path} declares nodata {value}, which no uint16 "
                            "pixel holds; pass --nodata V or --ignore-nodata")
        return int(value)

    # ---- pixels ----------------------------------------------------------------------------
    def window(self, i: int, r0: int, r1: int, c0: int, c1: int) -> tuple[np.ndarray, np.ndarray]:
        """Band i's native pixels rows r0:r1, columns c0:c1 (may reach past the raster: mirrored)
        -> (uint16 values, bool nodata mask, both mirrored past the raster)."""
        b = self.files[i]
        ir0, ir1 = max(r0, 0), min(r1, b.height)
        ic0, ic1 = max(c0, 0), min(c1, b.width)
        ds = self._dataset(b.path)
        try:
            data = ds.read(b.index, window=Window(ic0, ir0, ic1 - ic0, ir1 - ir0))
        except RasterioError as err:
            raise DataError(f"{b.path} (band {b.band}) fails to read rows {ir0}-{ir1} ({err}); "
                            "the file is damaged") from err
        mask = data == self.nodata if self.nodata is not None else np.zeros(data.shape, bool)
        pad = ((ir0 - r0, r1 - ir1), (ic0 - c0, c1 - ic1))
        if any(any(p) for p in pad):
            data = np.pad(data, pad, mode="symmetric")
            mask = np.pad(mask, pad, mode="symmetric")  # a mirrored nodata pixel is nodata
        return data, mask

    def describe(self) -> str:
        crs = self.crs.to_string() if self.crs else "no CRS (the output will have none)"
        nodata = "none" if self.nodata is None else str(self.nodata)
        return f"{self.width} x {self.height} at 10 m, {crs}, nodata {nodata}"

    def close(self) -> None:
        for ds in self.datasets.values():
            ds.close()
        self.datasets.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
