"""ResidualVQ (SoundStream-style): n_q VectorQuantizers on successive residuals, with dropout.

Level 0 sees the encoder output; level l > 0 sees the detached residual left by levels < l, so
the gradient reaching the input is exactly the straight-through identity (not n_q times it) and
deeper levels train only their own codebooks. With quantizer dropout each training example uses
a random number of levels 1..n_q, so one model serves every bitrate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vqae.config import QuantizerConfig
from vqae.models.quantizer import QuantizerOutput, code_stats, flatten, fp32, unflatten
from vqae.models.vq import VectorQuantizer, vq_kwargs


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, levels: int = 8, shared_codebook: bool = False,
                 dropout: bool = False, **vq_kwargs):
        super().__init__()
        if levels < 1:
            raise ValueError(f"ResidualVQ needs levels >= 1, got {levels}; set quantizer.levels")
        first = VectorQuantizer(dim, **vq_kwargs)
        rest = [first if shared_codebook else VectorQuantizer(dim, **vq_kwargs)
                for _ in range(levels - 1)]
        self.layers = nn.ModuleList([first, *rest])
        self.num_levels, self.codebook_size, self.dropout = levels, first.codebook_size, dropout

    @classmethod
    def from_config(cls, cfg: QuantizerConfig, dim: int) -> ResidualVQ:
        return cls(dim, cfg.levels, cfg.shared_codebook, cfg.dropout, **vq_kwargs(cfg))

    def _n_q(self, n_q: int | None) -> int:
        n_q = self.num_levels if n_q is None else n_q
        if not 1 <= n_q <= self.num_levels:
            raise ValueError(f"n_q={n_q} outside 1..{self.num_levels}; raise quantizer.levels")
        return n_q

    def levels_per_example(self, batch: int, n_q: int, device: torch.device) -> Tensor | None:
        """(B,) levels each example uses under quantizer dropout, or None for all n_q."""
        if not (self.training and self.dropout and n_q > 1):
            return None
        return torch.randint(1, n_q + 1, (batch,), device=device)

    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:
        """z (B, D, *S) -> quantized (B, D, *S), indices (B, n_q, *S) with -1 for dropped levels."""
        n_q = self._n_q(n_q)
        keep = self.levels_per_example(z.shape[0], n_q, z.device)
        if keep is not None:  # rows of one example are contiguous in flatten's (B, *S) order
            keep = keep.repeat_interleave(z[0, 0].numel())  # (N,)
        with fp32(z.device):
            x = flatten(z)  # (N, D)
            total, idx, losses, counts = self.layers[0].quantize_rows(x)
            residual, indices, stats = (x - total).detach(), [idx], [code_stats(counts)]
            for level in range(1, n_q):
                rows = None if keep is None else (keep > level).nonzero().squeeze(1)  # (N_l,)
                out, idx, parts, counts = self.layers[level].quantize_rows(
                    residual if rows is None else residual[rows])
                if rows is not None:  # scatter the subset back; skipped rows add 0 and say -1
                    out = torch.zeros_like(residual).index_copy(0, rows, out)
                    idx = idx.new_full(residual.shape[:1], -1).index_copy(0, rows, idx)
                total, residual = total + out, residual - out.detach()
                indices.append(idx)
                stats.append(code_stats(counts))
                losses = {name: losses[name] + parts[name] for name in losses}
        return QuantizerOutput(
            quantized=unflatten(total, z.shape).to(z.dtype),
            indices=unflatten(torch.stack(indices, dim=1), z.shape),  # (B, n_q, *S)
            losses=losses,
            perplexity=torch.stack([p for p, _ in stats]),
            usage=torch.stack([u for _, u in stats]),
        )

    @torch.no_grad()
    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """(B, D, *S) -> indices (B, n_q, *S)."""
        indices = []
        with fp32(z.device):
            residual = flatten(z)
            for layer in self.layers[: self._n_q(n_q)]:
                idx = layer.encode_rows(residual)
                residual = residual - layer.decode_rows(idx)
                indices.append(idx)
        return unflatten(torch.stack(indices, dim=1), z.shape)

    def decode(self, indices: Tensor) -> Tensor:
        """indices (B, levels, *S) -> sum of the levels' code values (B, D, *S); -1 adds 0."""
        flat = indices.movedim(1, -1).reshape(-1, indices.shape[1])  # (N, levels)
        total = None
        with fp32(indices.device):
            for level in range(self._n_q(flat.shape[1])):
                idx = flat[:, level]
                values = self.layers[level].decode_rows(idx.clamp_min(0))
                if level > 0:  # level 0 is never dropped
                    values = values * (idx >= 0).to(values.dtype)[:, None]
                total = values if total is None else total + values
        return unflatten(total, indices.shape)

    def dead_codes(self) -> Tensor:
        """(levels,) dead codes per level by EMA usage."""
        return torch.cat([layer.dead_codes() for layer in self.layers])
