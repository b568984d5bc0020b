"""Write a rico-hdl style LMDB directly (independent of `vqae encode`) for reader tests."""

from __future__ import annotations

from pathlib import Path

import lmdb
import safetensors.numpy


def write_lmdb(path: Path, patches: dict[str, dict]) -> Path:
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for name, bands in patches.items():
            txn.put(name.encode(), safetensors.numpy.save(bands))
    env.close()
    return path
