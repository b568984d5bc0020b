"""Model construction: the one place that maps the config to constructor keyword arguments."""

from __future__ import annotations

from collections.abc import Sequence

from vqae.config import Config, QuantizerConfig
from vqae.data.bands import band_offsets, channels
from vqae.data.stats import band_mean_std, builtin_stats
from vqae.entropy.prior import Prior
from vqae.models.autoencoder import Autoencoder, Decoder, Encoder
from vqae.models.fsq import FSQ
from vqae.models.normalize import Normalize
from vqae.models.quantizer import Quantizer
from vqae.models.rvq import ResidualVQ
from vqae.models.vq import VectorQuantizer

# a new quantizer is one class plus one entry here and in quantizer_kwargs
QUANTIZERS: dict[str, type[Quantizer]] = {"vq": VectorQuantizer, "rvq": ResidualVQ, "fsq": FSQ}
VQ_KEYS = ("codebook_size", "codebook_dim", "distance", "ema", "decay", "eps", "beta",
           "kmeans_init", "kmeans_iters", "revive_threshold", "rotation_trick", "rate_weight")


def quantizer_kwargs(q: QuantizerConfig) -> dict:
    if q.name == "fsq":
        return {"levels": list(q.levels)}
    kwargs = {key: getattr(q, key) for key in VQ_KEYS}
    if q.name == "rvq":
        kwargs.update(depth=q.depth, shared_codebook=q.shared_codebook, dropout=q.dropout)
    return kwargs


def build_model(cfg: Config, mean: Sequence[float] | None = None,
                std: Sequence[float] | None = None) -> Autoencoder:
    """Autoencoder for cfg; normalization statistics default to the built-in BigEarthNet ones
    (a checkpoint's state_dict replaces them when a trained model is loaded)."""
    m = cfg.model
    bands = channels(cfg.data.bands, cfg.data.s1)
    if mean is None or std is None:
        mean, std = band_mean_std(builtin_stats(), bands, "built-in BigEarthNet stats")
    normalize = Normalize(bands, mean, std, band_offsets(bands, cfg.data.subtract_offset),
                          per_patch=m.patch_means, patch_scales=m.patch_scales)
    args = (m.widths, m.downsample, m.blocks_per_stage, m.latent_dim, m.groups, m.activation)
    quantizer = QUANTIZERS[cfg.quantizer.name](m.latent_dim, **quantizer_kwargs(cfg.quantizer))
    return Autoencoder(
        normalize,
        Encoder(len(bands), *args),
        quantizer,
        Decoder(len(bands), *args),
        image_size=m.image_size,
        prior=Prior(quantizer.depth, quantizer.codebook_size),
    )
