"""ResidualVQ (SoundStream-style): `depth` VectorQuantizers on successive residuals, with dropout.

Stage 0 sees the encoder output; stage s > 0 sees the detached residual left by stages < s, so
the gradient reaching the input is exactly the straight-through identity (not depth times it)
and deeper stages train only their own codebooks. With quantizer dropout each training example
uses a random number of stages 1..depth, so one model serves every bitrate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqae.models.quantizer import (
    Quantizer,
    QuantizerOutput,
    flatten,
    fp32,
    unflatten,
    unflatten_channel_first,
    unflatten_like,
)
from vqae.models.vq import VectorQuantizer


class ResidualVQ(Quantizer):
    def __init__(self, dim: int, *, depth: int = 8, shared_codebook: bool = False,
                 dropout: bool = False, **vq_kwargs):
        super().__init__()
        if depth < 1:
            raise ValueError(f"ResidualVQ needs depth >= 1, got {depth}")
        first = VectorQuantizer(dim, **vq_kwargs)
        rest = [first if shared_codebook else VectorQuantizer(dim, **vq_kwargs)
                for _ in range(depth - 1)]
        self.layers = nn.ModuleList([first, *rest])
        self.depth, self.codebook_size, self.dropout = depth, first.codebook_size, dropout

    def stages_per_example(self, batch: int, depth: int, device: torch.device) -> Tensor | None:
        """(B,) stages each example uses under quantizer dropout, or None for all `depth`."""
        if not (self.training and self.dropout and depth > 1):
            return None
        return torch.randint(1, depth + 1, (batch,), device=device)

    def forward(self, z: Tensor, depth: int | None = None) -> QuantizerOutput:
        """z (B, D, *S) -> quantized (B, D, *S), indices (B, depth, *S), -1 for dropped stages."""
        depth = self.check_depth(depth)
        keep = self.stages_per_example(z.shape[0], depth, z.device)
        if keep is not None:  # rows of one example are contiguous in flatten's (B, *S) order
            keep = keep[:, None].expand(-1, z[0, 0].numel()).reshape(-1)  # (N,)
        with fp32(z.device):
            x = flatten(z)  # (N, D)
            total, idx, losses, counts = self.layers[0].quantize_rows(x)
            residual, indices, histograms = (x - total).detach(), [idx], [counts]
            for stage in range(1, depth):
                # a mask, not the subset of kept rows: skipped rows add 0 and say -1
                out, idx, parts, counts = self.layers[stage].quantize_rows(
                    residual, None if keep is None else keep > stage)
                total, residual = total + out, residual - out.detach()
                indices.append(idx)
                histograms.append(counts)
                losses = {name: losses[name] + parts[name] for name in losses}
        return QuantizerOutput(
            quantized=unflatten_like(total, z),
            indices=unflatten(torch.stack(indices, dim=1), z.shape),  # (B, depth, *S)
            losses=losses,
            counts=torch.stack(histograms),  # (depth, K)
        )

    @torch.no_grad()
    def encode(self, z: Tensor, depth: int | None = None) -> Tensor:
        """(B, D, *S) -> indices (B, depth, *S)."""
        indices = []
        with fp32(z.device):
            residual = flatten(z)
            for layer in self.layers[: self.check_depth(depth)]:
                idx = layer.encode_rows(residual)
                residual = residual - layer.decode_rows(idx)
                indices.append(idx)
        return unflatten(torch.stack(indices, dim=1), z.shape)

    def decode(self, indices: Tensor) -> Tensor:
        """indices (B, depth, *S) -> sum of the stages' code values (B, D, *S); -1 adds 0."""
        flat = indices.movedim(1, -1).reshape(-1, indices.shape[1])  # (N, depth)
        total = None
        with fp32(indices.device):
            for stage in range(self.check_depth(flat.shape[1])):
                idx = flat[:, stage]
                values = self.layers[stage].decode_rows(idx.clamp_min(0))
                if stage > 0:  # stage 0 is never dropped
                    values = values * (idx >= 0).to(values.dtype)[:, None]
                total = values if total is None else total + values
        return unflatten_channel_first(total, indices.shape)

    def rare_codes(self) -> Tensor:
        """(depth,) codes per stage marked for revival by their EMA usage."""
        return torch.cat([layer.rare_codes() for layer in self.layers])
