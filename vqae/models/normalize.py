"""Normalization inside the model: digital numbers <-> zero-mean, unit-variance bands.

The statistics and the per-band offset are buffers, so a checkpoint (and the codec's model
fingerprint) carries them and needs no side file: `Normalize(x) = (x - offset - mean) / std`,
and `inverse` returns digital numbers with the offset added back, as the data stores them.

With `per_patch` (config `model.patch_means`), each patch is centred on its own band means
instead: `(x - patch_means) / std`, the patch's band means in digital numbers rounded to
integers, offset included: side information every `.vqz` header stores (PATCH_MEAN_BITS per
band), so brightness and the +1000 offset of other sources are never learnt or quantized.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqae.data.bands import UINT16_MAX


def _column(values: Sequence[float] | None, size: int, fill: float) -> Tensor:
    data = [fill] * size if values is None else list(values)
    if len(data) != size:
        raise ValueError(f"expected {size} per-band values, got {len(data)}")
    return torch.tensor(data, dtype=torch.float32).view(1, size, 1, 1)  # (1, C, 1, 1)


class Normalize(nn.Module):
    def __init__(self, bands: Sequence[str], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, offset: Sequence[float] | None = None,
                 per_patch: bool = False):
        super().__init__()
        self.bands, self.per_patch = list(bands), per_patch
        n = len(self.bands)
        self.register_buffer("mean", _column(mean, n, 0.0))
        self.register_buffer("std", _column(std, n, 1.0))
        self.register_buffer("offset", _column(offset, n, 0.0))
        if (self.std <= 0).any():
            raise ValueError(f"normalization std must be positive for bands {self.bands}")

    def patch_means(self, x: Tensor) -> Tensor | None:
        """(B, C, H, W) digital numbers -> (B, C) integer band means in [0, 65535] (fp32), the
        side information of a per-patch model; None for a model with global statistics."""
        if not self.per_patch:
            return None
        return x.float().mean(dim=(-2, -1)).round().clamp(0, UINT16_MAX)

    def forward(self, x: Tensor, patch_means: Tensor | None = None) -> Tensor:
        """(B, C, H, W) digital numbers -> normalized bands (fp32); a per-patch model takes the
        patch's `patch_means` (B, C)."""
        if not self.per_patch:
            return (x.float() - self.offset - self.mean) / self.std
        return (x.float() - self._patch(patch_means)) / self.std

    def inverse(self, x: Tensor, patch_means: Tensor | None = None) -> Tensor:
        """Normalized bands -> digital numbers as stored (offset included), fp32."""
        if not self.per_patch:
            return x.float() * self.std + self.mean + self.offset
        return x.float() * self.std + self._patch(patch_means)

    @staticmethod
    def _patch(patch_means: Tensor | None) -> Tensor:
        if patch_means is None:
            raise ValueError("this model centres each patch on its band means: pass the "
                             "patch's patch_means (its .vqz header stores them)")
        return patch_means.float()[..., None, None]  # (B, C, 1, 1)

    def offsets(self) -> Tensor:
        """(C,) offset per band, for metrics that compare offset-free values."""
        return self.offset.view(-1)

    def extra_repr(self) -> str:
        return f"bands={self.bands}, per_patch={self.per_patch}"
