"""The quantizer contract (`Quantizer`, `QuantizerOutput`) and the row layout helpers.

Quantizers take channel-first latents (B, D, *spatial) and work internally on rows (N, D) in
fp32, whatever autocast is active: distances, EMA sums and rounding lose too much in bf16/fp16.
They take keyword arguments and know nothing of the config (`vqae.models.build` maps it).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (B, D, *S) code values; gradient reaches the input by straight-through
    indices: Tensor  # (B, depth, *S) long; -1 where quantizer dropout skipped a stage
    losses: dict[str, Tensor] = field(default_factory=dict)  # scalars, already weighted
    counts: Tensor | None = None  # (depth, K) how often this batch used each code per stage


class Quantizer(nn.Module, ABC):
    """What the autoencoder and the codec rely on.

    `depth` index maps per position (1 except for residual VQ), each over `codebook_size`
    values; `encode` and `decode` are inverse up to quantization; `depth=None` means all.
    """

    depth: int
    codebook_size: int

    @abstractmethod
    def forward(self, z: Tensor, depth: int | None = None) -> QuantizerOutput:
        """z (B, D, *S) -> quantized (B, D, *S) with straight-through gradient, indices, losses."""

    @abstractmethod
    def encode(self, z: Tensor, depth: int | None = None) -> Tensor:
        """(B, D, *S) -> indices (B, depth, *S)."""

    @abstractmethod
    def decode(self, indices: Tensor) -> Tensor:
        """indices (B, depth, *S) -> code values (B, D, *S) in fp32."""

    def rare_codes(self) -> Tensor:
        """(depth,) codes per stage whose running usage is below the revival threshold."""
        return torch.zeros(self.depth, dtype=torch.long)

    def check_depth(self, depth: int | None) -> int:
        depth = self.depth if depth is None else depth
        if not 1 <= depth <= self.depth:
            raise ValueError(f"depth {depth} outside 1..{self.depth}")
        return depth


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


def mse(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared error that is 0 (not NaN) on an empty batch, e.g. a stage nobody used."""
    if a.numel() == 0:
        return a.sum() * 0.0
    return torch.nn.functional.mse_loss(a, b)
