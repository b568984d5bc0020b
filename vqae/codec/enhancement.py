"""The enhancement layer: native bands within e DN of the original (e = 0: lossless).

After the RVQ stages a file may carry one more chunk: the residual of the native bands against
an integer base, quantized with step 2e + 1 (JPEG-LS's near-lossless quantizer, so every
pixel is within e) and entropy coded under vqae.entropy.residual_model. Bands are coded in a
fixed order (10 m, then 20 m, then 60 m bands; the project's order within each), each in four
polyphase phases, so later bands and phases condition on what is already decoded.

Exact by construction (docs/format.md, "The enhancement layer"):
- the base is the decoder's output computed in float64 on the CPU (network, band filter,
  native block means), then floor(v + o) with an offset o from OFFSETS that the encoder picks
  so that no value lies within MARGIN of an integer step: float64's reordering error (about
  1e-11 DN here) cannot move a base value across a step. If no offset clears the margin, the
  layer codes against a zero base (NO_BASE): more bits, still exact.
- everything after the base is integer: features, the integer network, the frequency tables.
- the layer stores a CRC32 of the decoded native pixels; a mismatch is an error naming the
  file, never a wrong patch.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np

from vqae.data.bands import NATIVE_SIZE
from vqae.entropy import coder
from vqae.entropy.residual_features import features, ls_fit, phase_mask
from vqae.entropy.residual_model import (
    ALPHABET,
    ESCAPE,
    H_MAX,
    PHASES,
    PREVIOUS,
    T_MAX,
    T_MIN,
    ResidualModel,
    shift_of,
    step_log,
)
from vqae.errors import DataError

OFFSETS = tuple(k / 16 for k in (8, 0, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15))
NO_BASE = 0xFF  # offset code of a layer coded against a zero base
MARGIN = 2.0**-20  # DN: a base value this close to a step is not trusted
ESCAPE_OFFSET = 1 << 17  # escaped symbols q + ESCAPE_OFFSET in [0, 2^18): two 9-bit parts
MAX_DN = 65535
_PREFIX = struct.Struct("<8sBI")  # residual model fingerprint, offset code, pixel CRC32


def coding_order(bands: Sequence[str]) -> list[int]:
    """Band indices in coding order: finest native grid first, then the model's order."""
    return sorted(range(len(bands)), key=lambda c: (-NATIVE_SIZE[bands[c]], c))


def step_of(max_error: int) -> int:
    return 2 * max_error + 1


