"""The model's networks over windows of a scene, normalized by smooth side maps.

`Windows` wraps a model: `normalize` and `denormalize` apply a window's side maps (or the
model's global statistics for a model without per-patch side information), `encode` returns a
window's latents' indices for its tile, and `decode` a window's digital numbers.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from vqae.models.normalize import SCALE_STEPS


@contextmanager
def tile_statistics(model: nn.Module, size: tuple[int, int], inner: tuple[int, int, int, int]):
    """Every GroupNorm of `model` normalizes with the statistics of the tile alone: a window of
    `size` pixels holds the tile at `inner` (top, left, height, width); a layer at 1/k of the
    resolution takes the tile's 1/k crop. The networks learnt their statistics on one patch:
    a tile keeps exactly those, and the halo only adds what the convolutions see."""
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]

    def forward_of(m: nn.GroupNorm):
        def forward(x: torch.Tensor) -> torch.Tensor:
            k = size[0] // x.shape[-2]  # this layer's downsampling
            top, left, h, w = (v // k for v in inner)
            g = x.float().unflatten(1, (m.num_groups, -1))  # (B, G, C/G, H, W)
            crop = g[..., top : top + h, left : left + w]
            mean = crop.mean(dim=(2, 3, 4), keepdim=True)
            var = crop.var(dim=(2, 3, 4), unbiased=False, keepdim=True)
            y = ((g - mean) * torch.rsqrt(var + m.eps)).flatten(1, 2)
            return (y * m.weight[:, None, None] + m.bias[:, None, None]).to(x.dtype)
        return forward

    for m in norms:
        m.forward = forward_of(m)
    try:
        yield
    finally:
        for m in norms:
            del m.forward


class Windows:
    def __init__(self, model: torch.nn.Module):
        self.model = model
        self.norm = model.normalize
        self.bands = len(self.norm.bands)
        self.factor = model.encoder.factor
        self.device = next(model.parameters()).device

    def _centre_scale(self, maps: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Side maps (M, H, W) -> centre and scale (1, C, H, W) on the model's device."""
        n = self.bands
        if not self.norm.per_patch:
            return self.norm.offset + self.norm.mean, self.norm.std
        maps_t = torch.as_tensor(np.ascontiguousarray(maps), dtype=torch.float32,
                                 device=self.device)[None]
        centre = maps_t[:, :n]
        if not self.norm.patch_scales:
            return centre, self.norm.std
        return centre, self.norm.std * torch.exp2(maps_t[:, n:] / SCALE_STEPS)

    @torch.no_grad()
    def encode(self, x: np.ndarray, maps: np.ndarray | None, inner: tuple[int, int, int, int],
               depth: int) -> np.ndarray:
        """A window's digital numbers (C, H, W) and side maps -> the (depth, h, w) indices of
        its tile, `inner` = (top, left, height, width) of the tile in the window's pixels."""
        centre, scale = self._centre_scale(maps)
        xt = torch.as_tensor(x, dtype=torch.float32, device=self.device)[None]
        with tile_statistics(self.model.encoder, x.shape[-2:], inner):
            z = self.model.encoder((xt - centre) / scale)  # (1, D, H/f, W/f)
        top, left, h, w = (v // self.factor for v in inner)
        z = z[..., top : top + h, left : left + w]
        return self.model.quantizer.encode(z, depth)[0].cpu().numpy()

    @torch.no_grad()
    def decode(self, indices: np.ndarray, maps: np.ndarray | None,
               inner: tuple[int, int, int, int]) -> np.ndarray:
        """A window's (n, h, w) indices and side maps (M, H, W) -> (C, H, W) float32 digital
        numbers, H = h * factor; `inner`: the tile in the window's pixels."""
        idx = torch.as_tensor(np.ascontiguousarray(indices), dtype=torch.int64,
                              device=self.device)[None]
        size = (indices.shape[1] * self.factor, indices.shape[2] * self.factor)
        centre, scale = self._centre_scale(maps)
        with tile_statistics(self.model.decoder, size, inner):
            y = self.model.decoder(self.model.quantizer.decode(idx), size)  # (1, C, H, W)
        return (y.float() * scale + centre)[0].cpu().numpy()
