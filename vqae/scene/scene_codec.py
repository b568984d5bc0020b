"""Scenes <-> scene `.vqz` files, one row of tiles at a time, so memory holds a strip, never
the scene.

    from vqae.scene import compress_scene, decompress_scene
    compress_scene(codec, "S2B_..._L2A.SAFE/GRANULE/.../IMG_DATA", "tile.vqz")
    decompress_scene(codec, "tile.vqz", "decoded/")       # one GeoTIFF per band
    region = read_region(codec, "tile.vqz", (x0, y0, w, h))  # {band: native uint16}

Compression reads the rasters twice: the first pass measures each tile's side values (band
means and scales of a per-patch model) and the fill of its nodata pixels, the second encodes
each tile through a window with `ENCODER_HALO` pixels of its neighbours (vqae.scene.tiling).
Decoding decodes each tile's latents with `DECODER_HALO` latent cells of its neighbours, so
a region needs only its own tiles and one ring around them.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from vqae.data.bands import UINT16_MAX, to_uint16
from vqae.errors import DataError
from vqae.models.normalize import SCALE_CODES, SCALE_STEPS
from vqae.scene.container import SceneFile, SceneFileWriter, SceneHeader, SceneMeta, \
    side_payload
from vqae.scene.networks import Windows
from vqae.scene.raster_input import SceneRasters
from vqae.scene.tiling import Grid, side_maps

ENCODER_HALO = 24  # pixels: a multiple of 12, so 20 m and 60 m windows start on a native pixel
DECODER_HALO = 12  # latent cells
RAMP = 16  # pixels either side of a tile edge over which side values cross-fade
BLEND = 16  # pixels either side of a tile edge over which neighbouring decodes cross-fade
MAX_DECODER_HALO = 32  # latent cells a file may ask the decoder to read around a tile
MARGIN = 4  # native pixels read beyond a window for bicubic upsampling


def _check_codec(codec) -> None:
    codec.check_s2_only()
    tile = codec.model.image_size
    if tile % 12 or ENCODER_HALO % codec.model.encoder.factor:
        raise DataError(f"{codec.source} codes {tile} px patches; scenes need a multiple of 12 "
                        "(whole 60 m pixels per tile)")


# ---- pass 1: side values and nodata fills ---------------------------------------------------
def _tile_blocks(a: np.ndarray, n: int) -> np.ndarray:
    """(rows_of_one_tile, cols * n) -> (cols, n, n) one block per tile."""
    return a.reshape(n, -1, n).transpose(1, 0, 2)


def measure(rasters: SceneRasters, grid: Grid, codec) -> tuple[np.ndarray, np.ndarray]:
    """-> side values (rows, cols, M) int64 and nodata fills (C, rows, cols) float64: each
    tile's valid mean per band (the scene's where a tile has no valid pixel)."""
    c_bands = len(rasters.files)
    sums = np.zeros((c_bands, grid.rows, grid.cols))
    counts = np.zeros_like(sums)
    squares = np.zeros_like(sums)
    for r in range(grid.rows):
        for i, b in enumerate(rasters.files):
            n = grid.tile // b.factor
            values, mask = rasters.window(i, r * n, (r + 1) * n, 0, grid.cols * n)
            v = _tile_blocks(values.astype(np.float64), n)  # (cols, n, n)
            ok = ~_tile_blocks(mask, n)
            sums[i, r] = (v * ok).sum(axis=(1, 2))
            squares[i, r] = (v * v * ok).sum(axis=(1, 2))
            counts[i, r] = ok.sum(axis=(1, 2))
    fills = _fills(sums, counts)
    sizes = np.array([(grid.tile // b.factor) ** 2 for b in rasters.files], np.float64)
    return _side(codec, sums, squares, counts, fills, sizes[:, None, None]), fills


def _fills(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        fills = sums / counts
        scene = sums.sum(axis=(1, 2)) / counts.sum(axis=(1, 2))
    scene = np.where(np.isfinite(scene), scene, 0.0)
    return np.where(counts > 0, fills, scene[:, None, None])


def _side(codec, sums, squares, counts, fills, sizes: np.ndarray) -> np.ndarray:
    """The side values a per-patch model's `patch_means` gives a tile whose nodata pixels hold
    its fill, from its native pixels (a rule of the encoder: the file stores the values)."""
    norm = codec.model.normalize
    if not norm.per_patch:
        return np.zeros((*sums.shape[1:], 0), np.int64)
    means = np.clip(np.rint(fills), 0, UINT16_MAX)  # (C, rows, cols): a valid mean, or the fill
    out = [means]
    if norm.patch_scales:
        with np.errstate(invalid="ignore", divide="ignore"):
            # the filled tile's variance: its valid pixels about the fill, over the block
            var = (squares - 2 * fills * sums + counts * fills ** 2) / sizes
            ratio = np.sqrt(np.maximum(var, 0)) / norm.std.view(-1, 1, 1).cpu().numpy()
            codes = np.rint(SCALE_STEPS * np.log2(ratio))
        out.append(np.clip(np.nan_to_num(codes, nan=SCALE_CODES[0], neginf=SCALE_CODES[0]),
                           *SCALE_CODES))
    return np.moveaxis(np.concatenate(out), 0, -1).astype(np.int64)  # (rows, cols, M)


# ---- pass 2: strips of upsampled pixels ------------------------------------------------------
@dataclass
class Strip:
    """Rows y0:y1 of the padded scene at 10 m, every band, nodata filled: (C, H, cols * tile)
    float32, and each band's native nodata mask of the same rows."""

    y0: int
    pixels: np.ndarray
    masks: list[np.ndarray]


