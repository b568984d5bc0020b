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

from vqae.config import check_depth


@dataclass
class QuantizerOutput:
    quantized: Tensor  # (B, D, *S) code values; gradient reaches the input by straight-through
    indices: Tensor  # (B, depth, *S) long; -1 where quantizer dropout skipped a stage
    losses: dict[str, Tensor] = field(default_factory=dict)  # scalars, already weighted
    counts: Tensor | None = None  # (depth, K) how often this batch used each code per stage


# ATen ops that make the host wait for the device: a value read back, or an output whose size
# depends on the data (torch.bincount reads its largest index on CUDA)
HOST_SYNC_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::nonzero", "aten::bincount")


class Quantizer(nn.Module, ABC):
    """What the autoencoder and the codec rely on.

    `depth` index maps per position (1 except for residual VQ), each over `codebook_size`
    values; `encode` and `decode` are inverse up to quantization; `depth=None` means all.
    A training forward calls none of HOST_SYNC_OPS once initialised (k-means may, once), so
    the host queues kernels ahead of a GPU instead of waiting for it at every step.
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
        return check_depth(depth, self.depth, error=ValueError)


def fp32(device: torch.device):
    """Context that turns autocast off so quantizer math runs in fp32."""
    if device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def flatten(z: Tensor) -> Tensor:
    """(B, D, *S) -> (N, D) fp32 rows, N = B * prod(S).

    A channels-last z already holds its rows contiguously: then this is a view (a dtype cast
    aside); a channel-first z is copied once.
    """
    return z.movedim(1, -1).reshape(-1, z.shape[1]).float()


def unflatten(rows: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """(N, D) rows -> (B, D, *S) given the (B, any, *S) shape of the original tensor: a view,
    channels-last in memory."""
    batch, spatial = shape[0], tuple(shape[2:])
    return rows.view(batch, *spatial, rows.shape[-1]).movedim(-1, 1)


def unflatten_channel_first(rows: Tensor, shape: torch.Size | tuple[int, ...]) -> Tensor:
    """`unflatten`, then channel-first in memory: what decode returns, as forward does for
    channel-first latents, so that a decoder computes the same numbers from either."""
    return unflatten(rows, shape).contiguous()


def unflatten_like(rows: Tensor, z: Tensor) -> Tensor:
    """(N, D) rows -> z's shape, dtype and memory format, so the decoder runs in the encoder's
    format: the free view for a channels-last z of the rows' dtype, else one copy that casts
    and lays out at once."""
    out = unflatten(rows, z.shape)
    if out.dtype == z.dtype and out.stride() == z.stride():
        return out
    return torch.empty_like(z).copy_(out)


def mse(a: Tensor, b: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over the rows (N, d) where `mask` (N,) is True (all without one);
    0, not NaN, when no row counts (a stage every example skipped)."""
    if mask is None:
        return torch.nn.functional.mse_loss(a, b) if a.numel() else a.sum() * 0.0
    per_row = (a - b).square().sum(dim=1)  # (N,)
    return (per_row * mask).sum() / (mask.sum() * a.shape[1]).clamp_min(1)


def code_counts(idx: Tensor, codebook_size: int, mask: Tensor | None = None) -> Tensor:
    """(N,) indices -> (K,) long histogram of the rows where `mask` (all without one).

    An index_add_ rather than torch.bincount, which reads the largest index back to the host
    (a device sync) on CUDA.
    """
    weight = torch.ones_like(idx) if mask is None else mask.long()
    return torch.zeros(codebook_size, dtype=torch.long, device=idx.device).index_add_(0, idx, weight)
