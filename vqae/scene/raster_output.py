"""A decoded scene as GeoTIFFs: one per band at its native resolution, with the scene's CRS,
geotransform, nodata and band name, tiled and DEFLATE-compressed, then rewritten as a
Cloud-Optimized GeoTIFF where rasterio's GDAL has the COG driver. Strips are written as they
are decoded, so memory holds a strip and GDAL's block cache."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from vqae.codec.georef import Georef
from vqae.scene.container import SceneMeta

BLOCK = 256
CREATION = {"tiled": True, "blockxsize": BLOCK, "blockysize": BLOCK, "compress": "deflate",
            "predictor": 2}


def has_cog() -> bool:
    with rasterio.Env() as env:
        return "COG" in env.drivers()


class RasterSink:
    """Per band `<stem>_<band>.tif` in `folder`, each band's native size clipped to the scene
    (the padding of the last tiles is dropped); `write(i, row0, rows)` puts native rows."""

    def __init__(self, folder: Path, stem: str, meta: SceneMeta, region, name: str) -> None:
        self.folder, self.meta = folder, meta
        self.sizes, self.paths, self.datasets, self.offsets = [], [], [], []
        for band, (w, h, f) in zip(meta.bands, meta.native):
            x0, y0 = region.x0 // f, region.y0 // f
            x1, y1 = min(-(-region.x1 // f), w), min(-(-region.y1 // f), h)
            path = folder / f"{stem}_{band}.tif"
            where = Georef(meta.crs, meta.transform, meta.nodata)
            profile = dict(driver="GTiff", width=x1 - x0, height=y1 - y0, count=1,
                           dtype="uint16", **where.rasterio_fields(f, x0 * f, y0 * f, name),
                           **CREATION)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                ds = rasterio.open(path.with_suffix(".partial.tif"), "w", **profile)
            ds.set_band_description(1, band)
            self.datasets.append(ds)
            self.paths.append(path)
            self.sizes.append((x1 - x0, y1 - y0))
            self.offsets.append((x0, y0))

    def write(self, i: int, row0: int, col0: int, rows: np.ndarray) -> None:
        """Native rows of band i starting at native (row0, col0) of the scene."""
        (w, h), (x0, y0) = self.sizes[i], self.offsets[i]
        top, left = row0 - y0, col0 - x0
        part = rows[max(-top, 0) : max(h - top, 0), max(-left, 0) : max(w - left, 0)]
        if part.size:
            self.datasets[i].write(part, 1, window=Window(max(left, 0), max(top, 0),
                                                           part.shape[1], part.shape[0]))

    def finish(self) -> list[Path]:
        """Close every band; make each a COG where GDAL offers it."""
        self.close()
        cog = has_cog()
        for path in self.paths:
            partial = path.with_suffix(".partial.tif")
            if cog:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    rasterio.shutil.copy(partial, path, driver="COG", compress="DEFLATE",
                                         predictor="2", blocksize=str(BLOCK))
                partial.unlink()
            else:
                partial.rename(path)
        return self.paths

    def close(self) -> None:
        for ds in self.datasets:
            ds.close()
        self.datasets = []
