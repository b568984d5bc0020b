"""Checkpoints: one safetensors file per save, loaded without running code (DESIGN.md, Safety).

- `format`: the file itself (tensors + bounded JSON metadata) and the checks of what it holds
- `tree`: a nested state <-> flat tensors and plain JSON, refusing what is not plain data
- `manager`: save (durable), load, resume (the newest sound file), the last-N policy, and
  `fit_and_save` (the one fit-the-prior-and-write)
- `convert`: torch pickles of an older vqae -> the current file, once (`vqae convert-checkpoint`)

Importing this package loads nothing heavy.
"""
