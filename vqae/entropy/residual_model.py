"""The enhancement layer's residual model: integer features -> integer (mean, scale index).

Every residual sample gets its probabilities from what the decoder already holds: the exact
integer base (vqae.codec.enhancement), the band's position in the coding order, the residuals
of the bands decoded before it (co-located) and of its own band's neighbours decoded in an
earlier phase of a 2x2 polyphase split. The network is an integer MLP (Balle et al., "Integer
networks for data compression with latent-variable models", ICLR 2019): int64 weights and
arithmetic, so its outputs are the same on every machine, thread count and library build;
probabilities come from integer frequency tables stored beside it. Nothing float touches a
decoded value, so the layer decodes exactly by construction.

Tensors (`state()`, kept in the checkpoint under "residual"): w1 (H, F), b1 (H,), w2 (2, H),
ws (2, F), b2 (2,) int64 in fixed point (WEIGHT_BITS), tables (T, A) int64 frequencies, and
meta (kind, bands, hidden, ...) as int64.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from vqae.errors import DataError

WEIGHT_BITS = 16  # fractional bits of the integer weights
INPUT_BITS = 8  # the float network sees features / 2^INPUT_BITS
HIDDEN_BITS = 8  # fractional bits of the integer hidden units
FIXED = 16  # residual features are DN x FIXED (sub-DN means of neighbours survive)
CLIP = 1 << 16  # every feature is clipped to +-CLIP: with the stored weights' bounds
# (from_state), int64 sums never overflow
MAX_WEIGHT = 8.0  # float weights are clipped to +-MAX_WEIGHT before quantization
MAX_MEAN = 65535  # |predicted mean| in DN
STEPS_PER_OCTAVE = 4  # scale index tau: sigma = 2^(tau / 4) DN
T_MIN, T_MAX = -12, 64  # table index range: sigma / step from 2^-3 to 2^16
H_MAX = 1023  # coded high parts h in -H_MAX..H_MAX; beyond: escape
ALPHABET = 2 * H_MAX + 2  # the h values and the escape symbol (last)
ESCAPE = ALPHABET - 1
TABLE_TOTAL = 1 << 22  # each table's frequencies sum to about this; every one >= 1
TAIL_WEIGHT, TAIL_SCALE = 0.02, 6.0  # the tables' Laplace mixture: 2% at 6x the scale
KINDS = ("mlp", "linear", "static")  # full; no hidden layer; band and step only
MAX_HIDDEN = 256  # a stored model is refused beyond: its cost per pixel grows with it
MAX_BIAS = 2.0**20  # |bias| in output units: sums stay far inside int64
FEATURE_VERSION = 2  # the feature set below; a model of another set is refused
PREVIOUS = 3  # earlier bands whose co-located residuals are features
LS_ONE = 64  # a band's least-squares weights on the PREVIOUS bands: int8 codes / 64
PHASES = ((0, 0), (1, 1), (0, 1), (1, 0))  # the 2x2 polyphase coding order
def _quarter_thresholds() -> np.ndarray:
    """QUARTER[j]: the smallest integer n with n^4 >= 2^j, by exact integer search."""
    out = []
    for j in range(80):
        n = max(1, int(2 ** (j / 4)) - 2)
        while n**4 < 2**j:
            n += 1
        out.append(n)
    return np.array(out, dtype=np.int64)


QUARTER = _quarter_thresholds()


def ilog(v: np.ndarray) -> np.ndarray:
    """floor(4 log2 |v|) + 1 for |v| >= 1, 0 for 0: an exact integer log (quarter octaves)."""
    a = np.abs(np.asarray(v, np.int64))
    return np.searchsorted(QUARTER, a, side="right").astype(np.int64)


def step_log(step: int) -> int:
    """floor(4 log2 step) for a quantizer step >= 1, in exact integer arithmetic."""
    t = 0
    while 2 ** (t + 1) <= step**STEPS_PER_OCTAVE:
        t += 1
    return t


def feature_count(bands: int) -> int:
    return bands + len(PHASES) + len(FEATURES)


FEATURES = ("step", "nb_mean", "nb_abs", "nb_count", "nb_vs_ls", "ls_pred", "log_ls", *(
    f"prev{k}_{what}" for k in range(1, PREVIOUS + 1) for what in ("value", "abs")),
    "base_log", "base_grad", "log_nb_mean", "log_nb_abs", "log_prev1", "log_prev1_abs",
    "log_prev2_abs")


@dataclass
class ResidualModel:
    """An integer residual model for one vqae model's bands (see the module docstring)."""

    kind: str
    bands: int
    w1: np.ndarray  # (H, F) int64
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (2, H)
    ws: np.ndarray  # (2, F)
    b2: np.ndarray  # (2,)
    tables: np.ndarray  # (T, ALPHABET) int64 frequencies

    def predict(self, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features (N, F) int64 -> (mean DN, scale index tau) (N,) int64, exactly."""
        g = np.clip(g, -CLIP, CLIP)
        shift = WEIGHT_BITS + INPUT_BITS
        out = g @ self.ws.T + self.b2  # (N, 2), units 2^-shift
        if len(self.b1):
            h = np.maximum(g @ self.w1.T + self.b1, 0) >> WEIGHT_BITS  # units 2^-HIDDEN_BITS
            out = out + (h @ self.w2.T << (INPUT_BITS - HIDDEN_BITS))
        half = np.int64(1) << (shift - 1)
        mean = (out[:, 0] * FIXED + half) >> shift
        tau = (out[:, 1] * STEPS_PER_OCTAVE + half) >> shift
        return np.clip(mean, -MAX_MEAN, MAX_MEAN), tau

    def state(self) -> dict:
        import torch

        meta = np.array([KINDS.index(self.kind), self.bands, len(self.b1), FEATURE_VERSION],
                        np.int64)
        arrays = {"w1": self.w1, "b1": self.b1, "w2": self.w2, "ws": self.ws, "b2": self.b2,
                  "tables": self.tables, "meta": meta}
        return {k: torch.from_numpy(np.ascontiguousarray(v, np.int64)) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, state: dict, source: str, bands: int | None = None) -> ResidualModel:
        """The model stored in a checkpoint's "residual" entry, checked key by key: int64
        tensors of the shapes its meta gives, for `bands` bands, every weight and bias within
        what int64 sums hold, positive table frequencies."""
        fix = f"run `vqae fit-residual {source} --replace` to fit a new one"
        try:
            tensors = {k: state[k] for k in ("w1", "b1", "w2", "ws", "b2", "tables", "meta")}
            wrong = [k for k, t in tensors.items() if t.dtype != torch_int64()]
            arrays = {k: t.numpy() for k, t in tensors.items()}
            meta = [int(v) for v in arrays.pop("meta")]
        except (KeyError, AttributeError, TypeError, ValueError) as err:
            raise DataError(f"{source}: its residual model is malformed ({err}); {fix}") from err
        if wrong or len(meta) != 4 or meta[3] != FEATURE_VERSION:
            raise DataError(f"{source}: its residual model was written by another vqae version "
                            f"or is damaged ({', '.join(wrong) or 'meta'}); {fix}")
        kind_code, count, hidden, _ = meta
        bad = check_arrays(arrays, count, hidden)
        if not 0 <= kind_code < len(KINDS) or (bands is not None and count != bands):
            bad.append(f"kind {kind_code} or {count} bands (the model has {bands})")
        if bad:
            raise DataError(f"{source}: its residual model holds impossible values "
                            f"({'; '.join(bad)}); {fix}")
        return cls(KINDS[kind_code], count, **arrays)

    def describe(self) -> str:
        return f"{self.kind}, {len(self.b1)} hidden units, fingerprint {self.fingerprint().hex()}"

    def fingerprint(self) -> bytes:
        """8 bytes of SHA-256 over every integer of the model: a layer names the model it
        needs, so a refitted model refuses old files instead of decoding them wrong."""
        h = hashlib.sha256()
        for name, t in sorted(self.state().items()):
            h.update(f"{name}|{tuple(t.shape)}|".encode() + t.numpy().astype("<i8").tobytes())
        return h.digest()[:8]


def torch_int64():
    import torch

    return torch.int64


def check_arrays(arrays: dict, bands: int, hidden: int) -> list[str]:
    """What is wrong with a stored model's arrays (nothing: [])."""
    if not 0 <= hidden <= MAX_HIDDEN or not 1 <= bands <= 255:
        return [f"{hidden} hidden units (at most {MAX_HIDDEN}) or {bands} bands"]
    f = feature_count(bands)
    shapes = {"w1": (hidden, f), "b1": (hidden,), "w2": (2, hidden), "ws": (2, f), "b2": (2,),
              "tables": (T_MAX - T_MIN + 1, ALPHABET)}
    bad = [f"{k} has shape {arrays[k].shape}, expected {s}" for k, s in shapes.items()
           if arrays[k].shape != s]
    if bad:
        return bad
    weight, bias = int(MAX_WEIGHT * 2**WEIGHT_BITS), int(MAX_BIAS * 2**(WEIGHT_BITS + INPUT_BITS))
    for k, limit in (("w1", weight), ("w2", weight), ("ws", weight), ("b1", bias), ("b2", bias)):
        a = arrays[k]
        if a.size and not ((a >= -limit) & (a <= limit)).all():  # -2^63 has no abs
            bad.append(f"{k} beyond +-{limit}")
    t = arrays["tables"]
    if not ((t >= 1) & (t <= TABLE_TOTAL)).all():
        bad.append("table frequencies outside 1..2^22")
    return bad


# ---- the coding distributions -----------------------------------------------------------

def shift_of(t: np.ndarray) -> np.ndarray:
    """Low bits sent raw at table index t: keeps the coded high part near <= 32 sigma units."""
    return np.maximum(0, np.floor_divide(t, STEPS_PER_OCTAVE) - 4)


def build_tables() -> np.ndarray:
    """(T, ALPHABET) integer frequencies: for each table index t, the high part h = q >> d of
    a symbol q under a discretized Laplace mixture of scale 2^(t/4) (escape: the mass beyond
    +-H_MAX). Built once at fit time and stored: decoders only read the integers."""
    rows = []
    for t in range(T_MIN, T_MAX + 1):
        d = int(shift_of(np.array(t)))
        b = 2.0 ** (t / STEPS_PER_OCTAVE)
        edges = (np.arange(-H_MAX, H_MAX + 2, dtype=np.float64) * 2**d) - 0.5  # h bin edges
        cdf = (1 - TAIL_WEIGHT) * _laplace_cdf(edges, b) + TAIL_WEIGHT * _laplace_cdf(
            edges, b * TAIL_SCALE)
        p = np.append(np.diff(cdf), cdf[0] + 1 - cdf[-1])  # last: escape
        rows.append(quantize(p))
    return np.stack(rows)


def _laplace_cdf(x: np.ndarray, b: float) -> np.ndarray:
    return np.where(x < 0, 0.5 * np.exp(np.minimum(x, 0) / b), 1 - 0.5 * np.exp(-np.maximum(x, 0) / b))


def quantize(p: np.ndarray) -> np.ndarray:
    """Probabilities -> integer frequencies, each >= 1, summing to about TABLE_TOTAL."""
    free = TABLE_TOTAL - len(p)
    return 1 + np.floor(np.maximum(p, 0) / max(p.sum(), 1e-300) * free).astype(np.int64)
