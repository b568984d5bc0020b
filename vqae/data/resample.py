"""Bring 20 m and 60 m bands onto the 120x120 grid of the 10 m bands with OpenCV, or group them
by native size for the batched torch resampling of `vqae.data.device_input`."""

from __future__ import annotations

import cv2
import numpy as np

from vqae.data.bands import NATIVE_SIZE, PATCH_SIZE
from vqae.errors import ConfigError

INTERPOLATION = {
    "nearest": cv2.INTER_NEAREST,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def interpolation_flag(name: str) -> int:
    if name not in INTERPOLATION:
        raise ConfigError(f"data.interpolation={name!r}; valid: {', '.join(INTERPOLATION)}")
    return INTERPOLATION[name]


def stack_bands(raw: dict[str, np.ndarray], bands: list[str], flag: int,
                size: int = PATCH_SIZE) -> np.ndarray:
    """(C, size, size) float32 in the order of `bands`.

    Bands sharing a native size are resized in one cv2 call on their stored dtype (uint16 stays
    uint16, which is cheaper and clips bicubic undershoot at 0 as reflectance should be).
    """
    out = np.empty((len(bands), size, size), dtype=np.float32)
    groups: dict[tuple, list[int]] = {}
    for i, band in enumerate(bands):
        groups.setdefault((raw[band].shape, raw[band].dtype.str), []).append(i)
    for (shape, _), idx in groups.items():
        if shape == (size, size):
            for i in idx:
                out[i] = raw[bands[i]]
            continue
        for start in range(0, len(idx), 4):  # cv2 resizes at most 4 channels per call reliably
            chunk = idx[start : start + 4]
            img = np.stack([raw[bands[i]] for i in chunk], axis=-1)  # (h, w, n)
            res = cv2.resize(img, (size, size), interpolation=flag)
            res = res.reshape(size, size, len(chunk))
            out[chunk] = np.moveaxis(res, -1, 0)
    return out


def native_groups(bands: list[str]) -> dict[int, list[int]]:
    """Channel indices of `bands` by native side (120, 60, 20), each list in band order."""
    groups: dict[int, list[int]] = {}
    for i, band in enumerate(bands):
        groups.setdefault(NATIVE_SIZE[band], []).append(i)
    return groups


def native_stacks(raw: dict[str, np.ndarray], bands: list[str]) -> dict[int, np.ndarray]:
    """{native side: (n, side, side) stack in stored dtype} of `bands`, grouped as `native_groups`."""
    return {side: np.stack([raw[bands[i]] for i in idx])
            for side, idx in native_groups(bands).items()}
