"""Files written whole or not at all: a temporary file beside the target, renamed over it.

A reader (another process, a resumed run, `spawner.py --status`) never sees half a file. With
`durable`, the file and the rename are fsynced too, so a power cut keeps the old or the new
file (checkpoints). Stdlib only, so light commands (job-status, spawner) can use it.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

TEMP_SUFFIX = ".tmp"


def temp_path(target: Path) -> Path:
    """A fresh hidden name beside `target` (unique: writers may race)."""
    return target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


def fsync_dir(folder: Path) -> None:
    """Persist a rename: the directory entry itself must reach the disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace(tmp: Path, target: Path, durable: bool = True) -> None:
    """Rename `tmp` over `target`; `durable` fsyncs the folder after."""
    os.replace(tmp, target)
    if durable:
        fsync_dir(target.parent)


def write_with(path: str | os.PathLike, write: Callable[[BinaryIO], None],
               durable: bool = False, verify: Callable[[Path], None] | None = None) -> Path:
    """`write(file)` into a temporary file beside `path`, then (after `verify(temp)`, which may
    raise to keep the old file) rename it over `path`; the temporary file never outlives it."""
    target = Path(path)
    tmp = temp_path(target)
    try:
        with open(tmp, "xb") as f:  # created here, so the umask sets its mode
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        replace(tmp, target, durable)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def write_atomic(path: str | os.PathLike, data: str | bytes, durable: bool = False) -> Path:
    raw = data.encode() if isinstance(data, str) else data
    return write_with(path, lambda f: f.write(raw), durable)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return write_atomic(path, json.dumps(data, indent=2) + "\n")
