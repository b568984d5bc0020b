"""The scene pipelines of `vqae compress` and `vqae decompress`, under the output policy:
a scene `.vqz` is written to a temporary file and renamed at the end; decoded GeoTIFFs go
into a folder of vqae.io.outputs.Output. A failure or a stop (TERM/USR1/INT, exit 75) leaves
nothing half-written."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from vqae.errors import DataError
from vqae.io.atomic import write_with
from vqae.io.limits import require_regular
from vqae.io.outputs import Output, check_out_file
from vqae.io.stops import StopFlag, Stopped
from vqae.scene.container import SceneFile, is_scene
from vqae.scene.raster_input import MAX_PIXELS, SceneRasters
from vqae.scene.scene_codec import Region, SceneDecoder, _check_codec, encode_tiles, \
    scene_header

log = logging.getLogger(__name__)
# GDAL's block cache defaults to 5% of RAM (1.2 GB here): a strip-by-strip pass needs a few
# blocks per band, so the cache is capped and memory stays independent of the scene's size
GDAL_CACHE_BYTES = 128 << 20


def gdal_env():
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)


def _scene_file(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return is_scene(f.read(8))
    except OSError:
        return False


def compress_scene(codec, scene: str | os.PathLike, out: str | os.PathLike,
                   depth: int | None = None, nodata: int | None = None,
                   ignore_nodata: bool = False, max_pixels: int = MAX_PIXELS,
                   overwrite: bool = False, progress: bool = False) -> dict:
    """Compress the scene at `scene` (a folder of band rasters or a multi-band GeoTIFF) into
    the file `out`; returns a summary (size, tiles, bytes, bpppb)."""
    _check_codec(codec)
    depth = codec.check_depth(depth, "--depth")
    out = Path(out)
    if nodata is not None and ignore_nodata:
        raise DataError("--nodata and --ignore-nodata contradict each other; pass one")
    if not out.parent.is_dir():
        raise DataError(f"-o {out}: the folder {out.parent} does not exist; create it first")
    check_out_file(str(out), [scene], _scene_file, "a scene .vqz of vqae", "-o")
    if out.exists() and not overwrite:
        raise DataError(f"-o {out} already exists; pass --overwrite to replace it")
    start = time.perf_counter()
    with gdal_env(), SceneRasters(scene, tuple(codec.bands), nodata, ignore_nodata,
                                  max_pixels) as rasters:
        log.info("scene %s: %s", scene, rasters.describe())
        if rasters.crs is None:
            log.warning("%s has no CRS: the decoded rasters will have none", scene)
        header = scene_header(codec, rasters, depth)
        with StopFlag("stopping after this row of tiles") as stop:
            write_with(out, lambda f: _encode(codec, rasters, header, f, depth, stop, progress))
            if stop.requested:  # not reached: _encode raises
                raise Stopped("stopped")
        size = out.stat().st_size
        pixels = rasters.width * rasters.height
        return {"scene": str(scene), "out": str(out), "width": rasters.width,
                "height": rasters.height, "tiles": header.tiles, "bytes": size,
                "bpp": 8 * size / pixels, "bpppb": 8 * size / pixels / len(codec.bands),
                "crs": rasters.crs.to_string() if rasters.crs else None,
                "nodata": rasters.nodata, "seconds": time.perf_counter() - start}


def _encode(codec, rasters, header, f, depth, stop, progress) -> None:
    encode_tiles(codec, rasters, header, f, depth, stop, progress)
    if stop.requested:
        raise Stopped(f"stopped on {stop.signal_name}: nothing was written (a scene file is "
                      "whole or absent); run the command again")


def open_scene_file(path: str | os.PathLike):
    """The open file and its SceneFile (header, metadata and index checked)."""
    path = Path(path)
    require_regular(path, "scene .vqz")
    f = open(path, "rb")
    try:
        return f, SceneFile(f, os.fstat(f.fileno()).st_size, str(path))
    except BaseException:
        f.close()
        raise


def _region(header, window) -> Region:
    if window is None:
        return Region(0, 0, header.width, header.height)
    if len(window) != 4:
        raise DataError(f"window {window!r}: give X,Y,WIDTH,HEIGHT in 10 m pixels")
    x0, y0, w, h = (int(v) for v in window)
    if w <= 0 or h <= 0 or x0 < 0 or y0 < 0 or x0 + w > header.width or y0 + h > header.height:
        raise DataError(f"window {x0},{y0},{w},{h} (x, y, width, height in 10 m pixels) lies "
                        f"outside the {header.width} x {header.height} scene")
    return Region(x0, y0, x0 + w, y0 + h)


def read_region(codec, path: str | os.PathLike, window=None,
                depth: int | None = None) -> dict[str, np.ndarray]:
    """Decode a region (x, y, width, height in 10 m pixels; None: the scene) -> {band: native
    uint16 array}; reads only the region's tiles and one ring around them."""
    f, file = open_scene_file(path)
    with f:
        region = _region(file.header, window)
        decoder = SceneDecoder(codec, file, depth)
        meta, t = file.header.meta, file.header.tile
        parts = {b: [] for b in meta.bands}
        for r, natives in decoder.rows(region):
            for band, (w, h, fac), rows in zip(meta.bands, meta.native, natives):
                parts[band].append(rows)
        out = {}
        c0, r0 = region.x0 // t * t, region.y0 // t * t
        for band, (w, h, fac) in zip(meta.bands, meta.native):
            full = np.concatenate(parts[band])
            y0, x0 = region.y0 // fac - r0 // fac, region.x0 // fac - c0 // fac
            y1 = min(-(-region.y1 // fac), h) - r0 // fac
            x1 = min(-(-region.x1 // fac), w) - c0 // fac
            out[band] = full[y0:y1, x0:x1]
        return out


def decompress_scene(codec, path: str | os.PathLike, out: str | os.PathLike,
                     depth: int | None = None, window=None, overwrite: bool = False,
                     progress: bool = False) -> list[Path]:
    """Decode a scene file (or a window of it) into `out`: one GeoTIFF per band."""

    f, file = open_scene_file(path)
    with f:
        region = _region(file.header, window)
        decoder = SceneDecoder(codec, file, depth)
        fields = {"source": str(Path(path).absolute()), "fingerprint": codec.fingerprint.hex(),
                  "depth": decoder.depth, "window": [region.x0, region.y0, region.x1,
                                                     region.y1]}
        output = Output.open(out, "scene-tiff", inputs=[path], overwrite=overwrite,
                             ours=lambda p: p.suffix == ".tif", fields=fields)
        try:
            with gdal_env():
                paths = _write(decoder, file, output.target, Path(path).stem, region, progress)
            output.commit(fields | {"files": [p.name for p in paths]})
        except BaseException:
            output.abort(0)
            raise
        return [output.out / p.name for p in paths]


def _write(decoder, file, folder: Path, stem: str, region: Region, progress: bool):
    from vqae.scene.raster_output import RasterSink

    meta, t = file.header.meta, file.header.tile
    sink = RasterSink(folder, stem, meta, region, file.name)
    try:
        with StopFlag("stopping after this row of tiles") as stop:
            for r, natives in decoder.rows(region, stop, progress):
                for i, ((_, _, fac), rows) in enumerate(zip(meta.native, natives)):
                    sink.write(i, r * t // fac, region.x0 // t * t // fac, rows)
            if stop.requested:
                raise Stopped(f"stopped on {stop.signal_name}: the decoded rasters were "
                              "removed; run the command again")
        return sink.finish()
    except BaseException:
        sink.close()
        for p in folder.glob("*.partial.tif"):
            p.unlink()
        raise
