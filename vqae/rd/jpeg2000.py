"""JPEG 2000 on the same patches: OpenJPEG through imagecodecs, 16-bit J2K codestreams.

Two ways to code a patch, the better of the two is kept at each rate by `vqae rd`:

- `bands`: each band at its native size (120, 60 or 20 px) as its own codestream, decoded and
  upsampled exactly as the reader upsamples the stored bands;
- `stack`: the upsampled (C, 120, 120) stack the model sees, as one multi-component codestream
  (no colour transform).

`quality` is OpenJPEG's target PSNR of the single quality layer in dB, relative to the 16-bit
range (imagecodecs' `level`): about 16.3 dB above the PSNR of DESIGN.md, whose peak is 10000.
`quality=None` is lossless (reversible 5/3 wavelet).
"""

from __future__ import annotations

import imagecodecs
import numpy as np

from vqae.data.bands import to_uint16
from vqae.data.resample import stack_bands

MODES = ("bands", "stack")
# OpenJPEG target PSNRs (dB, 16-bit range) swept by `vqae rd`: about 17-70 dB in DESIGN.md terms
DEFAULT_QUALITIES = (34, 38, 42, 46, 50, 54, 58, 62, 66, 70, 76, 86)


def encode(image: np.ndarray, quality: float | None) -> bytes:
    """(H, W) or (H, W, C) uint16 -> a J2K codestream; None = lossless."""
    if image.dtype != np.uint16:
        raise ValueError(f"JPEG 2000 here codes uint16, got {image.dtype}")
    return imagecodecs.jpeg2k_encode(image, level=quality, codecformat="J2K", mct=False,
                                     reversible=quality is None)


def decode(data: bytes) -> np.ndarray:
    return imagecodecs.jpeg2k_decode(data)


def code_stack(x: np.ndarray, quality: float | None) -> tuple[int, np.ndarray]:
    """(C, H, W) digital numbers -> (bytes, reconstruction (C, H, W) float32)."""
    data = encode(np.ascontiguousarray(np.moveaxis(to_uint16(x), 0, -1)), quality)  # (H, W, C)
    recon = decode(data).reshape(x.shape[1], x.shape[2], -1)  # (H, W, C)
    return len(data), np.moveaxis(recon, -1, 0).astype(np.float32)


def code_native(raw: dict[str, np.ndarray], bands: list[str],
                quality: float | None) -> tuple[int, dict[str, np.ndarray]]:
    """Native bands {band: (h, w) uint16}, each its own codestream -> (bytes, {band: decoded
    (h, w)}): what a max error is measured on."""
    total, decoded = 0, {}
    for band in bands:
        data = encode(to_uint16(raw[band]), quality)
        total += len(data)
        decoded[band] = decode(data)
    return total, decoded


def code_bands(raw: dict[str, np.ndarray], bands: list[str], quality: float | None,
               flag: int) -> tuple[int, np.ndarray]:
    """Native bands {band: (h, w) uint16} -> (bytes, reconstruction (C, 120, 120) float32),
    upsampled with the reader's OpenCV `flag`."""
    total, decoded = code_native(raw, bands, quality)
    return total, stack_bands(decoded, bands, flag)


def code_patch(mode: str, x: np.ndarray, raw: dict[str, np.ndarray], bands: list[str],
               quality: float | None, flag: int) -> tuple[int, np.ndarray]:
    if mode == "stack":
        return code_stack(x, quality)
    return code_bands(raw, bands, quality, flag)
