"""What every quantizer returns, and the layout helpers they share.

Quantizers take channel-first latents (B, D, *spatial) and work internally on rows (N, D) in
fp32, whatever autocast is active: distances, EMA sums and rounding lose too much in bf16/fp16.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (B, D, *S) code values; gradient reaches the input by straight-through
    indices: Tensor  # (B, levels, *S) long; -1 where quantizer dropout skipped a level
    losses: dict[str, Tensor] = field(default_factory=dict)  # scalars, already weighted
    perplexity: Tensor | None = None  # (levels,) exp(entropy) of this batch's code histogram
    usage: Tensor | None = None  # (levels,) fraction of the K codes hit by this batch


def fp32(device: torch.device):
    """Context that turns autocast off so quantizer math runs in fp32."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def flatten(z: Tensor) -> Tensor:
    """(B, D, *S) -> (N, D) fp32 rows, N = B * prod(S)."""
    return z.movedim(1, -1).reshape(-1, z.shape[1]).float()


def unflatten(rows: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """(N, D) rows -> (B, D, *S) given the (B, any, *S) shape of the original tensor."""
    batch, spatial = shape[0], tuple(shape[2:])
    return rows.view(batch, *spatial, rows.shape[-1]).movedim(-1, 1)


def code_stats(counts: Tensor) -> tuple[Tensor, Tensor]:
    """Perplexity in [1, K] and usage fraction of one level's code histogram (K,)."""
    counts = counts.float()
    probs = counts / counts.sum().clamp_min(1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error that is 0 (not NaN) on an empty batch, e.g. a level nobody used."""
    if a.numel() == 0:
        return a.sum() * 0.0
    return torch.nn.functional.mse_loss(a, b)
