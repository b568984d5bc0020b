"""Convolutional building blocks: GroupNorm residual blocks, stride-2 down, nearest-x2 up."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} unknown; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the group count reduced to a divisor of `channels`."""
    return nn.GroupNorm(math.gcd(channels, max(groups, 1)), channels)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, groups: int, act: str):
        super().__init__()
        self.body = nn.Sequential(
            norm(c_in, groups), activation(act), nn.Conv2d(c_in, c_out, 3, padding=1),
            norm(c_out, groups), activation(act), nn.Conv2d(c_out, c_out, 3, padding=1),
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.body(x)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)  # (B, C, H/2, W/2) for even H, W


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # no checkerboard


def stage(c_in: int, c_out: int, blocks: int, groups: int, act: str) -> nn.Sequential:
    """`blocks` residual blocks, the first changing c_in -> c_out."""
    layers = [ResBlock(c_in if i == 0 else c_out, c_out, groups, act) for i in range(blocks)]
    return nn.Sequential(*layers) if layers else nn.Sequential(nn.Conv2d(c_in, c_out, 1))
