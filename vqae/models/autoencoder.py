"""Autoencoder = normalize + encoder + quantizer + decoder, composed rather than inherited.

It takes digital numbers as the data stores them; `Normalize` (statistics and offset as
buffers) maps them to the normalized bands the networks see and back. The encoder pads the input (reflect) to a multiple of the downsampling factor f, so 120 px with
f = 16 becomes 128 px and an 8 x 8 latent; the decoder crops its output back to the input size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from vqae.data.bands import PATCH_MEAN_BITS
from vqae.entropy.prior import Prior
from vqae.metrics import bpp_index
from vqae.models.blocks import Downsample, Upsample, activation, norm, stage
from vqae.models.normalize import SCALE_BITS, Normalize
from vqae.models.quantizer import Quantizer

FACTORS = (2, 4, 8, 16)


@dataclass
class AutoencoderOutput:
    recon: Tensor  # (B, C, H, W) normalized reconstruction
    target: Tensor  # (B, C, H, W) the normalized input, what recon is compared with
    indices: Tensor  # (B, depth, h, w) long codes
    losses: dict[str, Tensor] = field(default_factory=dict)  # weighted quantizer losses
    counts: Tensor | None = None  # (depth, K) code histogram of this batch
    patch_means: Tensor | None = None  # (B, C) per-patch band means (side information), if used


def stage_widths(widths: list[int], factor: int) -> list[int]:
    """Channels per resolution: log2(f) + 1 stages, repeating the last width when f needs more."""
    if factor not in FACTORS or not widths:
        raise ValueError(f"need a factor in {FACTORS} and widths, got {factor}, {widths}")
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
    def __init__(self, normalize: Normalize, encoder: Encoder, quantizer: Quantizer,
                 decoder: Decoder, image_size: int = 120, prior: Prior | None = None):
        super().__init__()
        self.normalize, self.encoder, self.quantizer, self.decoder = (
            normalize, encoder, quantizer, decoder)
        self.image_size = image_size
        # the codec's entropy model over the indices: uniform until `vqae fit-prior` fits it
        if prior is None:
            prior = Prior(quantizer.depth, quantizer.codebook_size)
        self.prior = prior

    @property
    def bands(self) -> list[str]:
        return self.normalize.bands

    def forward(self, x: Tensor, depth: int | None = None) -> AutoencoderOutput:
        """x (B, C, H, W) digital numbers -> normalized reconstruction and target, indices."""
        patch_means = self.normalize.patch_means(x)
        target = self.normalize(x, patch_means)
        q = self.quantizer(self.encoder(target), depth)
        return AutoencoderOutput(
            recon=self.decoder(q.quantized, tuple(x.shape[-2:])),
            target=target,
            indices=q.indices,
            losses=q.losses,
            counts=q.counts,
            patch_means=patch_means,
        )

    def compile_networks(self, **options) -> None:
        """torch.compile the encoder and decoder in place (`options` go to torch.compile).

        Their convolutions, norms and activations are what fusion speeds up; the quantizer's
        EMA and revival code with its data-dependent control stays eager. nn.Module.compile
        keeps the modules themselves, so state_dict keys keep their names (no `_orig_mod.`).
        """
        self.encoder.compile(**options)
        self.decoder.compile(**options)

    def to_dn(self, recon: Tensor, patch_means: Tensor | None = None) -> Tensor:
        """A normalized reconstruction in digital numbers, offset included (fp32); a per-patch
        model needs the output's `patch_means`."""
        return self.normalize.inverse(recon, patch_means)

    def patch_means(self, x: Tensor) -> Tensor | None:
        """(B, C, H, W) digital numbers -> the (B, C) integer band means a per-patch model
        (config model.patch_means) sends beside the indices, else None."""
        return self.normalize.patch_means(x)

    @property
    def patch_mean_count(self) -> int:
        """Side values per patch: one mean per band for a per-patch model (and one scale code
        per band with patch scales), else 0."""
        if not self.normalize.per_patch:
            return 0
        return len(self.bands) * (2 if self.normalize.patch_scales else 1)

    def encode(self, x: Tensor, depth: int | None = None,
               patch_means: Tensor | None = None) -> Tensor:
        """(B, C, H, W) digital numbers -> indices (B, depth, h, w); a caller that already has
        `self.patch_means(x)` passes them."""
        if patch_means is None:
            patch_means = self.patch_means(x)
        return self.quantizer.encode(self.encoder(self.normalize(x, patch_means)), depth)

    def decode(self, indices: Tensor, patch_means: Tensor | None = None) -> Tensor:
        """indices (B, depth, h, w) and, per-patch, the patch means (B, C) -> digital
        numbers (B, C, image_size, image_size), fp32."""
        size = (self.image_size, self.image_size)
        return self.to_dn(self.decoder(self.quantizer.decode(indices), size), patch_means)

    def latent_shape(self) -> tuple[int, int, int]:
        """(depth, h, w) of the index grid for an image_size input."""
        side = -(-self.image_size // self.encoder.factor)
        return self.quantizer.depth, side, side

    def bpp_index(self) -> float:
        """Bits per pixel of fixed-length indices at full depth (DESIGN.md's bpp_index)."""
        depth, h, w = self.latent_shape()
        return bpp_index(h * w, depth, self.quantizer.codebook_size, self.image_size,
                         self.image_size)

    def side_bits(self) -> int:
        """Bits per patch of the patch means, reported apart as bpp_side (bpp_index and
        bpp_histogram count indices only; bpp_coded, the file, counts everything)."""
        means = len(self.bands) if self.normalize.per_patch else 0
        return PATCH_MEAN_BITS * means + SCALE_BITS * (self.patch_mean_count - means)

    def summary(self) -> str:
        depth, h, w = self.latent_shape()
        rate = self.bpp_index()
        lines = [f"Autoencoder: {count(self):,} parameters, bands {' '.join(self.bands)}"]
        for name in ("encoder", "quantizer", "decoder"):
            module = getattr(self, name)
            lines.append(f"  {name:<9} {type(module).__name__:<16} {count(module):>12,}")
        lines.append(
            f"  latent    depth {depth} x {h} x {w} indices, K={self.quantizer.codebook_size}"
            f" -> {rate * self.image_size**2:,.0f} bits/patch, bpp_index {rate:.4f}"
        )
        if self.normalize.per_patch:
            scales = f" + {len(self.bands)} scales x {SCALE_BITS} bits" \
                if self.normalize.patch_scales else ""
            lines.append(f"  side      {len(self.bands)} patch means x {PATCH_MEAN_BITS} bits"
                         f"{scales}, bpp_side {self.side_bits() / self.image_size**2:.4f}")
        return "\n".join(lines)


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
