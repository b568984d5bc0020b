"""Helpers shared by the encoder tests: run the CLI, read an LMDB back, break a patch."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
from safetensors.numpy import load as st_load

from tests.fakes import write_tiff
from vqae.cli import main


def run_cli(*args, workers: int = 1) -> int:
    """`vqae <command> ...` in this process; progress bar off, `workers` reader processes."""
    command, *rest = [str(a) for a in args]
    return main([command, *rest, "--workers", str(workers)]
                + (["--no-progress"] if command == "encode" else []))


def read_lmdb(path: Path) -> dict[str, dict[str, np.ndarray]]:
    env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    try:
        with env.begin() as txn:
            return {k.decode(): st_load(bytes(v)) for k, v in txn.cursor()}
    finally:
        env.close()


def band_file(root: Path, patch: str, band: str) -> Path:
    return next(root.rglob(f"{patch}_{band}.tif"))


def break_patch(root: Path, patch: str, how: str) -> Path:
    """Damage one band of a patch; return the file that an error message must name."""
    path = band_file(root, patch, "B03")
    if how == "missing":
        path.unlink()
    elif how == "corrupt":
        path.write_bytes(path.read_bytes()[:200])  # truncated TIFF
    elif how == "shape":
        path.unlink()
        write_tiff(path, np.zeros((60, 60), np.uint16))  # a 10 m band at 20 m size
    else:
        raise ValueError(how)
    return path
