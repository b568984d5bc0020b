"""Model construction from the config: quantizers picked by name from a plain dict."""

from __future__ import annotations

from vqae.config import Config
from vqae.errors import ConfigError
from vqae.models.autoencoder import Autoencoder, Decoder, Encoder
from vqae.models.fsq import FSQ
from vqae.models.rvq import ResidualVQ
from vqae.models.vq import VectorQuantizer

# a new quantizer is one class with from_config(cfg.quantizer, dim) plus one entry here
QUANTIZERS: dict[str, type] = {"vq": VectorQuantizer, "rvq": ResidualVQ, "fsq": FSQ}


def build_model(cfg: Config) -> Autoencoder:
    """Autoencoder for cfg; in_bands follows the data bands (+2 for S1 VV, VH)."""
    m, q = cfg.model, cfg.quantizer
    if q.name not in QUANTIZERS:
        raise ConfigError(f"quantizer.name '{q.name}' unknown; valid: {', '.join(QUANTIZERS)}")
    in_bands = len(cfg.data.bands) + (2 if cfg.data.s1 else 0)
    args = (m.widths, m.downsample, m.blocks_per_stage, m.latent_dim, m.groups, m.activation)
    return Autoencoder(
        Encoder(in_bands, *args),
        QUANTIZERS[q.name].from_config(q, m.latent_dim),
        Decoder(in_bands, *args),
        image_size=m.image_size,
    )