def read_strip(rasters: SceneRasters, grid: Grid, fills: np.ndarray, y0: int, y1: int,
               flag: int) -> Strip:
    width = grid.cols * grid.tile
    pixels = np.empty((len(rasters.files), y1 - y0, width), np.float32)
    masks = []
    for i, b in enumerate(rasters.files):
        f, n = b.factor, grid.tile // b.factor
        r0, r1, margin = y0 // f, -(-y1 // f), MARGIN if f > 1 else 0
        values, mask = rasters.window(i, r0 - margin, r1 + margin, -margin, width // f + margin)
        if mask.any():
            tile_rows = np.clip((np.arange(r0 - margin, r1 + margin)) // n, 0, grid.rows - 1)
            tile_cols = np.clip(np.arange(-margin, width // f + margin) // n, 0, grid.cols - 1)
            fill = np.rint(fills[i][np.ix_(tile_rows, tile_cols)]).astype(values.dtype)
            values = np.where(mask, fill, values)
        masks.append(mask[margin : margin + r1 - r0, margin : margin + width // f])
        if f > 1:
            up = cv2.resize(values, (values.shape[1] * f, values.shape[0] * f),
                            interpolation=flag)
            values = up[margin * f : margin * f + y1 - y0, margin * f : margin * f + width]
        pixels[i] = values
    return Strip(y0, pixels, masks)


def tile_masks(strip: Strip, grid: Grid, factors: list[int], r: int, c: int) -> bytes | None:
    """The zlib-coded nodata masks of tile (r, c), every band at its native size; None: none."""
    parts = []
    for mask, f in zip(strip.masks, factors):
        n = grid.tile // f
        top = (r * grid.tile - strip.y0) // f
        parts.append(mask[top : top + n, c * n : (c + 1) * n].ravel())
    bits = np.concatenate(parts)
    return zlib.compress(np.packbits(bits).tobytes(), 9) if bits.any() else None


# ---- compress ----------------------------------------------------------------------------
def encode_tiles(codec, rasters: SceneRasters, writer_header: SceneHeader, out,
                 depth: int, stop=None, progress: bool = False) -> None:
    """Both passes over `rasters` into an open file `out`."""
    grid = Grid(rasters.width, rasters.height, codec.model.image_size)
    side, fills = measure(rasters, grid, codec)
    windows = Windows(codec.model)
    writer = SceneFileWriter(out, writer_header)
    factors = [b.factor for b in rasters.files]
    for r in _rows(grid.rows, progress, "compress"):
        y0, y1, _, _ = grid.window(r, 0, ENCODER_HALO)
        strip = read_strip(rasters, grid, fills, y0, y1, codec.flag)
        for c in range(grid.cols):
            _, _, x0, x1 = grid.window(r, c, ENCODER_HALO)
            maps = side_maps(side, grid, y0, y1, x0, x1, RAMP) if side.shape[-1] else None
            inner = (r * grid.tile - y0, c * grid.tile - x0, grid.tile, grid.tile)
            indices = windows.encode(strip.pixels[:, :, x0:x1], maps, inner, depth)
            payloads, _ = codec.code_stages(indices)
            masks = tile_masks(strip, grid, factors, r, c)
            writer.tile(side_payload(side[r, c], len(codec.bands), masks), payloads)
        if stop is not None and stop.requested:
            return
    writer.finish()


def scene_header(codec, rasters: SceneRasters, depth: int) -> SceneHeader:
    crs = rasters.crs.to_wkt() if rasters.crs else None
    meta = SceneMeta(tuple(codec.bands), tuple((b.width, b.height, b.factor)
                                               for b in rasters.files),
                     crs, tuple(rasters.transform), rasters.nodata)
    return SceneHeader(codec.fingerprint, rasters.width, rasters.height,
                       codec.model.image_size, ENCODER_HALO, DECODER_HALO, RAMP, BLEND, codec.depth,
                       depth,
                       codec.model.patch_mean_count, meta)


def _rows(n: int, progress: bool, what: str):
    if not progress:
        return range(n)
    from tqdm import tqdm

    return tqdm(range(n), desc=f"{what} (tile rows)", unit="row")


# ---- decompress --------------------------------------------------------------------------
@dataclass(frozen=True)
class Region:
    """A window of the scene in 10 m pixels: columns x0:x1, rows y0:y1."""

    x0: int
    y0: int
    x1: int
    y1: int


class SceneDecoder:
    """Decodes a scene file's tiles row by row, reading only the tiles a region needs and one
    ring around them."""

    def __init__(self, codec, file: SceneFile, depth: int | None = None):
        self.codec, self.file, self.h = codec, file, file.header
        self._check()
        self.depth = self.h.depth if depth is None else min(codec.check_depth(depth),
                                                            self.h.depth)
        self.grid = Grid(self.h.width, self.h.height, self.h.tile)
        self.windows = Windows(codec.model)
        self.side = np.zeros((self.grid.rows, self.grid.cols, self.h.side), np.int64)
        self.tiles: dict[tuple[int, int], tuple[np.ndarray, bytes | None]] = {}
        self.decoded: dict[tuple[int, int], tuple[int, int, np.ndarray]] = {}
        self.factors = [n[2] for n in self.h.meta.native]

    def _check(self) -> None:
        h, c, name = self.h, self.codec, self.file.name
        if h.fingerprint != c.fingerprint:
            raise DataError(f"{name} was compressed with another model (fingerprint "
                            f"{h.fingerprint.hex()}, {c.source} has {c.fingerprint.hex()}); "
                            "decompress it with the checkpoint that compressed it")
        want = {"bands": (h.meta.bands, tuple(c.bands)), "tile": (h.tile, c.model.image_size),
                "model depth": (h.model_depth, c.depth), "side values":
                (h.side, c.model.patch_mean_count)}
        for what, (got, expected) in want.items():
            if got != expected:
                raise DataError(f"{name}: its header gives {what} {got}, {c.source} has "
                                f"{expected}; the file is damaged")
        if h.decoder_halo > MAX_DECODER_HALO:  # any halo decodes; a huge one costs time only
            raise DataError(f"{name}: its header gives a decoder halo of {h.decoder_halo} "
                            f"latent cells, over the {MAX_DECODER_HALO} any encoder writes; "
                            "the file is damaged")

    def _load(self, r: int, c: int) -> np.ndarray:
        if (r, c) not in self.tiles:
            n = r * self.grid.cols + c
            tile = self.file.tile(n, self.depth)
            low, high = SCALE_CODES
            bands = len(self.codec.bands)
            if len(tile.side) > bands and not all(low <= v <= high for v in tile.side[bands:]):
                raise DataError(f"{self.file.name}: tile {n} has scale codes outside "
                                f"{low}..{high}; the file is damaged")
            indices = np.zeros((self.depth, self.codec.h, self.codec.w), np.int64)
            for s, payload in enumerate(tile.stages):
                self.codec._decode_stage(indices, s, payload, f"{self.file.name} tile {n}")
            self.side[r, c] = tile.side
            self.tiles[(r, c)] = (indices, tile.masks)
        return self.tiles[(r, c)][0]

    def rows(self, region: Region, stop=None, progress: bool = False, grid: bool = False
             ) -> Iterator[tuple[int, list[np.ndarray]]]:
        """(tile row, [each band's native uint16 rows of the region in that tile row]); with
        `grid`, each band's rows on the 10 m grid before the native averaging (what DESIGN.md's
        metrics compare, as a patch's 120 x 120 decode), nodata not applied."""
        g, t = self.grid, self.grid.tile
        r0, r1 = region.y0 // t, -(-region.y1 // t)
        c0, c1 = region.x0 // t, -(-region.x1 // t)
        for r in _rows_between(r0, r1, progress):
            for key in [k for k in self.tiles if k[0] < r - 2]:
                del self.tiles[key]
            for key in [k for k in self.decoded if k[0] < r - 1]:
                del self.decoded[key]
            dn = self._blended_row(r, c0, c1)
            yield r, (list(to_uint16(dn)) if grid else self._natives(dn, r, c0, c1))
            if stop is not None and stop.requested:
                return

    def _weights(self, start: int, coords: np.ndarray) -> np.ndarray:
        """A tile's cross-fade weight at pixel positions: 1 inside farther than the ramp from
        its edges, 0.5 on them, 0 beyond the ramp outside."""
        t, k = self.grid.tile, self.h.blend
        centre = coords + 0.5
        inside = np.minimum(centre - start, start + t - centre)  # < 0 outside
        return np.clip(0.5 + inside / (2 * k), 0, 1)

    def _blended_row(self, r: int, c0: int, c1: int) -> np.ndarray:
        """Tile row r, columns c0:c1, (C, tile, n * tile): each tile's decode, cross-faded
        within the ramp of its edges with its neighbours' decodes of the same pixels."""
        g, t = self.grid, self.grid.tile
        ys, xs = np.arange(r * t, (r + 1) * t), np.arange(c0 * t, c1 * t)
        out = np.zeros((len(self.codec.bands), t, len(xs)), np.float32)
        total = np.zeros((t, len(xs)), np.float32)
        for rr in range(max(r - 1, 0), min(r + 2, g.rows)):
            for cc in range(max(c0 - 1, 0), min(c1 + 1, g.cols)):
                y0, x0, part = self._decoded(rr, cc)
                top, bottom = max(y0, ys[0]), min(y0 + part.shape[1], ys[-1] + 1)
                left, right = max(x0, xs[0]), min(x0 + part.shape[2], xs[-1] + 1)
                if top >= bottom or left >= right:
                    continue
                w = (self._weights(rr * t, np.arange(top, bottom))[:, None]
                     * self._weights(cc * t, np.arange(left, right))[None, :])
                if not w.any():
                    continue
                rows, cols = slice(top - ys[0], bottom - ys[0]), slice(left - xs[0], right - xs[0])
                out[:, rows, cols] += w * part[:, top - y0 : bottom - y0, left - x0 : right - x0]
                total[rows, cols] += w
        return out / total

    def _decoded(self, r: int, c: int) -> tuple[int, int, np.ndarray]:
        """Tile (r, c)'s decode of itself and the ramp around it: (top, left, (C, h, w))."""
        if (r, c) not in self.decoded:
            self.decoded[(r, c)] = self._decode_tile(r, c)
        return self.decoded[(r, c)]

    def _decode_tile(self, r: int, c: int) -> tuple[int, int, np.ndarray]:
        g, t, f = self.grid, self.grid.tile, self.codec.model.encoder.factor
        y0, y1, x0, x1 = g.window(r, c, self.h.decoder_halo * f)
        cells = t // f
        idx = np.zeros((self.depth, (y1 - y0) // f, (x1 - x0) // f), np.int64)
        for rr in range(y0 // t, -(-y1 // t)):
            for cc in range(x0 // t, -(-x1 // t)):
                tile = self._load(rr, cc)
                ty, tx = rr * cells - y0 // f, cc * cells - x0 // f
                sy, sx = max(-ty, 0), max(-tx, 0)
                ey, ex = min(cells, idx.shape[1] - ty), min(cells, idx.shape[2] - tx)
                idx[:, ty + sy : ty + ey, tx + sx : tx + ex] = tile[:, sy:ey, sx:ex]
        maps = side_maps(self.side, g, y0, y1, x0, x1, self.h.ramp) if self.h.side else None
        inner = (r * t - y0, c * t - x0, t, t)
        out = self.windows.decode(idx, maps, inner)  # (C, y1 - y0, x1 - x0)
        k = self.h.blend
        top, left = max(r * t - k, y0), max(c * t - k, x0)
        bottom, right = min((r + 1) * t + k, y1), min((c + 1) * t + k, x1)
        # a copy: a view would keep the whole window alive in the cache of three tile rows
        return top, left, out[:, top - y0 : bottom - y0, left - x0 : right - x0].copy()

    def _natives(self, dn: np.ndarray, r: int, c0: int, c1: int) -> list[np.ndarray]:
        """(C, tile, n * tile) decoded digital numbers -> each band at its native size, nodata
        where the masks say, and no valid pixel equal to nodata."""
        t, nodata = self.grid.tile, self.h.meta.nodata
        out = []
        for i, f in enumerate(self.factors):
            plane = to_uint16(dn[i]).astype(np.float64)
            if f > 1:
                plane = plane.reshape(t // f, f, -1, f).mean(axis=(1, 3))
            out.append(to_uint16(plane))
        if nodata is None:
            return out
        bump = nodata + 1 if nodata < UINT16_MAX else nodata - 1
        masks = [self._masks(r, c) for c in range(c0, c1)]
        for i, f in enumerate(self.factors):
            n = t // f
            band = out[i]
            band[band == nodata] = bump
            for k, m in enumerate(masks):
                if m is not None:
                    band[:, k * n : (k + 1) * n][m[i]] = nodata
        return out

    def _masks(self, r: int, c: int) -> list[np.ndarray] | None:
        coded = self.tiles[(r, c)][1]
        if coded is None:
            return None
        sizes = [(self.grid.tile // f) ** 2 for f in self.factors]
        n = r * self.grid.cols + c
        inflate = zlib.decompressobj()
        try:
            raw = inflate.decompress(coded, (sum(sizes) + 7) // 8 + 1)
        except zlib.error as err:
            raise DataError(f"{self.file.name}: tile {n}'s nodata masks do not decode; the "
                            "file is damaged") from err
        if len(raw) != (sum(sizes) + 7) // 8 or not inflate.eof or inflate.unused_data \
                or inflate.unconsumed_tail:
            raise DataError(f"{self.file.name}: tile {n}'s nodata masks have the wrong size; "
                            "the file is damaged")
        bits = np.unpackbits(np.frombuffer(raw, np.uint8))[: sum(sizes)].astype(bool)
        parts = np.split(bits, np.cumsum(sizes)[:-1])
        return [p.reshape(self.grid.tile // f, -1) for p, f in zip(parts, self.factors)]


def _rows_between(r0: int, r1: int, progress: bool):
    if not progress:
        return range(r0, r1)
    from tqdm import tqdm

    return tqdm(range(r0, r1), desc="decompress (tile rows)", unit="row")
