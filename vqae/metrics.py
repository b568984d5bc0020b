"""Distortion, rate and codebook-health metrics (names and formulas: DESIGN.md, metric definitions).

Images are (B, C, H, W) tensors in digital numbers (DN) on any device; every distortion metric
returns one value per patch so that callers can average over patches (and across ranks).
`offset` is subtracted before the clamp: a number, or one value per band (C,).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

DN_MAX = 10000.0  # reflectance 1.0 in S2 L2A digital numbers: the clamp range and PSNR peak
# PSNR of a perfect reconstruction would be infinite; the floor caps it at
# 10*log10(10000^2 / 1e-10) = 180 dB so averages stay finite (a capped patch still dominates).
MSE_FLOOR = 1e-10
SSIM_WINDOW = 11  # Gaussian window of Wang et al. (2004)
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


Offset = float | Sequence[float] | torch.Tensor


def _clamped(x: torch.Tensor, offset: Offset, max_value: float) -> torch.Tensor:
    if not isinstance(offset, (int, float)):
        offset = torch.as_tensor(offset, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float() - offset).clamp(0.0, max_value)


def _squared_error(x: torch.Tensor, x_hat: torch.Tensor, max_value: float, offset: Offset):
    return (_clamped(x, offset, max_value) - _clamped(x_hat, offset, max_value)).square()


def _to_db(mse: torch.Tensor, max_value: float) -> torch.Tensor:
    return 10.0 * torch.log10(max_value**2 / mse.clamp_min(MSE_FLOOR))


def psnr_per_band(
    x: torch.Tensor, x_hat: torch.Tensor, max_value: float = DN_MAX, offset: Offset = 0.0
) -> torch.Tensor:
    """PSNR in dB of each band of each patch, (B, C): both clamped to [0, max_value] first."""
    mse = _squared_error(x, x_hat, max_value, offset).mean(dim=(2, 3))  # (B, C)
    return _to_db(mse, max_value)


def psnr(
    x: torch.Tensor, x_hat: torch.Tensor, max_value: float = DN_MAX, offset: Offset = 0.0
) -> torch.Tensor:
    """PSNR in dB of each patch, (B,): MSE over all bands and pixels after the clamp."""
    mse = _squared_error(x, x_hat, max_value, offset).mean(dim=(1, 2, 3))  # (B,)
    return _to_db(mse, max_value)


# --- aggregates over patches (DESIGN.md): the mean hides the worst tiles ---

PSNR_THRESHOLD = 30.0  # dB: `patches_below` counts the patches under it
PSNR_BIN = 0.01  # dB: resolution of psnr_p10 (a fixed histogram, summed across ranks)
PSNR_MAX = _to_db(torch.tensor(0.0), DN_MAX).item()  # a perfect patch: the MSE floor's 180 dB
PSNR_BINS = round(PSNR_MAX / PSNR_BIN) + 2


def psnr_bins(patch_psnr: torch.Tensor) -> torch.Tensor:
    """Each PSNR's bin of width PSNR_BIN from 0 dB (a clamped patch's PSNR is >= 0)."""
    return (patch_psnr.double() / PSNR_BIN).floor().long().clamp(0, PSNR_BINS - 1)


def percentile_from_bins(hist: torch.Tensor, q: float) -> float:
    """The nearest-rank q-quantile (the ceil(q*n)-th smallest value) of binned PSNRs, as its
    bin's centre: within PSNR_BIN / 2 of the exact value."""
    counts = torch.cumsum(hist.double().cpu(), 0)
    rank = max(math.ceil(q * float(counts[-1])), 1)
    index = int(torch.searchsorted(counts, torch.tensor([float(rank)], dtype=torch.float64)))
    return (index + 0.5) * PSNR_BIN


