"""Convolutional building blocks: GroupNorm residual blocks, stride-2 down, nearest-x2 up."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqae.models.quantizer import fp32

ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} unknown; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the group count reduced to a divisor of `channels`."""
    return GroupNorm(math.gcd(channels, max(groups, 1)), channels)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that leaves a channels-last input channels-last and in its own dtype.

    PyTorch's CUDA kernel makes a channels-last input contiguous, and autocast runs it in fp32:
    a cast and a layout copy in, then the next convolution casts and copies back (with the
    backward's mirror images, 45% of GPU time in aten::copy_ in an H100 profile). Here the
    statistics are fp32 reductions read straight from the input and the affine map is one
    elementwise op each way. The CPU kernel keeps channels-last by itself, and inductor fuses
    the native op in any layout, so CPU tensors, channel-first ones and compiled code keep it.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not x.is_cuda or torch.compiler.is_compiling() or not is_channels_last(x):
            return super().forward(x)
        return ChannelsLastGroupNorm.apply(x, self.num_groups, self.weight, self.bias, self.eps)


def is_channels_last(x: Tensor) -> bool:
    """Channels-last in memory and not also plain contiguous (as 1 x 1 maps are)."""
    return (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous())


class ChannelsLastGroupNorm(torch.autograd.Function):
    """Affine group norm of (B, C, H, W) in x's layout and dtype, statistics in fp32 (or fp64).

    Forward: y = x * scale + shift with per-(b, c) scale = w / std and shift = b - mean * scale;
    var = E[x^2] - mean^2 from two reductions that read x once each and make no (x - mean)
    temporary (in fp32, exact enough unless a group's mean is hundreds of times its spread).
    Backward (per group, n elements, r = 1 / std): dx = dy * r w + x * a + c with
    a = -r^2 S2 / n, c = -a mean - r S1 / n, S1 = sum(w dy), S2 = sum(w dy (x - mean) r).
    """

    @staticmethod
    def forward(ctx, x: Tensor, groups: int, weight: Tensor, bias: Tensor, eps: float) -> Tensor:
        with fp32(x.device):  # autocast off: it would cast x to fp32 for the reductions
            g = x.unflatten(1, (groups, -1))  # (B, G, C/G, H, W) view
            acc, n = torch.promote_types(x.dtype, torch.float32), g[0, 0].numel()
            mean = g.sum((2, 3, 4), dtype=acc) / n  # (B, G)
            power = torch.linalg.vector_norm(g, 2, (2, 3, 4), dtype=acc).square() / n
            rstd = torch.rsqrt((power - mean.square()).clamp_min(0) + eps)
            scale = per_channel(rstd, x.shape[1]) * weight  # (B, C)
            shift = bias - per_channel(mean, x.shape[1]) * scale
            y = torch.empty_like(x)  # x's memory format and dtype; computed in fp32
            torch.addcmul(shift[..., None, None], x, scale[..., None, None], out=y)
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, weight, mean, rstd = ctx.saved_tensors
        (batch, c), groups = x.shape[:2], mean.shape[1]
        with fp32(x.device):
            db = dy.sum((2, 3), dtype=mean.dtype)  # (B, C) sum of dy
            ds = (dy * x).sum((2, 3), dtype=mean.dtype)  # (B, C) sum of dy * x
            centred = (ds - per_channel(mean, c) * db) * per_channel(rstd, c)  # sum dy * xhat
            w = weight.to(mean.dtype)
            n = x[0].numel() // groups
            s1 = (db * w).view(batch, groups, -1).sum(2)  # (B, G)
            s2 = (centred * w).view(batch, groups, -1).sum(2)
            a = -rstd.square() * s2 / n
            const = -a * mean - rstd * s1 / n
            partial = torch.addcmul(per_channel(const, c)[..., None, None], x,
                                    per_channel(a, c)[..., None, None])
            dx = torch.empty_like(x)
            k = (per_channel(rstd, c) * w)[..., None, None]
            torch.addcmul(partial, dy, k, out=dx)
        return dx, None, centred.sum(0).to(weight.dtype), db.sum(0).to(weight.dtype), None


def per_channel(t: Tensor, channels: int) -> Tensor:
    """(B, G) per-group values -> (B, C), each repeated over its group's C/G channels."""
    return t[:, :, None].expand(-1, -1, channels // t.shape[1]).reshape(t.shape[0], channels)


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