def quantize(v: np.ndarray, max_error: int) -> np.ndarray:
    """Residuals -> indices q with |v - q (2e + 1)| <= e."""
    return np.sign(v) * ((np.abs(v) + max_error) // step_of(max_error))


# ---- the exact integer base ---------------------------------------------------------------

def pick_offset(values: Sequence[np.ndarray]) -> int:
    """The first offset code whose steps no base value comes within MARGIN of, else NO_BASE."""
    for code, o in enumerate(OFFSETS):
        if all(np.abs((v + o) - np.rint(v + o)).min() >= MARGIN for v in values):
            return code
    return NO_BASE


def integer_base(values: Sequence[np.ndarray], code: int) -> list[np.ndarray]:
    """float64 base values -> int64 bases in [0, 65535] (zero for NO_BASE)."""
    if code == NO_BASE:
        return [np.zeros(v.shape, np.int64) for v in values]
    return [np.clip(np.floor(v + OFFSETS[code]), 0, MAX_DN).astype(np.int64) for v in values]


# ---- one symbol stream for encoder and decoder -----------------------------------------

class _Tables:
    """constriction models of the residual model's tables and of uniform raw bits, built once."""

    def __init__(self, model: ResidualModel):
        self.freqs = model.tables
        self._cache: dict = {}

    def table(self, t: int):
        key = ("t", t)
        if key not in self._cache:
            f = self.freqs[t - T_MIN].astype(np.float64)
            self._cache[key] = (constriction.stream.model.Categorical(f / f.sum(), perfect=False),
                                np.log2(f.sum()) - np.log2(f))
        return self._cache[key]

    def uniform(self, size: int):
        key = ("u", size)
        if key not in self._cache:
            self._cache[key] = (constriction.stream.model.Categorical(
                np.full(size, 1.0 / size), perfect=False), np.full(size, np.log2(size)))
        return self._cache[key]


class _Encoder:
    """Records each segment of symbols; writes them in reverse at the end (ANS is a stack)."""

    def __init__(self):
        self.segments, self.bits = [], 0.0

    def code(self, symbols: np.ndarray, model) -> np.ndarray:
        dist, cost = model
        if len(symbols):
            self.segments.append((np.ascontiguousarray(symbols, np.int32), dist))
            self.bits += float(cost[symbols].sum())
        return symbols

    def payload(self) -> bytes:
        ans = constriction.stream.stack.AnsCoder()
        for symbols, dist in reversed(self.segments):
            ans.encode_reverse(symbols, dist)
        return coder.pack(ans.get_compressed())


class _Decoder:
    def __init__(self, payload: bytes):
        self.ans = constriction.stream.stack.AnsCoder(coder.unpack(payload))

    def code(self, symbols: np.ndarray, model) -> np.ndarray:
        n = len(symbols)
        return self.ans.decode(model[0], n).astype(np.int64) if n else symbols


def weight_counts(bands: int) -> list[int]:
    """Least-squares weights stored per band position: one per previous band, up to PREVIOUS."""
    return [min(pos, PREVIOUS) for pos in range(bands)]


def code_bands(model: ResidualModel, bases: list[np.ndarray], max_error: int, stream,
               originals: list[np.ndarray] | None = None,
               weights: list[np.ndarray] | None = None
               ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The layer's symbols through `stream` (an _Encoder given `originals`, an _Decoder
    given the stored `weights`): bases and originals (n, n) int64 in coding order -> (the
    decoded native bands, each band's least-squares weights on the bands before it)."""
    tables, step = _Tables(model), step_of(max_error)
    lift = step_log(step)
    out, rhos, used = [], [], []
    for pos, base in enumerate(bases):
        n = base.shape[0]
        rho, recon = np.zeros((n, n), np.int64), np.zeros((n, n), np.int64)
        w = weights[pos] if weights is not None else ls_fit(originals[pos] - base, rhos[::-1])
        used.append(w)
        for k in range(len(PHASES)):
            at = phase_mask(n, k)
            mean, tau = model.predict(features(pos, len(bases), k, step, base, rho,
                                               rhos[::-1], w))
            b = base[at] + mean
            q = None if originals is None else quantize(originals[pos][at] - b, max_error)
            q = code_phase(tables, stream, np.clip(tau - lift, T_MIN, T_MAX), q)
            recon[at] = np.clip(b + q * step, 0, MAX_DN)
            rho[at] = recon[at] - base[at]
        out.append(recon)
        rhos.append(rho)
    return out, used


def code_phase(tables: _Tables, stream, t: np.ndarray, q: np.ndarray | None) -> np.ndarray:
    """One band-phase's indices q (None when decoding) through `stream`, at table indices t:
    per table its high parts h = q >> d (escape beyond +-H_MAX), then the escaped values in two
    9-bit parts, then the d raw low bits of each table with d > 0."""
    d = shift_of(t)
    n = len(t)
    sym = np.zeros(n, np.int64) if q is None else np.where(
        np.abs(q >> d) > H_MAX, ESCAPE, (q >> d) + H_MAX)
    for tt in np.unique(t):
        sel = t == tt
        sym[sel] = stream.code(sym[sel], tables.table(int(tt)))
    if (sym >= ALPHABET).any() or (sym < 0).any():
        raise ValueError("a symbol outside the alphabet")
    esc = sym == ESCAPE
    raw = np.zeros(int(esc.sum()), np.int64) if q is None else q[esc] + ESCAPE_OFFSET
    low = stream.code(raw & 511, tables.uniform(512))
    high = stream.code(raw >> 9, tables.uniform(512))
    out = np.zeros(n, np.int64)
    out[esc] = low + (high << 9) - ESCAPE_OFFSET
    plain = ~esc
    out[plain] = (sym[plain] - H_MAX) << d[plain]
    for dd in np.unique(d[plain & (d > 0)]):
        sel = plain & (d == dd)
        bits = None if q is None else q[sel] - ((q[sel] >> dd) << dd)
        bits = stream.code(np.zeros(int(sel.sum()), np.int64) if bits is None else bits,
                           tables.uniform(1 << int(dd)))
        out[sel] += bits
    return out


# ---- the layer's bytes -------------------------------------------------------------------

@dataclass(frozen=True)
class Layer:
    """An encoded layer: its chunk payload, ideal bits and the decoded native bands."""

    payload: bytes
    ideal_bits: float
    recon: list[np.ndarray]  # (n, n) int64 per band, coding order
    offset_code: int


def pixel_crc(bands: Sequence[np.ndarray]) -> int:
    return zlib.crc32(b"".join(np.asarray(b, "<u2").tobytes() for b in bands))


def encode_layer(model: ResidualModel, values: list[np.ndarray], originals: list[np.ndarray],
                 max_error: int) -> Layer:
    """float64 base values and the original native bands (coding order) -> the layer."""
    code = pick_offset(values)
    bases = integer_base(values, code)
    stream = _Encoder()
    recon, weights = code_bands(model, bases, max_error, stream,
                                [np.asarray(o, np.int64) for o in originals])
    prefix = _PREFIX.pack(model.fingerprint(), code, pixel_crc(recon))
    stored = np.concatenate([np.zeros(0, np.int64), *weights]).astype(np.int8).tobytes()
    return Layer(prefix + stored + stream.payload(), stream.bits + 8 * len(stored), recon, code)


def decode_layer(model: ResidualModel, values: list[np.ndarray], payload: bytes,
                 max_error: int, source: str) -> list[np.ndarray]:
    """The layer chunk's payload -> the native bands (coding order), proven by their CRC."""
    if len(payload) < _PREFIX.size:
        raise DataError(f"{source}: its enhancement layer is shorter than its own prefix; the "
                        "file is damaged")
    fp, code, crc = _PREFIX.unpack_from(payload)
    if fp != model.fingerprint():
        raise DataError(f"{source}: its enhancement layer was coded with another residual "
                        f"model (fingerprint {fp.hex()}, the checkpoint's is "
                        f"{model.fingerprint().hex()}); decompress it with the checkpoint that "
                        "compressed it")
    if code != NO_BASE and code >= len(OFFSETS):
        raise DataError(f"{source}: its enhancement layer gives base offset {code}, which no "
                        "encoder writes; the file is damaged")
    counts = weight_counts(len(values))
    start = _PREFIX.size + sum(counts)
    if len(payload) < start:
        raise DataError(f"{source}: its enhancement layer is cut inside its band weights; the "
                        "file is damaged")
    flat = np.frombuffer(payload[_PREFIX.size : start], np.int8).astype(np.int64)
    weights = np.split(flat, np.cumsum(counts)[:-1])
    stream = _Decoder(payload[start:])
    try:
        recon, _ = code_bands(model, integer_base(values, code), max_error, stream,
                              weights=weights)
        intact = stream.ans.is_empty()
    except (ValueError, RuntimeError, AssertionError) as err:
        raise DataError(f"{source}: its enhancement layer does not decode ({err}); the file "
                        "is damaged") from err
    if not intact or pixel_crc(recon) != crc:
        raise DataError(f"{source}: its enhancement layer decodes to pixels that fail their "
                        "CRC32 (the file is damaged, or this machine computed a different "
                        "base); nothing was written for it")
    return recon
