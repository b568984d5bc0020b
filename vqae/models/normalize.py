"""Normalization inside the model: digital numbers <-> zero-mean, unit-variance bands.

The statistics and the per-band offset are buffers, so a checkpoint (and the codec's model
fingerprint) carries them and needs no side file: `Normalize(x) = (x - offset - mean) / std`,
and `inverse` returns digital numbers with the offset added back, as the data stores them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def _column(values: Sequence[float] | None, size: int, fill: float) -> Tensor:
    data = [fill] * size if values is None else list(values)
    if len(data) != size:
        raise ValueError(f"expected {size} per-band values, got {len(data)}")
    return torch.tensor(data, dtype=torch.float32).view(1, size, 1, 1)  # (1, C, 1, 1)


class Normalize(nn.Module):
    def __init__(self, bands: Sequence[str], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, offset: Sequence[float] | None = None):
        super().__init__()
        self.bands = list(bands)
        n = len(self.bands)
        self.register_buffer("mean", _column(mean, n, 0.0))
        self.register_buffer("std", _column(std, n, 1.0))
        self.register_buffer("offset", _column(offset, n, 0.0))
        if (self.std <= 0).any():
            raise ValueError(f"normalization std must be positive for bands {self.bands}")

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) digital numbers -> normalized bands (fp32)."""
        return (x.float() - self.offset - self.mean) / self.std

    def inverse(self, x: Tensor) -> Tensor:
        """Normalized bands -> digital numbers as stored (offset included), fp32."""
        return x.float() * self.std + self.mean + self.offset

    def offsets(self) -> Tensor:
        """(C,) offset per band, for metrics that compare offset-free values."""
        return self.offset.view(-1)

    def extra_repr(self) -> str:
        return f"bands={self.bands}"
