"""JPEG 2000 to a per-patch PSNR target, for `vqae rd --target-psnr`: the models' rule
(vqae.codec.ratecontrol) over OpenJPEG quality levels searched per patch, in both modes."""

from __future__ import annotations

import numpy as np
import torch

from vqae.codec.ratecontrol import Choice, pick
from vqae.metrics import psnr
from vqae.rd import jpeg2000

# OpenJPEG levels searched for a JPEG 2000 target: its PSNR is relative to the 16-bit range,
# about 16.3 dB above DESIGN.md's (peak 10000), but where the 0..10000 clamp hides error (snow
# and cloud above 10000 DN) a level far lower reaches the target; lossless past the top
LEVEL_SPAN = (-20.0, 60.0)  # dB about the target
LEVEL_STEPS = 10  # bisections: a level to within 0.08 dB (PSNR taken to rise with the level)


def jpeg2000_to_target(x: np.ndarray, raw: dict, bands: list[str], flag: int, offsets,
                       target: float) -> tuple[Choice, np.ndarray]:
    """JPEG 2000's cheapest codestream of patch x (C, H, W) at or above `target` dB (DESIGN.md's
    PSNR), the better of both modes: (its choice, its reconstruction (C, H, W))."""
    best = None
    for mode in jpeg2000.MODES:
        found = _search_level(mode, x, raw, bands, flag, offsets, target)
        if best is None or pick([best[0], found[0]], target) == 1:
            best = found
    return best


def _search_level(mode, x, raw, bands, flag, offsets, target):
    def code(level):
        n, recon = jpeg2000.code_patch(mode, x, raw, bands, level, flag)
        quality = float(psnr(torch.from_numpy(x)[None], torch.from_numpy(recon)[None],
                             offset=offsets))
        where = "lossless" if level is None else f"level {level:.2f}"
        return Choice(n, quality, f"{mode} {where}"), recon

    low, high = max(target + LEVEL_SPAN[0], 1.0), target + LEVEL_SPAN[1]
    found = code(high)
    if found[0].psnr < target:
        return code(None)  # beyond the lossy levels: lossless reaches every target
    for _ in range(LEVEL_STEPS):  # the lowest level that still reaches the target
        mid = (low + high) / 2
        trial = code(mid)
        if trial[0].psnr >= target:
            high, found = mid, trial
        else:
            low = mid
    return found
