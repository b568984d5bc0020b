"""Normalization inside the model: digital numbers <-> zero-mean, unit-variance bands.

The statistics and the per-band offset are buffers, so a checkpoint (and the codec's model
fingerprint) carries them and needs no side file: `Normalize(x) = (x - offset - mean) / std`,
and `inverse` returns digital numbers with the offset added back, as the data stores them.

With `per_patch` (config `model.patch_means`), each patch is centred on its own band means
instead: `(x - patch_means) / std`, the patch's band means in digital numbers rounded to
integers, offset included: side information every `.vqz` header stores (PATCH_MEAN_BITS per
band), so brightness and the +1000 offset of other sources are never learnt or quantized.

With `patch_scales` as well (config `model.patch_scales`), contrast is side information too:
each band is divided by the global std times 2**(code / SCALE_STEPS), the code (one per band,
SCALE_CODES) measuring the patch's own band std. The side information is then the band means
followed by the scale codes, (B, 2C): clouds and snow with ten times the training scenes'
contrast reach the encoder at the contrast it learnt.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from vqae.data.bands import UINT16_MAX

SCALE_STEPS = 16  # scale codes per octave: steps of 4.4%
SCALE_BITS = 8  # a scale code is stored as an int8
SCALE_CODES = (-32, 64)  # a patch's band scale lies in [std / 4, std * 16]: a flat patch's
# noise is not blown up past 4x, clouds and snow reach 16x the data set's contrast


def wide(t: Tensor) -> Tensor:
    """fp32, or float64 as it is: the enhancement layer's base decodes in float64."""
    return t if t.dtype == torch.float64 else t.float()


def _column(values: Sequence[float] | None, size: int, fill: float) -> Tensor:
    data = [fill] * size if values is None else list(values)
    if len(data) != size:
        raise ValueError(f"expected {size} per-band values, got {len(data)}")
    return torch.tensor(data, dtype=torch.float32).view(1, size, 1, 1)  # (1, C, 1, 1)


class Normalize(nn.Module):
    def __init__(self, bands: Sequence[str], mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, offset: Sequence[float] | None = None,
                 per_patch: bool = False, patch_scales: bool = False):
        super().__init__()
        if patch_scales and not per_patch:
            raise ValueError("patch scales need per-patch means (model.patch_means)")
        self.bands, self.per_patch, self.patch_scales = list(bands), per_patch, patch_scales
        n = len(self.bands)
        self.register_buffer("mean", _column(mean, n, 0.0))
        self.register_buffer("std", _column(std, n, 1.0))
        self.register_buffer("offset", _column(offset, n, 0.0))
        if (self.std <= 0).any():
            raise ValueError(f"normalization std must be positive for bands {self.bands}")

    def patch_means(self, x: Tensor) -> Tensor | None:
        """(B, C, H, W) digital numbers -> (B, C) integer band means in [0, 65535] (fp32), the
        side information of a per-patch model, followed by (B, C) scale codes with
        `patch_scales`; None for a model with global statistics."""
        if not self.per_patch:
            return None
        means = wide(x).mean(dim=(-2, -1)).round().clamp(0, UINT16_MAX)  # (B, C)
        if not self.patch_scales:
            return means
        ratio = wide(x).std(dim=(-2, -1), unbiased=False) / self.std.view(1, -1)  # (B, C)
        codes = (SCALE_STEPS * torch.log2(ratio)).round().clamp(*SCALE_CODES)  # 0 std: low end
        return torch.cat([means, codes], dim=1)  # (B, 2C)

    def forward(self, x: Tensor, patch_means: Tensor | None = None) -> Tensor:
        """(B, C, H, W) digital numbers -> normalized bands (fp32); a per-patch model takes the
        patch's `patch_means` (B, C), or (B, 2C) with its scale codes."""
        if not self.per_patch:
            return (wide(x) - self.offset - self.mean) / self.std
        centre, scale = self._patch(patch_means)
        return (wide(x) - centre) / scale

    def inverse(self, x: Tensor, patch_means: Tensor | None = None) -> Tensor:
        """Normalized bands -> digital numbers as stored (offset included), fp32."""
        if not self.per_patch:
            return wide(x) * self.std + self.mean + self.offset
        centre, scale = self._patch(patch_means)
        return wide(x) * scale + centre

    def _patch(self, patch_means: Tensor | None) -> tuple[Tensor, Tensor]:
        """The side information -> (centre, scale), each broadcastable to (B, C, H, W)."""
        if patch_means is None:
            raise ValueError("this model centres each patch on its band means: pass the "
                             "patch's patch_means (its .vqz header stores them)")
        side = wide(patch_means)[..., None, None]  # (B, C or 2C, 1, 1)
        n = len(self.bands)
        if not self.patch_scales:
            return side, self.std
        return side[:, :n], self.std * torch.exp2(side[:, n:] / SCALE_STEPS)

    def offsets(self) -> Tensor:
        """(C,) offset per band, for metrics that compare offset-free values."""
        return self.offset.view(-1)

    def extra_repr(self) -> str:
        return (f"bands={self.bands}, per_patch={self.per_patch}, "
                f"patch_scales={self.patch_scales}")
