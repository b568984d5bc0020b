"""vqae: vector-quantized autoencoders for Earth-observation image compression.

    from vqae import Codec    # a trained model as a compressor (vqae.codec.codec)
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # lazy: `import vqae` (spawner.py, job-status) must not pay for torch
    if name == "Codec":
        from vqae.codec.codec import Codec

        return Codec
    raise AttributeError(f"module 'vqae' has no attribute {name!r}")
