"""The `.vqz` container: a header, then one length-prefixed, CRC32-checked chunk per RVQ stage.

Layout (all integers little-endian; docs/format.md has the full table):

    magic b"\\x89VQZ" | version u8 | fingerprint 8 bytes | height u16 | width u16 |
    model depth u8 | stored depth u8 | bands | patch_means | (patch_scales) | filter |
    header CRC32 u32
    then per stored stage: payload length (LEB128 varint) | chunk CRC32 u32 | payload

bands: 0xFF and a u16 mask over BAND_CODES when the bands keep that order (every S2 subset
in the project's order: 3 bytes), else a count u8 and one u8 code per band.
patch means (version 2): a count u8 (0, or one per band), then that many u16: a per-patch
model's band means (model.patch_means), which its decoder adds back.
patch scales (version 5, written only by a model with model.patch_scales): a count u8, then
that many int8: each band's scale code (vqae.models.normalize.SCALE_STEPS per octave).
filter (version 3): the band filter the encoder fitted (vqae.codec.bandfilter): its kind u8
(0 none, 1 gain, 2 mix), then C u8 codes for a gain or C*C int8 codes (row-major) for a mix.
chunk CRC32 (version 4): the CRC32 of the payload, started from the CRC32 of the magic, the
model fingerprint and the stage number (u8). An empty payload (an all-zero index map codes to
nothing) therefore never has a zero CRC, so zeroed bytes are damage; a chunk moved to another
stage, or taken from another model's file, fails its check; a stage's chunk is the same bytes
whatever depth its file stores. Versions 1-3 used the plain payload CRC32.
Versions 1 (no patch_means, no filter), 2 (no filter) and 3 (plain chunk CRCs) still read; a
file without patch scales is written as version 4, byte for byte as before version 5.

Chunks are in stage order, so any prefix of whole chunks is a valid file at fewer stages. Every
failure is a DataError naming the file; nothing decodes silently wrong.
"""

from __future__ import annotations

import os
import stat
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from vqae.codec import bandfilter
from vqae.data.bands import PATCH_MEAN_BITS, S1_BANDS, S2_BANDS
from vqae.errors import DataError

