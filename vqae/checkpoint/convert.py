"""`vqae convert-checkpoint`: rewrite an older vqae's checkpoints (torch pickles) as format 3,
one safetensors file (vqae/checkpoint/tree.py).

Format 1 (vqae up to 4fe91c4) and format 2 (the interim format that loaded with
`torch.load(weights_only=True)`) were torch.save pickles. Conversion reads one with
weights_only=True and exactly numpy's array globals allowed (an array is rebuilt from its dtype
and bytes; nothing else the file names is resolved, so no code in it runs even here), accepts
an ndarray only where format 1 kept one (rng.numpy's key, 624 uint32), re-expresses format 1's
RNG states as tensors and plain values, writes the new file atomically and replaces the old one
only after the new one loads (safetensors, no pickle), passes the structural checks and holds
the same values.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqae.checkpoint.format import (
    FORMAT_VERSION,
    check_plain,
    check_state,
    numpy_rng_tuple,
    python_rng_tuple,
    upgrade,
)
from vqae.checkpoint.manager import (
    OldFormatCheckpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from vqae.errors import DataError, one_line


def _numpy_array_globals() -> list:
    """numpy's array reconstruction under the names numpy 1.x and 2.x pickle it with."""
    core = getattr(np, "_core", None) or np.core
    rebuild = core.multiarray._reconstruct
    found = [np.ndarray, np.dtype, (rebuild, "numpy.core.multiarray._reconstruct"),
             (rebuild, "numpy._core.multiarray._reconstruct")]
    dtypes = getattr(np, "dtypes", None)
    return found + ([dtypes.UInt32DType] if dtypes is not None else [])


def _load_pickle(path: Path) -> dict[str, Any]:
    """The state of an older vqae's torch pickle, only tensors, plain values and (format 1)
    the one ndarray of numpy's RNG state rebuilt."""
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # numpy's allowance did not suffice: the file names more
        raise DataError(f"checkpoint {path} cannot be converted: it holds objects beyond "
                        f"vqae's old formats ({one_line(err, 160)})") from err
    if not isinstance(state, dict):
        raise DataError(f"checkpoint {path} cannot be converted: it holds a "
                        f"{type(state).__name__}, not a dict; it was not written by `vqae train`")
    _only_the_numpy_key(path, state)
    return state


def _only_the_numpy_key(path: Path, state: dict[str, Any]) -> None:
    """Format 1 held one ndarray: np.random.get_state()[1], rng.numpy[1]; format 2 none."""
    rng = state.get("rng")
    numpy_state = rng.get("numpy") if isinstance(rng, dict) else None
    if isinstance(numpy_state, tuple):
        key = numpy_state[1] if len(numpy_state) == 5 else None
        if not (isinstance(key, np.ndarray) and key.dtype == np.uint32 and key.shape == (624,)):
            raise DataError(f"checkpoint {path} cannot be converted: its rng.numpy is not "
                            "numpy's MT19937 state; it was not written by `vqae train`")
        state = {**state, "rng": {**rng, "numpy": (numpy_state[0], None, *numpy_state[2:])}}
    try:
        check_plain(state)
    except TypeError as err:
        raise DataError(f"checkpoint {path} cannot be converted: {err}") from err


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8)


def _same(a: Any, b: Any) -> bool:
    """The same tree, bit for bit (a NaN equals the same NaN)."""
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and torch.equal(_bits(a), _bits(b)))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(_same(x, y) for x, y in zip(a, b)))
    if isinstance(a, float) and math.isnan(a):
        return type(b) is float and math.isnan(b)
    return type(a) is type(b) and a == b


def _verifier(path: Path, old: dict[str, Any], new: dict[str, Any]):
    """Checks the written temp file before it replaces anything."""
    def verify(written: Path) -> None:
        loaded = read_checkpoint(written, training="optimizer" in new)  # as every command
        rng_old = old.get("rng") if isinstance(old.get("rng"), dict) else {}
        rng_new = loaded.get("rng", {})
        same_rng = (  # format 1's tuples, as the restored RNGs will see them
            (not isinstance(rng_old.get("python"), tuple)
             or python_rng_tuple(rng_new["python"]) == rng_old["python"])
            and (not isinstance(rng_old.get("numpy"), tuple)
                 or _same_numpy(numpy_rng_tuple(rng_new["numpy"]), rng_old["numpy"])))
        if not (_same(loaded, new) and same_rng):
            raise DataError(f"converting {path}: the written file does not hold the same "
                            "values; nothing was replaced")
    return verify


def _same_numpy(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and np.array_equal(a[1], b[1]) and tuple(a[2:]) == tuple(b[2:])


def convert_file(src: Path, dst: Path | None = None) -> str:
    """Convert one checkpoint; returns what was done, as a line for the user."""
    dst = dst or src
    try:
        state = load_checkpoint(src)
    except OldFormatCheckpoint:
        pass  # a torch pickle naming at most numpy's array globals; anything else was refused
    else:
        check_state(src, state)
        if dst != src:
            raise DataError(f"checkpoint {src} is in the current format ({FORMAT_VERSION}) "
                            "already; nothing to convert, copy it instead")
        return f"{src}: in the current format ({FORMAT_VERSION}) already, left as is"
    old = _load_pickle(src)
    new = upgrade(old)
    check_state(src, new, training="optimizer" in new)
    save_checkpoint(dst, new, verify=_verifier(src, old, new))
    return (f"{src} -> {dst}: format {old.get('format', 1)} -> {FORMAT_VERSION} (safetensors), "
            "verified: loads without a pickle and holds the same weights, optimizer and RNG "
            "states")


def checkpoint_files(path: Path) -> list[Path]:
    """A file, or the *.pt files of a folder (and of its checkpoints/ subfolder)."""
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a checkpoint or a folder of them")
    if path.is_file():
        return [path]
    found = sorted(path.glob("*.pt")) + sorted(path.glob("checkpoints/*.pt"))
    if not found:
        raise DataError(f"{path} holds no *.pt checkpoints (nor does {path / 'checkpoints'})")
    return found


def convert(paths: list[str], out: str | None = None) -> list[str]:
    """Convert every checkpoint named (files or folders); files that are hard links of one
    another (best.pt and its step checkpoint) stay linked. Returns one line per file."""
    files = [f for p in paths for f in checkpoint_files(Path(p))]
    if out is not None and len(files) != 1:
        raise DataError(f"-o names one output, but {len(files)} checkpoints were given; "
                        "convert folders in place")
    done: dict[tuple[int, int], Path] = {}
    lines = []
    for src in files:
        stat = src.stat()
        twin = done.get((stat.st_dev, stat.st_ino))
        if twin is not None and out is None:
            _relink(twin, src)
            lines.append(f"{src}: a hard link of {twin}, linked to its converted file")
            continue
        lines.append(convert_file(src, Path(out) if out else None))
        done[(stat.st_dev, stat.st_ino)] = src
    return lines


def _relink(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.relink.tmp")
    tmp.unlink(missing_ok=True)
    os.link(source, tmp)
    os.replace(tmp, target)
