"""What the library API accepts, checked at the boundary: a patch (a dict of native bands or a
(C, H, W) array of digital numbers) and a file's bytes. Anything else is a one-line DataError
naming the band or the argument, never a traceback from cv2, torch or struct, nor a file that
cannot decode to what was given (NaN, inf, or S2 values outside uint16)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from vqae.data.bands import NATIVE_SIZE, UINT16_MAX, is_s1
from vqae.data.resample import stack_bands
from vqae.errors import DataError

NUMBERS = "uif"  # numpy dtype kinds of unsigned, signed and floating numbers


def numbers(value, what: str) -> np.ndarray:
    """`value` as a numeric array, or a DataError naming `what`."""
    try:
        a = value.detach().cpu().numpy() if torch.is_tensor(value) else np.asarray(value)
    except (ValueError, TypeError) as err:
        raise DataError(f"{what} is not an array of numbers ({err})") from None
    if a.dtype.kind not in NUMBERS:
        raise DataError(f"{what} has dtype {a.dtype}; pass digital numbers (uint16 or float)")
    return a


def check_values(a: np.ndarray, band: str, what: str) -> None:
    """Finite, and within uint16 for an S2 band (S1 bands are dB: any finite value)."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise DataError(f"{what} holds {int((~np.isfinite(a)).sum())} NaN or infinite "
                        "values; replace them (e.g. with the band's mean) before compressing")
    if not is_s1(band) and a.size and (a.min() < 0 or a.max() > UINT16_MAX):
        raise DataError(f"{what} holds values in {a.min():g}..{a.max():g}, outside "
                        f"0..{UINT16_MAX} (S2 digital numbers are uint16)")


def band_stack(patch: Mapping, bands: Sequence[str], size: int, flag: int,
               source: str) -> np.ndarray:
    """A dict of native bands -> (C, size, size) float32, upsampled as the reader does."""
    missing = [b for b in bands if b not in patch]
    if missing:
        raise DataError(f"the patch has no band {', '.join(missing)}; {source} codes "
                        f"{' '.join(bands)}")
    raw = {}
    for band in bands:
        a = numbers(patch[band], f"band {band}")
        if a.ndim != 2 or a.shape[0] != a.shape[1] or not a.shape[0] or size % a.shape[0]:
            raise DataError(f"band {band} has shape {a.shape}; expected a square array whose "
                            f"side divides {size}")
        check_values(a, band, f"band {band}")
        # uint16 as stored is what the reader upsamples; other integers become it, floats fp32
        integer = a.dtype.kind in "ui" and not is_s1(band)
        raw[band] = a.astype(np.uint16 if integer else np.float32, copy=False)
    return stack_bands(raw, list(bands), flag, size)


def patch_image(patch, bands: Sequence[str], size: int, flag: int, source: str) -> torch.Tensor:
    """A reader's patch -> (C, size, size) float32 digital numbers on the CPU."""
    if isinstance(patch, Mapping):
        return torch.from_numpy(band_stack(patch, bands, size, flag, source))
    if patch is None or isinstance(patch, (str, bytes, os.PathLike)):
        raise DataError(f"a patch is a {{band: array}} dict or a ({len(bands)}, {size}, "
                        f"{size}) array, not {type(patch).__name__}; read files first "
                        "(vqae.data.source.read_patch)")
    a = numbers(patch, "the patch")
    if a.shape != (len(bands), size, size):
        raise DataError(f"the patch has shape {a.shape}; {source} codes ({len(bands)}, "
                        f"{size}, {size}) digital numbers (bands {' '.join(bands)}), or pass "
                        "a {band: array} dict")
    for band, plane in zip(bands, a):
        check_values(plane, band, f"band {band}")
    return torch.from_numpy(a.astype(np.float32))


def patch_list(patches) -> list:
    if isinstance(patches, (Mapping, np.ndarray, torch.Tensor, str, bytes)):
        raise DataError("compress_batch takes a list of patches; for one patch call compress")
    return list(patches)


def file_list(files) -> list:
    if isinstance(files, (bytes, bytearray, memoryview, str, os.PathLike)):
        raise DataError("decompress_batch takes a list of files' bytes; for one file call "
                        "decompress")
    return list(files)


def file_bytes(data, source: str) -> bytes:
    """A file's bytes from bytes, a bytearray, a memoryview or a 1-D uint8 array."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1:
        return data.tobytes()
    if isinstance(data, (str, os.PathLike)):
        raise DataError(f"decompress takes a file's bytes, not its path ({source}); pass "
                        "Path(...).read_bytes()")
    raise DataError(f"decompress takes a file's bytes, got {type(data).__name__} ({source})")


def native_bands(patch, bands: Sequence[str], source: str) -> dict[str, np.ndarray]:
    """A patch for --max-error -> {band: int64 at its native size}: the values the layer keeps
    within the bound (whole digital numbers, as `vqae encode` stores them)."""
    if not isinstance(patch, Mapping):
        raise DataError("--max-error keeps native pixels: pass the patch as a {band: native "
                        "uint16 array} dict (vqae.data.source.read_patch), not a stacked array")
    out = {}
    for band in bands:
        if band not in patch:
            raise DataError(f"the patch has no band {band}; {source} codes {' '.join(bands)}")
        a = numbers(patch[band], f"band {band}")
        size = NATIVE_SIZE.get(band)
        if a.shape != (size, size):
            raise DataError(f"band {band} has shape {a.shape}; --max-error needs it at its "
                            f"native {size}x{size}")
        check_values(a, band, f"band {band}")
        if a.dtype.kind == "f" and (a != np.round(a)).any():
            raise DataError(f"band {band} holds fractional values; --max-error keeps whole "
                            "digital numbers (uint16)")
        out[band] = a.astype(np.int64)
    return out
