"""Classical lossless and near-lossless anchors on native Sentinel-2 bands, through imagecodecs.

Each band is coded at its native size (120, 60 or 20 px) as its own codestream, then decoded
and compared with the original in int64: a point is reported only once its measured max
absolute error over every native pixel is within the asked `max_error` (AssertionError
otherwise, so a broken codec never lands in a table).

- `jpegls`: CharLS JPEG-LS, NEAR = max_error (0 = lossless; CharLS takes NEAR <= 255);
- `lerc`: Esri LERC2, maxZError = max_error; for integer data LERC quantises with a step of
  2 * floor(maxZError) (0 and 0.5 are lossless), so |error| <= max_error, as measured;
- `jpegxl`: libjxl, lossless only (its lossy mode is a perceptual distance, not a max error);
- `jpeg2000`: OpenJPEG, lossless only (the reversible 5/3 wavelet; its lossy mode bounds a
  PSNR, not a max error).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import imagecodecs
import numpy as np

CODECS = ("jpegls", "lerc", "jpegxl", "jpeg2000")
GRID = 120 * 120  # the 10 m grid every band is counted on in bits per pixel per band
# the codecs with a max-error mode, and its largest max error (CharLS: NEAR in [0, 255])
NEAR_LOSSLESS = {"jpegls": 255, "lerc": np.iinfo(np.uint16).max}

_ENCODE: dict[str, Callable[[np.ndarray, int], bytes]] = {
    "jpegls": lambda band, e: imagecodecs.jpegls_encode(band, level=e),
    "lerc": lambda band, e: imagecodecs.lerc_encode(band, level=e),
    "jpegxl": lambda band, e: imagecodecs.jpegxl_encode(band, lossless=True, effort=7),
    # the reversible 5/3 J2K codestream, as vqae.rd.jpeg2000 codes its lossless point
    "jpeg2000": lambda band, e: imagecodecs.jpeg2k_encode(band, level=None, codecformat="J2K",
                                                          mct=False, reversible=True),
}
_DECODE: dict[str, Callable[[bytes], np.ndarray]] = {
    "jpegls": imagecodecs.jpegls_decode,
    "lerc": imagecodecs.lerc_decode,
    "jpegxl": imagecodecs.jpegxl_decode,
    "jpeg2000": imagecodecs.jpeg2k_decode,
}


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; valid codecs: {', '.join(CODECS)}")


def _check_error(max_error: int) -> None:
    if isinstance(max_error, bool) or not isinstance(max_error, (int, np.integer)) \
            or max_error < 0:
        raise ValueError(f"max_error must be an integer >= 0 (digital numbers), got {max_error!r}")


def offers(codec: str, max_error: int) -> bool:
    """Whether `codec` has a mode that bounds the max error by `max_error` (all do at 0)."""
    _check_codec(codec)
    _check_error(max_error)
    return max_error == 0 or max_error <= NEAR_LOSSLESS.get(codec, 0)


def encode(codec: str, band: np.ndarray, max_error: int) -> bytes:
    """One native band (2-D uint16) -> its codestream; the codec must offer `max_error`."""
    if not offers(codec, max_error):
        raise ValueError(f"{codec} offers no mode bounded by max_error={max_error}")
    if band.dtype != np.uint16 or band.ndim != 2:
        raise ValueError(f"bands must be 2-D uint16 arrays, got {band.ndim}-D {band.dtype}")
    return _ENCODE[codec](np.ascontiguousarray(band), int(max_error))


def decode(codec: str, data: bytes) -> np.ndarray:
    _check_codec(codec)
    return _DECODE[codec](data)


def _max_error(band: np.ndarray, decoded: np.ndarray) -> int:
    if decoded.shape != band.shape:
        raise AssertionError(f"decoded shape {decoded.shape}, not the band's {band.shape}")
    return int(np.abs(decoded.astype(np.int64) - band.astype(np.int64)).max(initial=0))


def anchor_bits(patch: Mapping[str, np.ndarray], codec: str,
                max_error: int) -> tuple[int, int] | None:
    """(bits of all bands' codestreams together, max absolute error over every native pixel),
    verified by decoding; None where `codec` offers no mode bounded by `max_error`."""
    if not offers(codec, max_error):
        return None
    bits, worst = 0, 0
    for name, band in patch.items():
        data = encode(codec, band, max_error)
        error = _max_error(band, decode(codec, data))
        if error > max_error:
            raise AssertionError(f"{codec} at max_error={max_error} decoded band {name} with a "
                                 f"max error of {error}: the codec broke its bound")
        bits, worst = bits + 8 * len(data), max(worst, error)
    return bits, worst


def _unique(errors: Sequence[int]) -> list[int]:
    for e in errors:
        _check_error(e)
    return list(dict.fromkeys(int(e) for e in errors))


def anchor_rows(patch_id: str, patch: Mapping[str, np.ndarray],
                errors: Sequence[int]) -> list[dict]:
    """One row per (codec, max_error) the codec offers, for one patch: {"patch", "codec",
    "max_error", "bits", "measured_max_error"}."""
    rows = []
    for codec in CODECS:
        for e in _unique(errors):
            point = anchor_bits(patch, codec, e)
            if point is not None:
                rows.append({"patch": patch_id, "codec": codec, "max_error": e,
                             "bits": point[0], "measured_max_error": point[1]})
    return rows


def anchor_table(patches: Iterable[Mapping[str, np.ndarray]], errors: Sequence[int], *,
                 grid: int = GRID) -> list[dict]:
    """One row per (codec, max_error) the codec offers, over all `patches`: {"codec",
    "max_error", "bpppb" (total bits / (grid * bands of all patches), i.e. bits / (n * 14400 *
    12) for n 12-band patches), "measured_max_error" (max over patches), "patches"}."""
    totals: dict[tuple[str, int], list[int]] = {}
    n, pixels = 0, 0
    for patch in patches:
        n, pixels = n + 1, pixels + grid * len(patch)
        for row in anchor_rows(str(n), patch, errors):
            total = totals.setdefault((row["codec"], row["max_error"]), [0, 0])
            total[0] += row["bits"]
            total[1] = max(total[1], row["measured_max_error"])
    if not pixels:
        raise ValueError("anchor_table needs at least one patch with at least one band")
    return [{"codec": codec, "max_error": e, "bpppb": bits / pixels,
             "measured_max_error": worst, "patches": n}
            for (codec, e), (bits, worst) in totals.items()]
