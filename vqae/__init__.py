"""vqae: vector-quantized autoencoders for Earth-observation image compression."""

__version__ = "0.1.0"
