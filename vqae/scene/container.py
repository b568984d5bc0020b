"""The scene `.vqz` file (format version 7): a header, the scene's metadata, one record per
tile, and an index of the records at the end (docs/format.md, "Scenes").

    magic b"\\x89VQZ" | version u8 = 7 | fingerprint 8 | width u32 | height u32 | tile u16 |
    encoder halo u16 | decoder halo u8 | side ramp u8 | blend u8 | model depth u8 |
    stored depth u8 |
    side values u8 |
    metadata length u32 | header CRC32
    metadata: UTF-8 JSON (bands, native sizes, CRS WKT, geotransform, nodata) | CRC32
    per tile, in row-major order: its side chunk (side values, nodata masks), then one chunk
    per stored stage; a chunk is length (LEB128) | CRC32 | payload, its CRC started from the
    magic, fingerprint, tile number (u32) and stage (u8; 0xFE for the side chunk)
    index: tile count u32 | each tile's record length u32 | CRC32 | index offset u64 | b"VQZI"

The index makes every tile reachable without reading the others (a region decodes alone), and
each tile's stages stay in order, so fewer stages read a prefix of every record. Every failure
is a DataError naming the file.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from vqae.codec.bitstream import MAGIC, read_varint, varint
from vqae.codec.georef import MAX_BYTES as MAX_METADATA
from vqae.codec.georef import Georef
from vqae.data.bands import S2_BANDS as KNOWN_BANDS
from vqae.errors import DataError

VERSION = 7
SIDE_STAGE = 0xFE  # the side chunk's stage number in its CRC
_HEAD = struct.Struct("<4sB8sIIHHBBBBBBI")
_FOOT = struct.Struct("<IQ4s")  # index CRC32, index offset, footer magic
FOOTER_MAGIC = b"VQZI"
FACTORS = (1, 2, 6)  # a band's pixel size over the 10 m grid's


@dataclass(frozen=True)
class SceneMeta:
    """What the scene was: band names, each band's native size and factor, georeferencing."""

    bands: tuple[str, ...]
    native: tuple[tuple[int, int, int], ...]  # per band (width, height, factor)
    crs: str | None = None  # WKT, None: the input had no CRS
    transform: tuple[float, ...] | None = None  # the 10 m grid's affine (a, b, c, d, e, f)
    nodata: int | None = None

    def pack(self) -> bytes:
        return json.dumps({"bands": list(self.bands), "native": [list(n) for n in self.native],
                           "crs": self.crs, "transform": self.transform,
                           "nodata": self.nodata}, separators=(",", ":")).encode()

    @classmethod
    def parse(cls, data: bytes, width: int, height: int, name: str) -> SceneMeta:
        bad = f"{name}: its scene metadata is damaged"
        try:
            raw = json.loads(data.decode("utf-8"))
            bands = tuple(raw["bands"])
            native = tuple(tuple(int(v) for v in n) for n in raw["native"])
        except (ValueError, KeyError, TypeError, RecursionError) as err:
            raise DataError(f"{bad} ({type(err).__name__})") from err
        where = Georef.from_fields(raw, bad)
        if (not bands or len(set(bands)) != len(bands) or any(b not in KNOWN_BANDS for b in bands)
                or len(native) != len(bands) or any(len(n) != 3 for n in native)):
            raise DataError(bad)
        for w, h, f in native:
            if f not in FACTORS or not (w * f - f < width <= w * f and h * f - f < height <= h * f):
                raise DataError(f"{bad} (a band of {w}x{h} at factor {f} in a "
                                f"{width}x{height} scene)")
        return cls(bands, native, where.crs, where.transform, where.nodata)


