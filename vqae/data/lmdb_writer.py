"""The one LMDB writer: records committed a batch at a time, so a killed run, a full disk or a
stop leaves only whole records (`vqae encode`, and the codec's LMDB outputs). No rasterio here:
the codec writes LMDBs from processes that never read a GeoTIFF."""

from __future__ import annotations

from pathlib import Path

import lmdb

from vqae.data.lmdb_store import REENCODE
from vqae.errors import DataError

LMDB_FILES = frozenset({"data.mdb", "lock.mdb"})  # what an LMDB folder holds
DEFAULT_MAP_SIZE = 1 << 30  # grown by doubling on MapFullError; the file itself stays sparse


def is_lmdb_file(path: Path) -> bool:
    """An entry that an LMDB writer creates in its folder."""
    return path.name in LMDB_FILES


class OutWriteError(DataError):
    """OUT cannot be written: its disk is full, failing or read-only."""


class LmdbWriter:
    """The single writer of an LMDB: `put` buffers, every `batch` records are one transaction,
    and the map size doubles when it fills up.

    A full disk is not MapFullError: with writemap off, pages are written at commit, and a
    short write there surfaces as a plain lmdb.Error (EIO or ENOSPC); the transaction is
    aborted whole, so the batches committed before stay readable.
    """

    def __init__(self, path: Path, batch: int = 256, map_size: int = DEFAULT_MAP_SIZE):
        self.path, self.batch = path, batch
        self.pending: list[tuple[bytes, bytes]] = []
        try:
            self.env = lmdb.open(str(path), map_size=map_size, subdir=True, meminit=False)
        except lmdb.Error as err:
            raise self._failed(err) from err

    def put(self, key: str, value: bytes) -> None:
        self.pending.append((key.encode("utf-8"), value))
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered records in one transaction."""
        while self.pending:
            try:
                with self.env.begin(write=True) as txn:  # aborted whole if anything fails
                    for key, value in self.pending:
                        txn.put(key, value)
                self.pending = []
            except lmdb.MapFullError:
                self._grow()
            except lmdb.Error as err:
                raise self._failed(err) from err

    def close(self) -> None:
        """Commit what is buffered and close."""
        try:
            self.flush()
        finally:
            self.env.close()

    def _grow(self) -> None:
        try:
            self.env.set_mapsize(self.env.info()["map_size"] * 2)
        except lmdb.Error as err:
            raise self._failed(err) from err

    def _failed(self, err: lmdb.Error) -> DataError:
        if isinstance(err, (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError)):
            return DataError(f"LMDB {self.path} is damaged ({type(err).__name__}: {err}); "
                             f"{REENCODE}")
        return OutWriteError(f"cannot write LMDB {self.path}: {err} (is its disk full or "
                             "read-only?)")
