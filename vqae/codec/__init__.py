"""The codec: a trained model's code indices as entropy-coded, progressive `.vqz` bitstreams.

- `prior`: integer frequency tables over the indices (buffers of the model) and their contexts
- `fit`: fitting those tables on a split, choosing each stage's context by held-out bits
- `entropy`: constriction's ANS coder over those tables
- `bitstream`: the `.vqz` container (header, one CRC-checked chunk per RVQ stage; docs/format.md)
- `api`: index grids <-> file bytes, indices <-> digital numbers
- `bandfilter`: the per-patch band gains / band mix the encoder fits and the header carries
- `store`, `pipeline`: folders and LMDBs of files; what fit-prior, compress, decompress do
- `jpeg2000`, `bdrate`, `rd`, `plot`: the rate-distortion comparison (`vqae rd`)

Importing this package loads nothing heavy; the model imports `prior` only.
"""