@dataclass(frozen=True)
class SceneHeader:
    fingerprint: bytes
    width: int  # 10 m pixels
    height: int
    tile: int  # the model's image size
    encoder_halo: int  # pixels
    decoder_halo: int  # latent cells
    ramp: int  # pixels either side of a tile edge over which side values cross-fade
    blend: int  # pixels either side of a tile edge over which neighbouring decodes cross-fade
    model_depth: int
    depth: int  # stages stored per tile
    side: int  # side values per tile: C means (u16) then C scale codes (int8), or none
    meta: SceneMeta = field(compare=False, default=None)

    @property
    def tiles(self) -> int:
        return -(-self.width // self.tile) * -(-self.height // self.tile)

    def pack(self) -> bytes:
        meta = self.meta.pack()
        if len(meta) > MAX_METADATA:
            raise DataError(f"the scene's metadata is {len(meta):,} bytes (a CRS WKT that "
                            f"long?); at most {MAX_METADATA:,} fit a .vqz")
        head = _HEAD.pack(MAGIC, VERSION, self.fingerprint, self.width, self.height, self.tile,
                          self.encoder_halo, self.decoder_halo, self.ramp, self.blend,
                          self.model_depth,
                          self.depth,
                          self.side, len(meta))
        return (head + struct.pack("<I", zlib.crc32(head)) + meta
                + struct.pack("<I", zlib.crc32(meta)))


def is_scene(data: bytes) -> bool:
    """The first bytes of a `.vqz` are a scene file's."""
    return len(data) > 4 and data[:4] == MAGIC and data[4] == VERSION


def chunk_crc(payload: bytes, fingerprint: bytes, tile: int, stage: int) -> int:
    return zlib.crc32(payload, zlib.crc32(MAGIC + fingerprint + struct.pack("<IB", tile, stage)))


def chunk(payload: bytes, fingerprint: bytes, tile: int, stage: int) -> bytes:
    return (varint(len(payload)) + struct.pack("<I", chunk_crc(payload, fingerprint, tile, stage))
            + payload)


def side_payload(values: np.ndarray, bands: int, masks: bytes | None) -> bytes:
    """A tile's side values (means u16, then scale codes int8) and its zlib-coded nodata masks
    (None: no nodata pixel in the tile)."""
    values = np.asarray(values, np.int64)
    out = struct.pack(f"<{bands}H", *values[:bands]) if len(values) else b""
    if len(values) > bands:
        out += struct.pack(f"<{len(values) - bands}b", *values[bands:])
    return out + (b"\x00" if masks is None else b"\x01" + masks)


class SceneFileWriter:
    """Writes a scene file to an open binary file: the header, then tiles in order, then the
    index (`finish`)."""

    def __init__(self, f: BinaryIO, header: SceneHeader):
        self.f, self.header, self.lengths = f, header, []
        f.write(header.pack())

    def tile(self, side: bytes, stages: list[bytes]) -> None:
        n, fp = len(self.lengths), self.header.fingerprint
        record = chunk(side, fp, n, SIDE_STAGE) + b"".join(
            chunk(p, fp, n, s) for s, p in enumerate(stages))
        self.f.write(record)
        self.lengths.append(len(record))

    def finish(self) -> None:
        assert len(self.lengths) == self.header.tiles
        offset = self.f.tell()
        index = struct.pack(f"<I{len(self.lengths)}I", len(self.lengths), *self.lengths)
        self.f.write(index + _FOOT.pack(zlib.crc32(index), offset, FOOTER_MAGIC))


@dataclass
class Tile:
    side: np.ndarray  # (M,) int64 side values
    masks: bytes | None  # zlib-coded nodata masks, None: all valid
    stages: list[bytes]  # the first `depth` stage payloads read


class SceneFile:
    """A scene file opened for reading: header and metadata checked, index read; `tile(n,
    depth)` reads one tile's record."""

    def __init__(self, f: BinaryIO, size: int, name: str):
        self.f, self.name = f, name
        self.header = self._header(size)
        self.offsets = self._index(size)

    def _read(self, at: int, n: int, what: str) -> bytes:
        self.f.seek(at)
        data = self.f.read(n)
        if len(data) != n:
            raise DataError(f"{self.name} ends inside its {what}: the file was cut; re-copy it")
        return data

    def _header(self, size: int) -> SceneHeader:
        head = self._read(0, _HEAD.size + 4, "header")
        (magic, version, fp, width, height, tile, ehalo, dhalo, ramp, blend, model_depth, depth,
         side, meta_len) = _HEAD.unpack_from(head)
        if magic != MAGIC or version != VERSION:
            raise DataError(f"{self.name} is not a scene .vqz (version {VERSION})")
        if struct.unpack_from("<I", head, _HEAD.size)[0] != zlib.crc32(head[: _HEAD.size]):
            raise DataError(f"{self.name}: its scene header fails its CRC; the file is damaged")
        if not (width and height and tile and 1 <= depth <= model_depth and 1 <= ramp <= tile // 2 \
                and 1 <= blend <= tile // 2) \
                or meta_len > MAX_METADATA:
            raise DataError(f"{self.name}: its scene header is impossible; the file is damaged")
        at = _HEAD.size + 4
        meta = self._read(at, meta_len + 4, "metadata")
        if struct.unpack_from("<I", meta, meta_len)[0] != zlib.crc32(meta[:meta_len]):
            raise DataError(f"{self.name}: its scene metadata fails its CRC; the file is damaged")
        self.tiles_start = at + meta_len + 4
        return SceneHeader(fp, width, height, tile, ehalo, dhalo, ramp, blend, model_depth, depth,
                           side,
                           SceneMeta.parse(meta[:meta_len], width, height, self.name))

    def _index(self, size: int) -> np.ndarray:
        n = self.header.tiles
        index_bytes = 4 + 4 * n
        if size < self.tiles_start + index_bytes + _FOOT.size:
            raise DataError(f"{self.name} is {size:,} bytes, too short for the index of its "
                            f"{n:,} tiles: the file was cut or is damaged")
        crc, offset, magic = _FOOT.unpack(self._read(size - _FOOT.size, _FOOT.size, "footer"))
        if magic != FOOTER_MAGIC or offset + index_bytes + _FOOT.size != size:
            raise DataError(f"{self.name} has no intact index at its end: the file was cut or "
                            "damaged; re-copy it")
        index = self._read(offset, index_bytes, "index")
        if zlib.crc32(index) != crc or struct.unpack_from("<I", index)[0] != n:
            raise DataError(f"{self.name}: its tile index fails its CRC; the file is damaged")
        lengths = np.frombuffer(index, "<u4", offset=4).astype(np.int64)
        if self.tiles_start + int(lengths.sum()) != offset:
            raise DataError(f"{self.name}: its tile index does not add up to its tiles; the "
                            "file is damaged")
        return self.tiles_start + np.concatenate([[0], np.cumsum(lengths)])

    def tile(self, n: int, depth: int) -> Tile:
        start, end = int(self.offsets[n]), int(self.offsets[n + 1])
        data = self._read(start, end - start, f"tile {n}")
        pos, payloads = 0, []
        for stage in [SIDE_STAGE, *range(min(depth, self.header.depth))]:
            payload, pos = self._chunk(data, pos, n, stage)
            payloads.append(payload)
        if depth >= self.header.depth and pos != len(data):
            raise DataError(f"{self.name}: tile {n} has bytes after its last stage; the file "
                            "is damaged")
        side, masks = self._side(payloads[0], n)
        return Tile(side, masks, payloads[1 : depth + 1])

    def _chunk(self, data: bytes, pos: int, n: int, stage: int) -> tuple[bytes, int]:
        got = read_varint(data, pos)
        what = "side chunk" if stage == SIDE_STAGE else f"stage {stage}"
        if got is None or got[1] + 4 + got[0] > len(data):
            raise DataError(f"{self.name}: tile {n}'s {what} is cut; the file is damaged")
        length, pos = got
        (crc,) = struct.unpack_from("<I", data, pos)
        payload = data[pos + 4 : pos + 4 + length]
        if crc != chunk_crc(payload, self.header.fingerprint, n, stage):
            raise DataError(f"{self.name}: tile {n}'s {what} fails its CRC; the file is damaged")
        return payload, pos + 4 + length

    def _side(self, payload: bytes, n: int) -> tuple[np.ndarray, bytes | None]:
        m, c = self.header.side, len(self.header.meta.bands)
        means = c if m else 0
        fixed = 2 * means + (m - means)
        if len(payload) < fixed + 1 or payload[fixed] not in (0, 1) \
                or (payload[fixed] == 0 and len(payload) != fixed + 1):
            raise DataError(f"{self.name}: tile {n}'s side chunk is malformed; the file is "
                            "damaged")
        values = list(struct.unpack_from(f"<{means}H{m - means}b", payload))
        masks = payload[fixed + 1 :] if payload[fixed] else None
        return np.array(values, np.int64), masks
