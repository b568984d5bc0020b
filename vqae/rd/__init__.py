"""Rate-distortion benchmarking (`vqae rd`): models through real `.vqz` files against JPEG 2000.

- `measure`: every model at every depth and JPEG 2000 on the same patches; rd.csv, rd.json
- `jpeg2000`: OpenJPEG per native band and as one multi-component stack
- `bdrate`: Pareto fronts and Bjøntegaard delta rates
- `plot`: rd.png
- `near_lossless`: near_lossless.csv (`--max-error`: models with an enhancement layer
  beside the classical anchors of `lossless_anchors`)
"""
