"""FSQ (finite scalar quantization, Mentzer et al. 2023): a codebook-free baseline.

Each of len(levels) projected channels is squashed by tanh into L_i bins and rounded with a
straight-through estimator; the implicit codebook is the grid of prod(L_i) points.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vqae.models.quantizer import (
    Quantizer,
    QuantizerOutput,
    code_counts,
    flatten,
    fp32,
    unflatten,
    unflatten_channel_first,
    unflatten_like,
)


class FSQ(Quantizer):
    depth = 1

    def __init__(self, dim: int, *, levels: list[int] | tuple[int, ...] = (8, 5, 5, 5)):
        super().__init__()
        if not levels or min(levels) < 2:
            raise ValueError(f"FSQ levels must each be >= 2, got {list(levels)}")
        self.dim, self.codebook_size = dim, math.prod(levels)
        inner = len(levels)
        self.project_in = nn.Linear(dim, inner) if dim != inner else nn.Identity()
        self.project_out = nn.Linear(inner, dim) if dim != inner else nn.Identity()
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("levels", lv, persistent=False)
        self.register_buffer("half_width", torch.floor(lv / 2), persistent=False)
        basis = torch.cumprod(torch.tensor([1, *levels[:-1]]), dim=0)
        self.register_buffer("basis", basis, persistent=False)  # mixed-radix digit weights

    def bound(self, h: Tensor) -> Tensor:
        """Squash to (-L/2, L/2) so rounding gives exactly L values (offset by 1/2 for even L)."""
        half = (self.levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(h + shift) * half - offset

    def forward(self, z: Tensor, depth: int | None = None) -> QuantizerOutput:
        """z (B, D, *S) -> quantized (B, D, *S), indices (B, 1, *S)."""
        self.check_depth(depth)
        with fp32(z.device):
            bounded = self.bound(self.project_in(flatten(z)))  # (N, d)
            rounded = torch.round(bounded).detach()
            codes = (rounded + (bounded - bounded.detach())) / self.half_width  # value exact
            idx = self._to_index(rounded)
            out = self.project_out(codes)
        return QuantizerOutput(
            quantized=unflatten_like(out, z),
            indices=unflatten(idx[:, None], z.shape),
            losses={},
            counts=code_counts(idx, self.codebook_size)[None],
        )

    def _to_index(self, rounded: Tensor) -> Tensor:
        digits = (rounded + self.half_width).long()  # (N, d) in 0..L-1
        return (digits * self.basis).sum(dim=1)

    @torch.no_grad()
    def encode(self, z: Tensor, depth: int | None = None) -> Tensor:
        """(B, D, *S) -> indices (B, 1, *S)."""
        self.check_depth(depth)
        with fp32(z.device):
            idx = self._to_index(torch.round(self.bound(self.project_in(flatten(z)))))
        return unflatten(idx[:, None], z.shape)

    def decode(self, indices: Tensor) -> Tensor:
        """indices (B, 1, *S) -> code values (B, D, *S) in fp32."""
        flat = indices[:, 0].reshape(-1, 1)  # (N, 1)
        digits = (flat // self.basis) % self.levels.long()  # (N, d)
        with fp32(indices.device):
            codes = (digits.float() - self.half_width) / self.half_width
            rows = self.project_out(codes)
        return unflatten_channel_first(rows, indices.shape)
