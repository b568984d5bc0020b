"""Training augmentations, drawn from torch's CPU RNG so that a resumed run replays them.

- `augment`: one of the 8 flips/rotations of the square per patch.
- `stretch_contrast`: each patch's bands stretched about their patch means by one factor per
  patch, log-uniform in [low, high]: a model trained on calm scenes meets clouds and snow with
  ten times their contrast (a wider training range, vqae issue 18).
"""

from __future__ import annotations

import math

import torch

from vqae.data.bands import UINT16_MAX


def dihedral_maps(side: int, device: torch.device) -> torch.Tensor:
    """(8, side * side): for transform r (rot90 by r % 4, then a flip of the width when r >= 4),
    the flat source pixel of each output pixel."""
    grid = torch.arange(side * side, device=device).view(side, side)
    rotations = [torch.rot90(grid, r, dims=(0, 1)) for r in range(4)]
    return torch.stack(rotations + [g.flip(1) for g in rotations]).flatten(1)


def augment(x: torch.Tensor) -> torch.Tensor:
    """Each patch gets one of the 8 flips/rotations of the square, drawn from torch's CPU RNG
    (a resume replays the draws), applied to the whole batch in one gather."""
    b, c, h, w = x.shape
    assert h == w, "rotations need square patches"
    k = torch.randint(0, 8, (b,))  # (B,) transform of each patch
    if x.is_cuda:
        k = k.pin_memory()  # an asynchronous copy: the host keeps queueing work ahead of the GPU
    idx = dihedral_maps(h, x.device)[k.to(x.device, non_blocking=True)]  # (B, H*W)
    return x.flatten(2).gather(2, idx[:, None].expand(b, c, h * w)).view_as(x)


def stretch_contrast(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """(B, C, H, W) digital numbers -> each patch's deviations from its band means times a
    factor log-uniform in [low, high] (one per patch), clamped to uint16 as stored data is."""
    u = torch.rand(x.shape[0])  # (B,) from the CPU RNG: a resume replays it
    factor = torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    factor = factor.to(x.device, non_blocking=True).view(-1, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    return (mean + (x - mean) * factor).clamp(0, UINT16_MAX)
