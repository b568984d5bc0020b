"""Autoencoder and quantizers (vq, rvq, fsq)."""

from vqae.models.autoencoder import Autoencoder, AutoencoderOutput, Decoder, Encoder
from vqae.models.build import QUANTIZERS, build_model
from vqae.models.fsq import FSQ
from vqae.models.quantizer import QuantizerOutput
from vqae.models.rvq import ResidualVQ
from vqae.models.vq import VectorQuantizer

__all__ = [
    "FSQ",
    "QUANTIZERS",
    "Autoencoder",
    "AutoencoderOutput",
    "Decoder",
    "Encoder",
    "QuantizerOutput",
    "ResidualVQ",
    "VectorQuantizer",
    "build_model",
]
