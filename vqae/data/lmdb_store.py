"""Read-only access to an LMDB of the rico-hdl format, with errors that name the file and key.

py-lmdb refuses to open one database twice in a process, and it recognises the file, not the
path (a renamed folder is still "already open"). So the handles of a process live in one table,
keyed by the data file's device and inode and shared by reference count: each `LmdbStore` (one
per data source) takes a reference on first use and gives it back in `close()`, and the last
one closes the handle. A DataLoader worker forked from a process that holds a handle drops its
inherited copy and opens its own; a store pickles without its handle (spawned workers).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from vqae.errors import DataError

REENCODE = "re-create it with `vqae encode ... --overwrite` or copy it again"


@dataclass
class _Handle:
    env: lmdb.Environment
    pid: int  # the process that opened it; a forked child must not use it
    users: int = 0


_HANDLES: dict[tuple[int, int], _Handle] = {}


def is_lmdb(path: str | Path) -> bool:
    path = Path(path)
    return (path / "data.mdb").is_file() or (path.is_file() and path.suffix == ".mdb")


def _file_id(path: Path) -> tuple[int, int]:
    data = path / "data.mdb" if path.is_dir() else path
    try:
        st = os.stat(data)
    except OSError as err:
        raise DataError(f"cannot open LMDB {path}: {err}") from err
    return st.st_dev, st.st_ino


def _open(path: Path) -> lmdb.Environment:
    try:
        return lmdb.open(str(path), readonly=True, lock=False, readahead=False,
                         subdir=path.is_dir(), max_readers=512)
    except lmdb.Error as err:
        raise DataError(f"cannot open LMDB {path}: {err}; {REENCODE}") from err


class LmdbStore:
    """One data source's read-only view of an LMDB; use as a context manager or `close()`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"LMDB path {self.path} does not exist")
        if not is_lmdb(self.path):
            raise DataError(
                f"{self.path} is not an LMDB (no data.mdb inside); encode GeoTIFFs with "
                f"`vqae encode --bigearthnet-s2-root ROOT {self.path}` or pass the right folder"
            )
        self._id: tuple[int, int] | None = None
        self._pid: int | None = None  # the process in which this store holds a reference

    def env(self) -> lmdb.Environment:
        pid = os.getpid()
        if self._pid == pid:
            return _HANDLES[self._id].env
        file_id = _file_id(self.path)
        handle = _HANDLES.get(file_id)
        if handle is not None and handle.pid != pid:
            # Inherited across fork: closing unmaps only this process's copy (lock=False, so
            # no shared reader table is touched) and lets this process open its own.
            handle.env.close()
            handle = None
        if handle is None:
            handle = _HANDLES[file_id] = _Handle(_open(self.path), pid)
        handle.users += 1
        self._id, self._pid = file_id, pid
        return handle.env

    def close(self) -> None:
        if self._pid != os.getpid():
            self._pid = None  # a reference of the parent process, not ours to give back
            return
        handle = _HANDLES[self._id]
        handle.users -= 1
        if handle.users == 0:
            handle.env.close()
            del _HANDLES[self._id]
        self._pid = None

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "_id": None, "_pid": None}

    def corrupt(self, err: Exception, key: str | None = None) -> DataError:
        where = f"LMDB {self.path}" + (f" key {key!r}" if key is not None else "")
        return DataError(f"{where} is unreadable ({type(err).__name__}: {err}); {REENCODE}")

    def items(self) -> Iterator[tuple[str, bytes]]:
        """(key, value) of every record in key order; values are only valid inside the loop."""
        try:
            with self.env().begin(buffers=True) as txn:
                for raw_key, value in txn.cursor():
                    yield self._decode_key(raw_key), value
        except lmdb.Error as err:
            raise self.corrupt(err) from err

    def keys(self) -> list[str]:
        try:
            with self.env().begin() as txn:
                return [self._decode_key(k) for k in txn.cursor().iternext(values=False)]
        except lmdb.Error as err:
            raise self.corrupt(err) from err

    def get(self, key: str) -> bytes | None:
        try:
            with self.env().begin() as txn:
                return txn.get(key.encode("utf-8"))
        except lmdb.Error as err:
            raise self.corrupt(err, key) from err

    def _decode_key(self, raw: bytes | memoryview) -> str:
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"LMDB {self.path} has a key that is not utf-8 ({bytes(raw)[:40]!r}); "
                            f"{REENCODE}") from err

    def band_names(self, key: str, value: bytes | memoryview) -> list[str]:
        """Tensor names from a safetensors header without decoding the arrays."""
        try:
            (length,) = struct.unpack("<Q", bytes(value[:8]))
            header = json.loads(bytes(value[8 : 8 + length]))
            return [k for k in header if k != "__metadata__"]
        except (struct.error, UnicodeDecodeError, ValueError, TypeError) as err:
            raise self.corrupt(err, key) from err