MAGIC = b"\x89VQZ"
VERSION = 5  # patch scales; a file without them is written as version 4
UNSCALED = 4  # 1 (no patch_means or filter), 2 (no filter), 3 (plain chunk CRCs) read
ENHANCED = 6  # an enhancement layer after the stages (vqae.codec.enhancement)
SCENE = 7  # a scene of any size (vqae.scene.container): another layout, read there
GEOREFERENCED = 8  # version 6's header, its layer kind 0 (none) or 1, then a georef chunk
READABLE = (1, 2, 3, 4, 5, 6, 8)
GEOREF_STAGE = 0xFD  # the georeferencing chunk's stage number in its CRC
LAYER_STAGE = 0xFF  # the enhancement chunk's stage number in its CRC
LAYER_RESIDUAL = 1  # the layer kind byte of a version-6 header
FINGERPRINT_BYTES = 8
BAND_CODES = S2_BANDS + S1_BANDS  # a band is stored as its position in this list
_FIXED = struct.Struct("<4sB8sHHBBB")  # magic .. band count (or MASKED)
MASKED = 0xFF  # the bands follow as a u16 mask
FILTER_CODE = {"none": "B", "gain": "B", "mix": "b"}  # struct format of one filter code
MEAN_CODE = {16: "H"}[PATCH_MEAN_BITS]  # struct format of one patch mean
# The largest header: fixed fields, 255 band codes, 255 patch means, a 255x255 mix, the CRC.
MAX_GEOREF_BYTES = 1 << 16  # vqae.codec.georef.MAX_BYTES
MAX_HEADER_BYTES = (_FIXED.size + 255 + (1 + PATCH_MEAN_BITS // 8 * 255) + (1 + 255)
                    + (1 + 255 * 255) + 3 + 4 + (3 + 4 + MAX_GEOREF_BYTES))
# constriction's default ANS models quantize probabilities to 24 bits: no symbol costs more,
# and the coder's final state adds at most 64 bits.
MAX_BITS_PER_SYMBOL = 24


@dataclass(frozen=True)
class Header:
    fingerprint: bytes  # FINGERPRINT_BYTES of the model's hash
    height: int  # image size in pixels
    width: int
    model_depth: int  # the model's RVQ stages
    depth: int  # stages this file was written with
    bands: tuple[str, ...]
    patch_means: tuple[int, ...] = ()  # one per band for a per-patch model, else ()
    filter_kind: str = "none"  # vqae.codec.bandfilter.KINDS
    filter_codes: tuple[int, ...] = ()  # its codes: C (gain), C*C (mix) or none
    version: int = VERSION  # of the file it was read from; pack() writes `written_version`
    patch_scales: tuple[int, ...] = ()  # int8 scale codes, one per band, of a scaled model
    max_error: int | None = None  # the enhancement layer's bound in DN (version 6), else None
    georef: bytes | None = None  # vqae.codec.georef JSON of a georeferenced patch (version 8)

    @property
    def written_version(self) -> int:
        """The version pack() writes: the oldest that holds this header."""
        if self.georef is not None:
            return GEOREFERENCED
        if self.max_error is not None:
            return ENHANCED
        return VERSION if self.patch_scales else UNSCALED

    def pack(self) -> bytes:
        unknown = [b for b in self.bands if b not in BAND_CODES]
        if unknown:
            raise DataError(f"bands {unknown} have no .vqz code; known: {' '.join(BAND_CODES)}")
        assert len(self.patch_means) in (0, len(self.bands))
        assert len(self.patch_scales) in (0, len(self.patch_means))
        assert len(self.filter_codes) == bandfilter.code_count(self.filter_kind, len(self.bands))
        version = self.written_version
        body = _FIXED.pack(MAGIC, version, self.fingerprint, self.height, self.width,
                           self.model_depth, self.depth, MASKED)[:-1] + pack_bands(self.bands)
        body += struct.pack(f"<B{len(self.patch_means)}{MEAN_CODE}", len(self.patch_means),
                            *self.patch_means)
        if version >= 5:
            body += struct.pack(f"<B{len(self.patch_scales)}b", len(self.patch_scales),
                                *self.patch_scales)
        body += struct.pack(f"<B{len(self.filter_codes)}{FILTER_CODE[self.filter_kind]}",
                            bandfilter.KINDS.index(self.filter_kind), *self.filter_codes)
        if version >= ENHANCED:
            layer = self.max_error is not None
            assert not layer or 0 <= self.max_error <= 0xFFFF
            body += struct.pack("<BH", LAYER_RESIDUAL if layer else 0, self.max_error or 0)
        body += struct.pack("<I", zlib.crc32(body))
        if version >= GEOREFERENCED:
            assert len(self.georef) <= MAX_GEOREF_BYTES
            body += chunk(self.georef, GEOREF_STAGE, self.fingerprint)
        return body


def pack_bands(bands: tuple[str, ...]) -> bytes:
    codes = [BAND_CODES.index(b) for b in bands]
    if codes == sorted(set(codes)):
        return struct.pack("<BH", MASKED, sum(1 << c for c in codes))
    return bytes([len(codes), *codes])


def bands_size(data: bytes) -> int | None:
    """Bytes of the bands field that starts at the last fixed byte, None if cut before it."""
    if len(data) < _FIXED.size:
        return None
    count = data[_FIXED.size - 1]
    return 3 if count == MASKED else 1 + count


def unpack_bands(field: bytes) -> tuple[int, ...] | None:
    """Band codes of a bands field, None when they are impossible (a damaged header)."""
    if field[0] == MASKED:
        (mask,) = struct.unpack_from("<H", field, 1)
        codes = tuple(c for c in range(len(BAND_CODES)) if mask >> c & 1)
        return codes if codes and mask < 1 << len(BAND_CODES) else None
    codes = tuple(field[1:])
    return codes if codes and max(codes) < len(BAND_CODES) else None


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def chunk_crc(payload: bytes, stage: int, fingerprint: bytes, version: int = VERSION) -> int:
    """A chunk's CRC32: bound to its stage and model from version 4 on."""
    if version < 4:
        return zlib.crc32(payload)
    return zlib.crc32(payload, zlib.crc32(MAGIC + fingerprint + bytes([stage])))


def write(header: Header, payloads: list[bytes], layer: bytes | None = None) -> bytes:
    """The file: header, then each stage's payload as a chunk, then the enhancement layer's
    (a header with max_error needs one)."""
    assert len(payloads) == header.depth
    assert (layer is None) == (header.max_error is None)
    parts = [header.pack()]
    for stage, payload in enumerate(payloads):
        parts.append(chunk(payload, stage, header.fingerprint))
    if layer is not None:
        parts.append(chunk(layer, LAYER_STAGE, header.fingerprint))
    return b"".join(parts)


def chunk(payload: bytes, stage: int, fingerprint: bytes) -> bytes:
    return varint(len(payload)) + struct.pack("<I", chunk_crc(payload, stage, fingerprint)) \
        + payload


@dataclass
class Chunks:
    header: Header
    payloads: list[bytes]  # the complete chunks read (a prefix of the stages)
    header_bytes: int
    layer: bytes | None = None  # the enhancement layer's payload, when read


def read_varint(data: bytes, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None when the data ends inside the varint."""
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return value, pos
        if shift > 35:
            return None
    return None


def parse_header(data: bytes, name: str) -> tuple[Header, int]:
    """(header, position of the first chunk); a DataError naming `name` if it is not one."""
    if not data:
        raise DataError(f"{name} is empty (0 bytes), not a .vqz file; compress the patch again")
    if data[: len(MAGIC)] != MAGIC[: len(data)]:
        raise DataError(f"{name} is not a .vqz file (no VQZ magic); pass a file written by "
                        "`vqae compress`")
    version = data[len(MAGIC)] if len(data) > len(MAGIC) else VERSION
    if version == SCENE:
        raise DataError(f"{name} is a scene file (.vqz version 7); decompress it on its own: "
                        "`vqae decompress FILE -o DIR --ckpt CKPT` (vqae.scene)")
    if version not in READABLE:
        raise DataError(f"{name} is .vqz format version {version}; this vqae reads versions "
                        f"{', '.join(map(str, READABLE))}: decompress it with the vqae that "
                        "wrote it")
    bands_end = _FIXED.size - 1 + (bands_size(data) or 1)
    means_end = bands_end + (field_size(data, bands_end, PATCH_MEAN_BITS // 8) if version >= 2
                             else 0)
    scales_end = means_end + (field_size(data, means_end, 1) if version >= 5 else 0)
    band_field = data[_FIXED.size - 1 : bands_end]
    filter_end = scales_end + (filter_size(data, scales_end, band_field) if version >= 3 else 0)
    end = filter_end + (3 if version >= ENHANCED else 0)
    if len(data) < end + 4:
        raise DataError(f"{name} is truncated inside its header ({len(data)} bytes); re-copy "
                        "the file or compress the patch again")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[:end]) != crc:
        raise DataError(f"{name}: the header fails its CRC32 check (the file is damaged); "
                        "re-copy the file or compress the patch again")
    _, _, fp, height, width, model_depth, depth, _ = _FIXED.unpack_from(data)
    codes = unpack_bands(band_field)
    count = (means_end - bands_end - 1) // (PATCH_MEAN_BITS // 8)
    patch_means = struct.unpack_from(f"<{count}{MEAN_CODE}", data, bands_end + 1) \
        if means_end > bands_end else ()
    scales = struct.unpack_from(f"<{scales_end - means_end - 1}b", data, means_end + 1) \
        if scales_end > means_end else ()
    kind = "none" if version < 3 else filter_kind(data[scales_end])
    if codes is None or not 1 <= depth <= model_depth or len(patch_means) not in (0, len(codes)) \
            or len(scales) not in (0, len(patch_means)) or kind is None \
            or (version == 5 and not scales) or not _layer_ok(data, filter_end, version):
        raise DataError(f"{name}: the header holds impossible values (bands, depth, patch_means, "
                        "patch scales, band filter or enhancement layer kind); the file is "
                        "damaged")
    filter_codes = struct.unpack_from(f"<{filter_end - scales_end - 1}{FILTER_CODE[kind]}",
                                      data, scales_end + 1) if filter_end > scales_end else ()
    bands = tuple(BAND_CODES[c] for c in codes)
    max_error = struct.unpack_from("<H", data, filter_end + 1)[0] \
        if version >= ENHANCED and data[filter_end] == LAYER_RESIDUAL else None
    header = Header(fp, height, width, model_depth, depth, bands, patch_means, kind,
                    filter_codes, version, scales, max_error)
    if version < GEOREFERENCED:
        return header, end + 4
    georef, pos = _read_chunk(data, end + 4, name, GEOREF_STAGE, header)
    if len(georef) > MAX_GEOREF_BYTES:
        raise DataError(f"{name}: its georeferencing chunk is {len(georef):,} bytes, over "
                        f"{MAX_GEOREF_BYTES:,}; the file is damaged")
    return replace(header, georef=georef), pos


def attach_georef(data: bytes, georef: bytes, name: str = "the file") -> bytes:
    """A file's bytes with `georef` (vqae.codec.georef JSON) in its header: version 8."""
    header, pos = parse_header(data, name)
    return replace(header, georef=georef).pack() + data[pos:]


def _layer_ok(data: bytes, pos: int, version: int) -> bool:
    """A version-6 header's layer field names the one layer kind there is; version 8's may
    say none (0, with E 0)."""
    if version < ENHANCED or data[pos] == LAYER_RESIDUAL:
        return True
    return version >= GEOREFERENCED and data[pos] == 0 and data[pos + 1 : pos + 3] == b"\0\0"


def field_size(data: bytes, pos: int, width: int) -> int:
    """Bytes of a counted field at `pos` (count u8, then `width` bytes each); 1 if cut before
    its count."""
    return 1 + width * data[pos] if pos < len(data) else 1


def filter_kind(byte: int) -> str | None:
    return bandfilter.KINDS[byte] if byte < len(bandfilter.KINDS) else None


def filter_size(data: bytes, pos: int, band_field: bytes) -> int:
    """Bytes of the band filter field at `pos` (kind u8, then one byte per code); 1 if cut
    before its kind or the kind is unknown."""
    kind = filter_kind(data[pos]) if pos < len(data) else None
    if kind is None:
        return 1
    return 1 + bandfilter.code_count(kind, len(unpack_bands(band_field) or ()))


def read(data: bytes, name: str, depth: int | None = None,
         check: Callable[[Header], None] | None = None, layer: bool = True) -> Chunks:
    """Header and the first `depth` chunks (all stored ones by default) of a file's bytes;
    `check(header)` runs before any chunk is read (the codec's checks against its model).

    A file that ends between chunks yields the chunks before the cut; one that ends inside a
    chunk or whose chunk fails its CRC raises a DataError naming the file and the stage.
    The enhancement layer is read when all stages are and `layer` asks for it; a file cut
    just before it reads as its lossy stages (Chunks.layer None; the codec refuses to decode
    it as more than that unless asked for the lossy stages).
    """
    header, pos = parse_header(data, name)
    if check is not None:
        check(header)
    want = header.depth if depth is None else min(depth, header.depth)
    payloads: list[bytes] = []
    while len(payloads) < want and pos < len(data):
        stage = len(payloads)
        payload, pos = _read_chunk(data, pos, name, stage, header)
        payloads.append(payload)
    if not payloads:
        raise DataError(f"{name} holds a header but no stage (cut before the first chunk); "
                        "re-copy the file or compress the patch again")
    found = None
    if header.max_error is not None and len(payloads) == header.depth and pos < len(data):
        if not layer:
            return Chunks(header, payloads, header_bytes=len(header.pack()))
        found, pos = _read_chunk(data, pos, name, LAYER_STAGE, header)
    if len(payloads) == header.depth and pos < len(data):
        raise DataError(f"{name} has {len(data) - pos} bytes after its last chunk (damaged or "
                        "two files joined); re-copy the file or compress the patch again")
    return Chunks(header, payloads, header_bytes=len(header.pack()), layer=found)


def max_file_bytes(header: Header, header_bytes: int) -> int:
    """The most bytes a file with this header can hold: one chunk per stage, each at most a
    length varint, a CRC and a payload of one worst-case symbol per pixel plus the final state
    (a latent grid never has more positions than the image has pixels)."""
    payload = header.height * header.width * MAX_BITS_PER_SYMBOL // 8 + 8
    stages = header_bytes + header.depth * (5 + 4 + payload)
    if header.max_error is None:
        return stages
    # per band pixel at most a 22-bit table symbol, an 18-bit escape and 12 raw bits
    return stages + 5 + 4 + 13 + len(header.bands) * header.height * header.width * 7 + 8


def check_size(prefix: bytes, size: int, name: str,
               check: Callable[[Header], None] | None = None) -> Header:
    """The header of a file of `size` bytes that starts with `prefix` (at least
    MAX_HEADER_BYTES of it, or all); `check(header)` (the codec's checks against its model)
    runs first, then a DataError when the size exceeds what that header allows, all before
    anything large is read."""
    header, start = parse_header(prefix, name)
    if check is not None:
        check(header)
    limit = max_file_bytes(header, start)
    if size > limit:
        raise DataError(f"{name} is {size:,} bytes, more than a .vqz file with its header "
                        f"({header.height}x{header.width}, {header.depth} stages) can hold "
                        f"({limit:,}); the file is damaged or not a .vqz file")
    return header


def read_file(path: Path, check: Callable[[Header], None] | None = None) -> bytes:
    """A .vqz file's bytes, read only after its header passed `check` and agrees with the
    file's size; a non-regular file (a FIFO, a device, a folder) is refused without blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO must not hang
    except OSError as err:
        raise DataError(f"cannot read {path} ({err.strerror}); pass a .vqz file written by "
                        "`vqae compress`") from err
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise DataError(f"{path} is not a regular file; pass a .vqz file written by "
                        "`vqae compress`")
    with os.fdopen(fd, "rb") as f:
        prefix = f.read(min(st.st_size, MAX_HEADER_BYTES))
        check_size(prefix, st.st_size, str(path), check)
        return prefix + f.read(st.st_size - len(prefix))


def _read_chunk(data: bytes, pos: int, name: str, stage: int,
                header: Header) -> tuple[bytes, int]:
    where = f"{name}: chunk {stage + 1} of {header.depth} (RVQ stage {stage})"
    fix = (f"re-copy the file, or decode the complete stages before it with --depth {stage}"
           if stage else "re-copy the file or compress the patch again")
    if stage == GEOREF_STAGE:
        where, fix = f"{name}: its georeferencing chunk", "re-copy the file"
    if stage == LAYER_STAGE:
        where = f"{name}: the enhancement layer (after {header.depth} RVQ stages)"
        fix = "re-copy the file, or decode its lossy stages alone with --lossy"
    got = read_varint(data, pos)
    if got is None or got[1] + 4 > len(data):
        raise DataError(f"{where} is truncated inside its chunk header; {fix}")
    length, pos = got
    (crc,) = struct.unpack_from("<I", data, pos)
    start, end = pos + 4, pos + 4 + length
    if end > len(data):
        raise DataError(f"{where} is truncated: {length} payload bytes expected, "
                        f"{len(data) - start} present; {fix}")
    payload = data[start:end]
    if chunk_crc(payload, stage, header.fingerprint, header.version) != crc:
        raise DataError(f"{where} fails its CRC32 check (the file is damaged); {fix}")
    return payload, end
