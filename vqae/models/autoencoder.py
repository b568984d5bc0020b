"""Autoencoder = encoder + quantizer + decoder, composed rather than inherited.

The encoder pads the input (reflect) to a multiple of the downsampling factor f, so 120 px with
f = 16 becomes 128 px and an 8 x 8 latent; the decoder crops its output back to the input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from vqae.errors import ConfigError
from vqae.models.blocks import Downsample, Upsample, activation, norm, stage

FACTORS = (2, 4, 8, 16)


@dataclass
class AutoencoderOutput:
    recon: Tensor  # (B, C, H, W) normalized reconstruction
    indices: Tensor  # (B, levels, h, w) long codes
    losses: dict[str, Tensor] = field(default_factory=dict)  # weighted quantizer losses
    perplexity: Tensor | None = None  # (levels,) batch estimate
    usage: Tensor | None = None  # (levels,) fraction of codes hit by this batch


def stage_widths(widths: list[int], factor: int) -> list[int]:
    """Channels per resolution: log2(f) + 1 stages, repeating the last width when f needs more."""
    if factor not in FACTORS:
        raise ConfigError(f"model.downsample {factor} unsupported; valid: {', '.join(map(str, FACTORS))}")
    if not widths:
        raise ConfigError("model.widths is empty; give channels per stage, e.g. [64, 128, 256]")
    n = int(math.log2(factor)) + 1
    return [widths[min(i, len(widths) - 1)] for i in range(n)]


def padding(size: int, factor: int) -> tuple[int, int]:
    """(before, after) pixels that make `size` a multiple of `factor`."""
    total = -size % factor
    return total // 2, total - total // 2


def tower(ws: list[int], blocks: int, groups: int, act: str, resample: type) -> list[nn.Module]:
    """One stage per width with a resampling layer (Downsample or Upsample) between stages."""
    layers: list[nn.Module] = []
    for i, w in enumerate(ws):
        layers.append(stage(ws[max(i - 1, 0)], w, blocks, groups, act))
        if i < len(ws) - 1:
            layers.append(resample(w))
    return layers


class Encoder(nn.Module):
    def __init__(self, in_bands: int, widths: list[int], factor: int, blocks: int,
                 latent_dim: int, groups: int, act: str):
        super().__init__()
        ws = stage_widths(widths, factor)
        self.factor = factor
        layers = [nn.Conv2d(in_bands, ws[0], 3, padding=1), *tower(ws, blocks, groups, act, Downsample)]
        layers += [norm(ws[-1], groups), activation(act), nn.Conv2d(ws[-1], latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        (top, bottom), (left, right) = padding(x.shape[-2], self.factor), padding(x.shape[-1], self.factor)
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom), mode="reflect")
        return self.net(x)  # (B, latent_dim, ceil(H/f), ceil(W/f))


class Decoder(nn.Module):
    def __init__(self, out_bands: int, widths: list[int], factor: int, blocks: int,
                 latent_dim: int, groups: int, act: str):
        super().__init__()
        ws = stage_widths(widths, factor)[::-1]
        self.factor = factor
        layers = [nn.Conv2d(latent_dim, ws[0], 3, padding=1), *tower(ws, blocks, groups, act, Upsample)]
        layers += [norm(ws[-1], groups), activation(act), nn.Conv2d(ws[-1], out_bands, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor, size: tuple[int, int]) -> Tensor:
        x = self.net(z)  # (B, C, h*f, w*f)
        (top, _), (left, _) = padding(size[0], self.factor), padding(size[1], self.factor)
        return x[..., top : top + size[0], left : left + size[1]]  # (B, C, *size)


class Autoencoder(nn.Module):
    def __init__(self, encoder: Encoder, quantizer: nn.Module, decoder: Decoder,
                 image_size: int = 120):
        super().__init__()
        self.encoder, self.quantizer, self.decoder = encoder, quantizer, decoder
        self.image_size = image_size

    def forward(self, x: Tensor, n_q: int | None = None) -> AutoencoderOutput:
        """x (B, C, H, W) normalized -> reconstruction (B, C, H, W), indices, loss parts."""
        q = self.quantizer(self.encoder(x), n_q)
        return AutoencoderOutput(
            recon=self.decoder(q.quantized, tuple(x.shape[-2:])),
            indices=q.indices,
            losses=q.losses,
            perplexity=q.perplexity,
            usage=q.usage,
        )

    def encode(self, x: Tensor, n_q: int | None = None) -> Tensor:
        """(B, C, H, W) -> indices (B, levels, h, w)."""
        return self.quantizer.encode(self.encoder(x), n_q)

    def decode(self, indices: Tensor) -> Tensor:
        """indices (B, levels, h, w) -> x_hat (B, C, image_size, image_size)."""
        size = (self.image_size, self.image_size)
        return self.decoder(self.quantizer.decode(indices), size)

    def latent_shape(self) -> tuple[int, int, int]:
        """(levels, h, w) of the index grid for an image_size input."""
        side = -(-self.image_size // self.encoder.factor)
        return self.quantizer.num_levels, side, side

    def summary(self) -> str:
        levels, h, w = self.latent_shape()
        bits = levels * h * w * math.log2(self.quantizer.codebook_size)
        lines = [f"Autoencoder: {count(self):,} parameters"]
        for name in ("encoder", "quantizer", "decoder"):
            module = getattr(self, name)
            lines.append(f"  {name:<9} {type(module).__name__:<16} {count(module):>12,}")
        lines.append(
            f"  latent    {levels} level(s) x {h} x {w} indices, K={self.quantizer.codebook_size}"
            f" -> {bits:,.0f} bits/patch, bpp_index {bits / self.image_size**2:.4f}"
        )
        return "\n".join(lines)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
