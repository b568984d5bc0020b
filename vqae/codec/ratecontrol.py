"""Per-patch rate control: each patch coded the cheapest way that reaches a target.

A fixed-depth codec spends the same bits on sea and on clouds. Here every (RVQ depth, band
filter) pair is a real file of the patch (the progressive format gives each file its own
depth; the stages are entropy-coded once and shared), and the target picks among them:

- a PSNR target: the smallest file at or above it, else the best PSNR the model reaches;
- a rate target (bpppb): the best PSNR among the files within it, else the smallest file.

With a residual model (`vqae fit-residual`) the choices go on through the enhancement layer:
the full-depth file plus a layer of max error e, for e on LADDER down to 0 (lossless), so
every patch reaches every PSNR target. PSNR falls as e grows, so each patch bisects the
ladder (about five layers a patch) instead of coding every e.

The PSNR is DESIGN.md's, of exactly the pixels decompress gives. `vqae rd` applies the same
rule to JPEG 2000 (vqae.rd.targets).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from vqae.metrics import psnr


@dataclass(frozen=True)
class Choice:
    """One way of coding a patch: its bytes, PSNR and what it was (e.g. "depth2 gain")."""

    bytes: int
    psnr: float
    setting: str


def psnr_key(choice: Choice, target: float) -> tuple:
    """Smaller is better: reaching the target, then fewer bytes; else a higher PSNR."""
    if choice.psnr >= target:
        return (0, choice.bytes, -choice.psnr)
    return (1, -choice.psnr, choice.bytes)


def rate_key(choice: Choice, max_bytes: int) -> tuple:
    """Smaller is better: within the rate, then a higher PSNR; else fewer bytes."""
    if choice.bytes <= max_bytes:
        return (0, -choice.psnr, choice.bytes)
    return (1, choice.bytes, -choice.psnr)


def pick(choices: Sequence[Choice], target: float) -> int:
    """The index of the smallest choice with PSNR >= target, else of the best PSNR (ties: the
    smaller file)."""
    return min(range(len(choices)), key=lambda i: psnr_key(choices[i], target))


@dataclass(frozen=True)
class Target:
    """Exactly one of a PSNR (dB) and a rate (bits per pixel per band, whole file)."""

    psnr: float | None = None
    bpppb: float | None = None

    def __post_init__(self):
        assert (self.psnr is None) != (self.bpppb is None), "one target: psnr or bpppb"

    def max_bytes(self, bands: int, size: int) -> int:
        """The largest file within the rate target (a whole number of bytes)."""
        return math.floor(self.bpppb * size * size * bands / 8 + 1e-9)

    def key(self, choice: Choice, bands: int, size: int) -> tuple:
        if self.psnr is not None:
            return psnr_key(choice, self.psnr)
        return rate_key(choice, self.max_bytes(bands, size))

    def reached(self, choice: Choice, bands: int, size: int) -> bool:
        return self.key(choice, bands, size)[0] == 0

    def describe(self) -> str:
        return (f"PSNR >= {self.psnr:g} dB" if self.psnr is not None else
                f"at most {self.bpppb:g} bpppb")


# max errors the enhancement layer is tried at (DN); 0 is lossless
LADDER = (0, 1, 2, 3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 90, 128, 181, 256, 362, 512, 724, 1024)


@torch.no_grad()
def compress_to_target(codec, x: torch.Tensor, target: Target, max_depth: int,
                       kinds: Sequence[str], offsets, natives=None) -> list[tuple[object, Choice]]:
    """(B, C, H, W) digital numbers on the codec's device -> per patch (its chosen
    `Compressed`, with the pixels decompress gives, and the choice). Depths 1..max_depth, band
    filters `kinds`, and with `natives` ({band: native} per patch) the enhancement layer on
    LADDER; the stages are entropy-coded once, and only each patch's pick so far is kept."""
    analysed = codec.analyse(x, max_depth)
    stages = [codec.code_stages(g) for g in analysed[0]]  # a prefix serves every depth
    x_cpu = x.float().cpu()
    size, bands = codec.model.image_size, len(codec.bands)
    best: list[tuple[object, Choice] | None] = [None] * len(x)
    for d in range(1, max_depth + 1):
        ways = codec.compress_ways(x, d, kinds, analysed, pixels=True, stages=stages)
        for kind, files in ways.items():
            recon = torch.from_numpy(np.stack([f.pixels for f in files]))  # (B, C, H, W)
            for i, (file, quality) in enumerate(zip(files, psnr(x_cpu, recon,
                                                                offset=offsets).tolist())):
                choice = Choice(len(file.data), quality, f"depth{d} {kind}")
                if best[i] is None or (target.key(choice, bands, size)
                                       < target.key(best[i][1], bands, size)):
                    best[i] = (file, choice)
    if natives is not None:
        kind = "gain" if "gain" in kinds else kinds[0]
        for i in range(len(x)):
            enhanced = best_enhanced(codec, x_cpu[i], target, analysed, i, max_depth, kind,
                                     stages[i], natives[i], offsets)
            if target.key(enhanced[1], bands, size) < target.key(best[i][1], bands, size):
                best[i] = enhanced
    return best


def best_enhanced(codec, x: torch.Tensor, target: Target, analysed, i: int, depth: int,
                  kind: str, stages, native, offsets) -> tuple[object, Choice]:
    """Patch i's best file among full-depth files with a layer of max error on LADDER: bisect
    for the largest e still reaching the target (PSNR falls, bytes fall, as e grows)."""
    size, bands = codec.model.image_size, len(codec.bands)
    indices, means = analysed[0][i, :depth], analysed[1][i]
    codes = codec.fit_band_filter(kind, x[None], indices[None], means[None])[0]
    values = codec.base_values(indices, means, kind, codes)
    tried: dict[int, tuple[object, Choice]] = {}

    def attempt(k: int) -> tuple[object, Choice]:
        if k not in tried:
            file = codec.enhance(indices, means, kind, codes, stages, native, LADDER[k], values)
            quality = psnr(x[None], torch.from_numpy(file.pixels[None]), offset=offsets).item()
            tried[k] = (file, Choice(len(file.data), quality,
                                     f"depth{depth} {kind} max_error{LADDER[k]}"))
        return tried[k]

    # a PSNR target holds for e up to some point, a rate target from some point on
    holds = (lambda k: target.reached(attempt(k)[1], bands, size))
    lo, hi = 0, len(LADDER) - 1
    while lo < hi:
        if target.psnr is not None:  # the largest e that still reaches the PSNR
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if holds(mid) else (lo, mid - 1)
        else:  # the smallest e (best quality) within the rate
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if holds(mid) else (mid + 1, hi)
    attempt(lo)
    return min(tried.values(), key=lambda fc: target.key(fc[1], bands, size))