def _gaussian_1d(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur_valid(maps: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter, depthwise, 'valid' region only (as skimage crops the border)."""
    channels = maps.shape[1]
    g = _gaussian_1d(size, sigma, maps.device)
    out = F.conv2d(maps, g.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)
    return F.conv2d(out, g.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)


def ssim_per_band(
    x: torch.Tensor, x_hat: torch.Tensor, data_range: float = DN_MAX, offset: Offset = 0.0
) -> torch.Tensor:
    """SSIM of each band of each patch, (B, C), on bands clamped to [0, data_range].

    Matches skimage's structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range) with an 11x11 window.
    """
    _, c, h, w = x.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs patches of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {h}x{w}")
    # Scale to [0, 1] and remove each band's mean: (co)variances are shift-invariant, and
    # E[x^2] - E[x]^2 on centred float32 data avoids cancellation at DN magnitudes.
    xs = _clamped(x, offset, data_range) / data_range
    ys = _clamped(x_hat, offset, data_range) / data_range
    shift = xs.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1)
    xs, ys = xs - shift, ys - shift
    maps = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=1)  # (B, 5C, H, W)
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur_valid(maps, SSIM_WINDOW, SSIM_SIGMA).split(c, dim=1)
    var_x, var_y = e_xx - mu_x**2, e_yy - mu_y**2
    cov = e_xy - mu_x * mu_y
    mu_x, mu_y = mu_x + shift, mu_y + shift  # back to the true local means for luminance
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range is 1 after scaling
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).mean(dim=(2, 3))  # (B, C)


def ssim(
    x: torch.Tensor, x_hat: torch.Tensor, data_range: float = DN_MAX, offset: Offset = 0.0
) -> torch.Tensor:
    """Mean over bands of SSIM, (B,)."""
    return ssim_per_band(x, x_hat, data_range, offset).mean(dim=1)


def sam(
    x: torch.Tensor, x_hat: torch.Tensor, max_value: float = DN_MAX, offset: Offset = 0.0
) -> torch.Tensor:
    """Mean spectral angle in degrees over the pixels of each patch, (B,).

    Bands are clamped like PSNR/SSIM. The angle is 2*atan2(|u - v|, |u + v|) of the unit
    spectra, which stays accurate for tiny angles (acos of a float32 cosine does not). A zero
    spectrum has unit vector 0: two zero spectra give 0 degrees, one zero spectrum 90 degrees.
    """
    a = _clamped(x, offset, max_value)
    b = _clamped(x_hat, offset, max_value)
    u = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)  # (B, C, H, W)
    v = b / b.norm(dim=1, keepdim=True).clamp_min(1e-12)
    angle = 2.0 * torch.atan2((u - v).norm(dim=1), (u + v).norm(dim=1))  # (B, H, W)
    return torch.rad2deg(angle).mean(dim=(1, 2))


# --- rates: bits per spatial pixel of the H x W grid, all bands together ---


def bpp_index(
    positions: int, depth: int, codebook_size: int, height: int = 120, width: int = 120
) -> float:
    """Fixed-length indices: positions * depth * log2(K) / (H*W)."""
    return positions * depth * math.log2(codebook_size) / (height * width)


def entropy_bits(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits along the last dim of histograms (counts or probabilities)."""
    p = counts.double() / counts.double().sum(dim=-1, keepdim=True).clamp_min(1e-300)
    return -(p * torch.log2(torch.where(p > 0, p, 1.0))).sum(dim=-1)  # 0 * log 0 = 0


def bpp_histogram(
    histograms: torch.Tensor, positions: int, height: int = 120, width: int = 120
) -> float:
    """Entropy of the indices' own per-stage histogram, no context: sum_s positions*H(p_s)/(H*W).
    What a prior fitted on these very patches would spend without context; no file is written.

    histograms: (depth, K) or (K,) counts or probabilities of the indices of each RVQ stage.
    """
    bits = entropy_bits(histograms.reshape(-1, histograms.shape[-1]))  # (depth,)
    return float(positions * bits.sum() / (height * width))


def bpp_entropy(ideal_bits: float, height: int = 120, width: int = 120,
                num_patches: int = 1) -> float:
    """The indices' information content under the fitted prior, -sum log2 p (what an ideal
    coder spends on them), / (H*W), per patch."""
    return ideal_bits / (height * width * num_patches)


def bpp_coded(num_bytes: int, height: int = 120, width: int = 120, num_patches: int = 1) -> float:
    """Actual file size: 8 * bytes (header included) / (H*W), per patch if a file holds several."""
    return 8.0 * num_bytes / (height * width * num_patches)


def bpppb(bpp: float, bands: int) -> float:
    """Bits per pixel per band."""
    return bpp / bands


# --- codebook health, along the last dim of (…, K) count histograms ---


def usage(counts: torch.Tensor) -> torch.Tensor:
    """Fraction of the K codes used at least once."""
    return (counts > 0).double().mean(dim=-1)


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy): the effective number of equally used codes (K when uniform)."""
    return torch.exp2(entropy_bits(counts))


def dead_codes(counts: torch.Tensor) -> torch.Tensor:
    """Number of codes never used."""
    return (counts == 0).sum(dim=-1)


def index_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code per stage, (depth, K), from indices (B, depth, h, w)."""
    depth = indices.shape[1]
    if indices.numel() and (indices.min() < 0 or indices.max() >= codebook_size):
        raise ValueError(f"code indices must lie in [0, {codebook_size}), got "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    # Offset each stage's indices into its own block so one bincount fills all stages.
    stage_offset = torch.arange(depth, device=indices.device).view(1, depth, 1, 1)
    flat = (indices.long() + stage_offset * codebook_size).flatten()
    return torch.bincount(flat, minlength=depth * codebook_size).view(depth, codebook_size)


def health_metrics(counts: torch.Tensor) -> dict[str, float]:
    """usage/<s>, perplexity/<s>, dead_codes/<s> for each RVQ stage s of a (depth, K) histogram."""
    out: dict[str, float] = {}
    for name, fn in (("usage", usage), ("perplexity", perplexity), ("dead_codes", dead_codes)):
        for stage, value in enumerate(fn(counts).tolist()):
            out[f"{name}/{stage}"] = value
    return out


class MetricAccumulator:
    """Sums per-patch metrics and index histograms over an eval set, batch by batch.

    `update` per batch, then `reduce()` once under DDP (a no-op otherwise), then `compute()`.
    Under DDP every rank must have seen at least one batch with indices (DistributedSampler pads
    ranks to equal length, so this holds) so that all ranks all-reduce the same tensors.
    """

    def __init__(self, bands: Sequence[str], codebook_size: int, offset: Offset = 0.0,
                 side_bits: int = 0, psnr_threshold: float = PSNR_THRESHOLD):
        self.bands = list(bands)
        self.codebook_size = codebook_size
        self.side_bits = side_bits  # per patch, besides the indices (a model's side information)
        self.offset = offset
        self.psnr_threshold = psnr_threshold  # `patches_below` counts patches under it
        self._sums: torch.Tensor | None = None  # [n, psnr, ssim, sam, mse, below, psnr/band...]
        self._psnr_hist: torch.Tensor | None = None  # (PSNR_BINS,) patches per 0.01 dB bin
        self._psnr_min: torch.Tensor | None = None  # (1,) the worst patch
        self._hist: torch.Tensor | None = None  # (depth, K) int64
        self._positions = 0
        self._size = (0, 0)
        self._reduced = False

    def update(
        self, x: torch.Tensor, x_hat: torch.Tensor, indices: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x, x_hat: (B, C, H, W) in DN; indices: (B, depth, h, w) or (B, h, w) for depth 1.
        Returns the batch's per-patch PSNR (B,) for callers that list patches."""
        if self._reduced:
            raise RuntimeError("MetricAccumulator.update after reduce(); make a new accumulator")
        if x.shape != x_hat.shape or x.shape[1] != len(self.bands):
            raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must match "
                             f"(B, {len(self.bands)} bands, H, W)")
        with torch.no_grad():
            band_mse = _squared_error(x, x_hat, DN_MAX, self.offset).mean(dim=(2, 3))  # (B, C)
            mse = band_mse.mean(dim=1)  # (B,) the patch's MSE over all bands and pixels
            patch_psnr = _to_db(mse, DN_MAX)
            batch = torch.cat([
                torch.ones(x.shape[0], 1, device=x.device),
                patch_psnr[:, None],
                ssim(x, x_hat, offset=self.offset)[:, None],
                sam(x, x_hat, offset=self.offset)[:, None],
                mse[:, None],
                (patch_psnr < self.psnr_threshold).float()[:, None],
                _to_db(band_mse, DN_MAX),
            ], dim=1).double().sum(dim=0)  # (6 + C,)
            self._sums = batch if self._sums is None else self._sums + batch
            self._add_psnr(patch_psnr)
            self._size = (x.shape[2], x.shape[3])
            if indices is not None:
                self._add_indices(indices)
        return patch_psnr

    def _add_psnr(self, patch_psnr: torch.Tensor) -> None:
        """The distribution of per-patch PSNR in fixed bins (memory that does not grow with the
        patches, and a sum under DDP) and its exact minimum."""
        bins = psnr_bins(patch_psnr)
        hist = torch.bincount(bins, minlength=PSNR_BINS)
        low = patch_psnr.min().double().reshape(1)
        self._psnr_hist = hist if self._psnr_hist is None else self._psnr_hist + hist
        self._psnr_min = low if self._psnr_min is None else torch.minimum(self._psnr_min, low)

    def _add_indices(self, indices: torch.Tensor) -> None:
        if indices.ndim == 3:
            indices = indices[:, None]  # depth 1
        hist = index_histogram(indices, self.codebook_size)
        if self._hist is not None and self._hist.shape != hist.shape:
            raise ValueError(f"index depth changed from {self._hist.shape[0]} to {hist.shape[0]}")
        self._hist = hist if self._hist is None else self._hist + hist
        self._positions = indices.shape[2] * indices.shape[3]

    def reduce(self) -> None:
        """All-reduce sums and histograms across ranks when torch.distributed is initialized."""
        if self._reduced:
            raise RuntimeError("MetricAccumulator.reduce called twice")
        self._reduced = True
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if self._sums is None:
            raise RuntimeError("MetricAccumulator.reduce on a rank that saw no batch")
        torch.distributed.all_reduce(self._sums)
        torch.distributed.all_reduce(self._psnr_hist)
        torch.distributed.all_reduce(self._psnr_min, op=torch.distributed.ReduceOp.MIN)
        if self._hist is not None:
            torch.distributed.all_reduce(self._hist)

    def compute(self) -> dict[str, float]:
        """Flat dict: psnr, psnr_pooled, psnr_p10, psnr_min, patches_below, psnr/<band>, ssim,
        sam, bpp_index, bpp_histogram, (bpp_side), codebook health."""
        if self._sums is None:
            raise RuntimeError("MetricAccumulator.compute before any update")
        n = float(self._sums[0])
        means = (self._sums[1:] / n).tolist()
        worst = float(self._psnr_min)
        p10 = percentile_from_bins(self._psnr_hist, 0.10)  # a bin centre: keep it in range
        out = {"psnr": means[0], "psnr_pooled": float(_to_db(self._sums[4:5] / n, DN_MAX)),
               "psnr_p10": min(max(p10, worst), PSNR_MAX), "psnr_min": worst,
               "patches_below": int(self._sums[5])}
        out.update({f"psnr/{band}": v for band, v in zip(self.bands, means[5:])})
        out.update({"ssim": means[1], "sam": means[2]})
        if self._hist is not None:
            h, w = self._size
            depth = self._hist.shape[0]
            out["bpp_index"] = bpp_index(self._positions, depth, self.codebook_size, h, w)
            out["bpp_histogram"] = bpp_histogram(self._hist, self._positions, h, w)
            if self.side_bits:  # what a file stores besides the indices (model.patch_means)
                out["bpp_side"] = self.side_bits / (h * w)
            out.update(health_metrics(self._hist))
        return out

    @property
    def num_patches(self) -> int:
        return 0 if self._sums is None else int(self._sums[0])
