"""The codec: a trained model's code indices as entropy-coded, progressive `.vqz` files.

- `codec`: `Codec`, patches <-> file bytes (from_checkpoint, compress, decompress, batches)
- `bitstream`: the `.vqz` container (header, one CRC-checked chunk per RVQ stage; docs/format.md)
- `bandfilter`: the per-patch band gains / band mix the encoder fits and the header carries
- `ratecontrol`: per patch, the depth and filter that reach a PSNR or rate target
- `inputs`: the checks of what the library API is handed (NaN, shapes, value ranges)
- `store`: folders and LMDBs of files, and the GeoTIFF trees and LMDBs they decompress into
- `folder_compress`, `folder_decompress`: the pipelines of `vqae compress` and `vqae decompress`
  (a dataset -> OUT, and back), each one run object over a codec and a store

The prior and its coder live in `vqae.entropy`; the commands in `vqae.commands`; `vqae rd` in
`vqae.rd`. Importing this package loads nothing heavy.
"""

from __future__ import annotations


def __getattr__(name: str):
    if name == "Codec":
        from vqae.codec.codec import Codec

        return Codec
    raise AttributeError(name)
