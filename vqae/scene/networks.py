"""The model's networks over windows of a scene, normalized by smooth side maps.

`Windows` wraps a model: `normalize` and `denormalize` apply a window's side maps (or the
model's global statistics for a model without per-patch side information), `encode` returns a
window's latents' indices for its tile, and `decode` a window's digital numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from vqae.models.normalize import SCALE_STEPS


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
        maps_t = torch.as_tensor(maps, dtype=torch.float32, device=self.device)[None]
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
        z = self.model.encoder((xt - centre) / scale)  # (1, D, H/f, W/f)
        top, left, h, w = (v // self.factor for v in inner)
        z = z[..., top : top + h, left : left + w]
        return self.model.quantizer.encode(z, depth)[0].cpu().numpy()

    @torch.no_grad()
    def decode(self, indices: np.ndarray, maps: np.ndarray | None) -> np.ndarray:
        """A window's (n, h, w) indices and side maps (M, H, W) -> (C, H, W) float32 digital
        numbers, H = h * factor."""
        idx = torch.as_tensor(np.ascontiguousarray(indices), dtype=torch.int64,
                              device=self.device)[None]
        size = (indices.shape[1] * self.factor, indices.shape[2] * self.factor)
        centre, scale = self._centre_scale(maps)
        y = self.model.decoder(self.model.quantizer.decode(idx), size)  # (1, C, H, W)
        return (y.float() * scale + centre)[0].cpu().numpy()
