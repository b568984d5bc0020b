"""Helpers shared by the encoder tests: run the CLI, read an LMDB back, break a patch or an
LMDB."""

from __future__ import annotations

from pathlib import Path

import lmdb
import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

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


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for key, bands in want.items():
        assert got[key].keys() == bands.keys(), key
        for band, array in bands.items():
            stored = got[key][band]
            assert (stored.dtype, stored.shape) == (array.dtype, array.shape), (key, band)
            np.testing.assert_array_equal(stored, array, err_msg=f"{key} {band}")


def one_line_error(err: str, command: str) -> str:
    """The message of the single `vqae COMMAND: error: ...` line that stderr must be."""
    head = f"vqae {command}: error: "
    assert "Traceback" not in err and err.count("\n") == 1 and err.startswith(head), err
    return err[len(head):]


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


def damage_lmdb(out: Path, how: str, key: str) -> None:
    """Damage an encoded LMDB: random bytes over its first page (`start`, a meta page) or its
    middle half (`middle`, page headers), a record whose key is not utf-8 (`key`), or `key`'s
    value replaced by bytes that are not safetensors (`value`)."""
    data = out / "data.mdb"
    if how in ("start", "middle"):
        raw = bytearray(data.read_bytes())
        start, size = (0, 4096) if how == "start" else (len(raw) // 4, len(raw) // 2)
        raw[start : start + size] = np.random.default_rng(0).bytes(size)
        data.write_bytes(bytes(raw))
        return
    record = {"key": (b"\xff\xfe", st_save({"B02": np.zeros((2, 2), np.uint16)})),
              "value": (key.encode(), b"garbage")}[how]
    env = lmdb.open(str(out), subdir=True)
    try:
        with env.begin(write=True) as txn:
            txn.put(*record)
    finally:
        env.close()
