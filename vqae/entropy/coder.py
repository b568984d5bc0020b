"""Entropy coding of index sequences with constriction's ANS coder (no hand-written coder).

Each symbol has its own probability row (M, K) float64, computed on the CPU from the integer
tables in exactly the same way by encoder and decoder; `Categorical(perfect=False)` is stated on
both sides, since its default differs between constriction versions. A payload is the coder's
u32 words, little-endian, with the zero high bytes of the last word dropped (at most 3; the
chunk length restores them).
"""

from __future__ import annotations

import constriction
import numpy as np

WORD = 4  # bytes per coder word


def _model():
    # perfect=False on both sides: the fast quantization; encoder and decoder must agree on it
    return constriction.stream.model.Categorical(perfect=False)


def pack(words: np.ndarray) -> bytes:
    data = words.astype("<u4").tobytes()
    keep = len(data)
    while keep > len(data) - (WORD - 1) and keep > 0 and data[keep - 1] == 0:
        keep -= 1
    return data[:keep]


def unpack(payload: bytes) -> np.ndarray:
    padded = payload + bytes(-len(payload) % WORD)
    return np.frombuffer(padded, dtype="<u4").astype(np.uint32)


def encode(symbols: np.ndarray, probs: np.ndarray) -> bytes:
    """symbols (M,) in [0, K), probs (M, K) float64 rows -> payload bytes."""
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(np.ascontiguousarray(symbols, dtype=np.int32), _model(),
                         np.ascontiguousarray(probs, dtype=np.float64))
    return pack(coder.get_compressed())


class AnsDecoder:
    """Pops symbols from one payload, in the order they were encoded, in as many calls as the
    contexts need (a row of positions at a time for the `up` context)."""

    def __init__(self, payload: bytes):
        self._coder = constriction.stream.stack.AnsCoder(unpack(payload))

    def decode(self, probs: np.ndarray) -> np.ndarray:
        """probs (M, K) float64 -> the next M symbols (M,) int64."""
        out = self._coder.decode(_model(), np.ascontiguousarray(probs, dtype=np.float64))
        return out.astype(np.int64)

    def exhausted(self) -> bool:
        """The final state check: every word consumed and the coder back in the empty state
        the encoder started from, as for an intact payload."""
        return self._coder.is_empty()


def ideal_bits(symbols: np.ndarray, probs: np.ndarray) -> float:
    """Information content -sum log2 p(symbol) under the rows: what an ideal coder spends."""
    return float(-np.log2(probs[np.arange(len(symbols)), symbols]).sum())
