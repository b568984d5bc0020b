"""Where a raster's pixels are: its CRS (WKT), geotransform and nodata value, as bounded,
checked JSON that a `.vqz` carries (a georeferenced patch's chunk, a scene's metadata).

No rasterio here: the codec's LMDB path stays free of it; readers and writers convert.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from vqae.errors import DataError

MAX_BYTES = 1 << 16  # a CRS WKT is a few kB
MAX_COORDINATE = 1e15  # metres or degrees: far beyond any Earth coordinate, finite x 6


@dataclass(frozen=True)
class Georef:
    crs: str | None = None  # WKT; None: the raster had none
    transform: tuple[float, ...] | None = None  # affine (a, b, c, d, e, f) of the 10 m grid
    nodata: int | None = None

    def fields(self) -> dict:
        return {"crs": self.crs, "transform": None if self.transform is None
                else list(self.transform), "nodata": self.nodata}

    def pack(self) -> bytes:
        data = json.dumps(self.fields(), separators=(",", ":")).encode()
        if len(data) > MAX_BYTES:
            raise DataError(f"the georeferencing is {len(data):,} bytes (a CRS WKT that long?); "
                            f"at most {MAX_BYTES:,} fit a .vqz")
        return data

    @classmethod
    def from_fields(cls, raw: dict, bad: str) -> Georef:
        """From parsed JSON; `bad` starts the error ("<file>: its georeferencing is damaged")."""
        crs, transform, nodata = raw.get("crs"), raw.get("transform"), raw.get("nodata")
        if not (crs is None or isinstance(crs, str)):
            raise DataError(f"{bad} (crs)")
        if not (nodata is None or (isinstance(nodata, int) and not isinstance(nodata, bool)
                                   and 0 <= nodata <= 0xFFFF)):
            raise DataError(f"{bad} (nodata)")
        if transform is not None:
            if not isinstance(transform, list) or len(transform) != 6 or any(
                    not isinstance(v, (int, float)) or isinstance(v, bool) for v in transform):
                raise DataError(f"{bad} (transform)")
            try:
                transform = tuple(float(v) for v in transform)
            except OverflowError as err:
                raise DataError(f"{bad} (transform)") from err
            # finite even at 60 m: scaled by 6, which a pixel size of 1e300 m would not be
            if not all(math.isfinite(v) and abs(v) < MAX_COORDINATE for v in transform):
                raise DataError(f"{bad} (transform)")
        return cls(crs, transform, nodata)

    def rasterio_fields(self, factor: int, x0: int, y0: int, name: str) -> dict:
        """rasterio profile fields (crs, transform, nodata) of a band whose pixels are `factor`
        times the 10 m grid's, for a region starting at 10 m pixel (x0, y0); a DataError
        naming `name` for a CRS GDAL cannot read."""
        from rasterio.crs import CRS
        from rasterio.errors import CRSError
        from rasterio.transform import Affine

        out = {}
        if self.crs is not None:
            try:
                out["crs"] = CRS.from_user_input(self.crs)
            except CRSError as err:
                raise DataError(f"{name}: its CRS is not one GDAL reads ({str(err)[:80]}); "
                                "the file is damaged") from err
        if self.transform is not None:
            out["transform"] = Affine(*self.transform) @ Affine.translation(x0, y0) \
                @ Affine.scale(factor)
        if self.nodata is not None:
            out["nodata"] = self.nodata
        return out

    @classmethod
    def parse(cls, data: bytes, name: str) -> Georef:
        bad = f"{name}: its georeferencing is damaged"
        if len(data) > MAX_BYTES:
            raise DataError(f"{bad} ({len(data):,} bytes, over {MAX_BYTES:,})")
        try:
            raw = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as err:
            raise DataError(f"{bad} ({type(err).__name__})") from err
        if not isinstance(raw, dict):
            raise DataError(bad)
        return cls.from_fields(raw, bad)
