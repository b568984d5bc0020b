"""Autoencoder, normalization and quantizers (vq, rvq, fsq)."""

from vqae.models.autoencoder import Autoencoder, AutoencoderOutput, Decoder, Encoder
from vqae.models.build import QUANTIZERS, build_model, quantizer_kwargs
from vqae.models.fsq import FSQ
from vqae.models.normalize import Normalize
from vqae.models.quantizer import Quantizer, QuantizerOutput
from vqae.models.rvq import ResidualVQ
from vqae.models.vq import VectorQuantizer

__all__ = [
    "FSQ",
    "QUANTIZERS",
    "Autoencoder",
    "AutoencoderOutput",
    "Decoder",
    "Encoder",
    "Normalize",
    "Quantizer",
    "QuantizerOutput",
    "ResidualVQ",
    "VectorQuantizer",
    "build_model",
    "quantizer_kwargs",
]
