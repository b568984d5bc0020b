"""Read-only access to an LMDB of the rico-hdl format, with errors that name the file and key.

py-lmdb refuses to open one database twice in a process, and it recognises the file, not the
path (a renamed folder is still "already open"). So the handles of a process live in one table,
keyed by the data file's device and inode and shared by reference count: each `LmdbStore` (one
per data source) takes a reference on first use and gives it back in `close()`, and the last
one closes the handle. A DataLoader worker forked from a process that holds a handle drops its
inherited copy and opens its own; a store pickles without its handle (spawned workers).

LMDB maps data.mdb into memory, and touching a page past the end of a truncated file kills the
process with SIGBUS (rc 135, no message). So before opening, and again before every read
transaction, `DataFile.check` reads LMDB's two meta pages itself (page size, last page number,
transaction id; the newer valid one counts, as LMDB picks it) and refuses a file shorter than
(last page + 1) x page size with one line. LMDB never reads a page past that last page, so
a file that passes is safe to map; only a truncation racing an open transaction remains.
"""

from __future__ import annotations

import json
import os
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from vqae.data.lmdb_tree import NO_ROOT, Tree
from vqae.errors import DataError
from vqae.io.limits import require_regular

REENCODE = "re-create it with `vqae encode ... --overwrite` or copy it again"

# LMDB 0.9 meta page on 64-bit builds: page header (pgno u64, pad u16, flags u16, lower/upper
# u16 u16), then MDB_meta: magic u32, version u32, address u64, mapsize u64, two MDB_db of 48
# bytes (the first one's leading u32 holds the page size; the second, the main database: pad
# u32, flags u16, depth u16, four page/entry counts u64, root page u64), last page u64, txnid.
_META = struct.Struct("<QHHI" "IIQQ" "I44x" "IHH32xQ" "QQ")
META_MAGIC, META_VERSION, P_META = 0xBEEFC0DE, 1, 0x08
MIN_PAGE, MAX_PAGE = 512, 1 << 16


@dataclass(frozen=True)
class Meta:
    page_size: int
    last_page: int
    txnid: int
    root: int = NO_ROOT  # the main database's root page
    depth: int = 0
    flags: int = 0

    @property
    def needed(self) -> int:
        """Bytes data.mdb must hold: every page up to the last one."""
        return (self.last_page + 1) * self.page_size


def _meta(raw: bytes) -> Meta | None:
    """A meta page's fields, or None when it is not a valid LMDB 0.9 meta page."""
    if len(raw) < _META.size:
        return None
    (_pgno, _pad, flags, _bounds, magic, version, _addr, _mapsize, psize, _mpad, db_flags,
     depth, root, last, txnid) = _META.unpack_from(raw)
    valid = (flags & P_META and magic == META_MAGIC and version == META_VERSION
             and MIN_PAGE <= psize <= MAX_PAGE and psize & (psize - 1) == 0)
    return Meta(psize, last, txnid, root, depth, db_flags) if valid else None


class DataFile:
    """data.mdb opened for reading its meta pages (non-blocking: a FIFO cannot hang it)."""

    def __init__(self, lmdb_path: Path):
        self.lmdb_path = lmdb_path
        self.path = lmdb_path / "data.mdb" if lmdb_path.is_dir() else lmdb_path
        require_regular(self.path, f"LMDB {lmdb_path}: data file")
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise DataError(f"cannot open LMDB {lmdb_path}: {err.strerror or err}") from err
        try:
            self.check()
        except BaseException:
            self.close()
            raise

    def check(self) -> Meta:
        """The meta LMDB reads; DataError when the file cannot hold the pages it names."""
        st = os.fstat(self.fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"LMDB {self.lmdb_path}: {self.path} is not a regular file")
        first = _meta(os.pread(self.fd, _META.size, 0))
        second = first and _meta(os.pread(self.fd, _META.size, first.page_size))
        if not first or not second:
            which = "first" if not first else "second"
            raise DataError(f"LMDB {self.lmdb_path}: {self.path} ({st.st_size:,} bytes) has no "
                            f"valid {which} meta page, it is not an LMDB or is damaged; "
                            f"{REENCODE}")
        meta = max(first, second, key=lambda m: m.txnid)
        if st.st_size < meta.needed:
            raise DataError(f"LMDB {self.lmdb_path} is truncated: {self.path} holds "
                            f"{st.st_size:,} bytes, its meta page (transaction {meta.txnid}) "
                            f"needs {meta.needed:,} ({meta.last_page + 1} pages of "
                            f"{meta.page_size}); {REENCODE}")
        return meta

    def require(self, meta: Meta) -> None:
        """The cheap re-check inside a transaction: the file still holds `meta`'s pages."""
        size = os.fstat(self.fd).st_size
        if size < meta.needed:
            raise DataError(f"LMDB {self.lmdb_path} was truncated while being read: "
                            f"{self.path} holds {size:,} bytes, {meta.needed:,} needed; "
                            f"{REENCODE}")

    def tree(self) -> Tree:
        """The main database's B-tree as the newest meta page describes it, checked now."""
        meta = self.check()
        return Tree(self.fd, meta.page_size, meta.last_page, meta.root, meta.depth, meta.flags,
                    f"LMDB {self.lmdb_path}", REENCODE)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class _Handle:
    env: lmdb.Environment
    data: DataFile  # checked before every transaction
    pid: int  # the process that opened it; a forked child must not use it
    users: int = 0

    def close(self) -> None:
        self.env.close()
        self.data.close()


_HANDLES: dict[tuple[int, int], _Handle] = {}


def is_lmdb(path: str | Path) -> bool:
    """A folder with a data.mdb, or an .mdb file; of any file type, so that a data.mdb that
    is a FIFO or a device is refused by LmdbStore, not taken for a folder of GeoTIFFs."""
    path = Path(path)
    return os.path.lexists(path / "data.mdb") or (
        path.suffix == ".mdb" and os.path.lexists(path) and not path.is_dir())


def _file_id(path: Path) -> tuple[int, int]:
    data = path / "data.mdb" if path.is_dir() else path
    try:
        st = os.stat(data)
    except OSError as err:
        raise DataError(f"cannot open LMDB {path}: {err}") from err
    return st.st_dev, st.st_ino


def _open(path: Path, pid: int) -> _Handle:
    data = DataFile(path)  # refuses a truncated or non-regular data.mdb before LMDB maps it
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False,
                        subdir=path.is_dir(), max_readers=512)
    except lmdb.Error as err:
        data.close()
        raise DataError(f"cannot open LMDB {path}: {err}; {REENCODE}") from err
    return _Handle(env, data, pid)


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
        """The environment, its data file checked against its meta pages just now (call it
        once per transaction)."""
        pid = os.getpid()
        if self._pid == pid:
            handle = _HANDLES[self._id]
            handle.data.check()
            return handle.env
        file_id = _file_id(self.path)
        handle = _HANDLES.get(file_id)
        if handle is not None and handle.pid != pid:
            # Inherited across fork: closing unmaps only this process's copy (lock=False, so
            # no shared reader table is touched) and lets this process open its own.
            handle.close()
            handle = None
        if handle is None:
            handle = _HANDLES[file_id] = _open(self.path, pid)
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
            handle.close()
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
        """(key, value) of every record in key order; values are only valid inside the loop.
        The file's size is checked again before each record (one fstat): a long scan outlives
        its start."""
        try:
            with self.env().begin(buffers=True) as txn:
                data = _HANDLES[self._id].data
                data.tree().check_all()  # py-lmdb touches each value it hands out
                meta = data.check()
                for raw_key, value in txn.cursor():
                    yield self._decode_key(raw_key), value
                    data.require(meta)
        except lmdb.Error as err:
            raise self.corrupt(err) from err

    def keys(self) -> list[str]:
        """Every key in order, from the tree (py-lmdb's cursor would touch every value)."""
        self.env()
        tree = _HANDLES[self._id].data.tree()
        if tree.checked:
            return [self._decode_key(key) for key, _, _ in tree.heads()]
        try:
            with self.env().begin() as txn:
                return [self._decode_key(k) for k in txn.cursor().iternext(values=False)]
        except lmdb.Error as err:
            raise self.corrupt(err) from err

    def get(self, key: str) -> bytes | None:
        raw = key.encode("utf-8")
        try:
            with self.env().begin() as txn:
                _HANDLES[self._id].data.tree().check_key(raw)  # before py-lmdb touches it
                return txn.get(raw)
        except lmdb.Error as err:
            raise self.corrupt(err, key) from err

    def _decode_key(self, raw: bytes | memoryview) -> str:
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"LMDB {self.path} has a key that is not utf-8 ({bytes(raw)[:40]!r}); "
                            f"{REENCODE}") from err

    def headers(self) -> Iterator[tuple[str, list[str]]]:
        """(key, tensor names) of every record in key order, from each value's first page
        (one pread a record: `items()` would read every page of every value, the whole file,
        just to list the patches)."""
        self.env()
        tree = _HANDLES[self._id].data.tree()
        if not tree.checked:  # empty, or keys not in byte order: the cursor's way
            for key, value in self.items():
                yield key, self.band_names(key, value)
            return
        for raw_key, size, head in tree.heads():
            key = self._decode_key(raw_key)
            if len(head) < size and len(head) < 8 + self._header_length(key, head):
                head = self.get(key)  # a header longer than a page: rare, read it whole
                if head is None:
                    raise self.corrupt(KeyError("listed by the tree, not found by LMDB"), key)
            yield key, self.band_names(key, head)

    def _header_length(self, key: str, value: bytes | memoryview) -> int:
        try:
            return struct.unpack("<Q", bytes(value[:8]))[0]
        except struct.error as err:
            raise self.corrupt(err, key) from err

    def band_names(self, key: str, value: bytes | memoryview) -> list[str]:
        """Tensor names from a safetensors header without decoding the arrays."""
        length = self._header_length(key, value)
        try:
            header = json.loads(bytes(value[8 : 8 + length]))
            return [k for k in header if k != "__metadata__"]
        except (UnicodeDecodeError, ValueError, TypeError, AttributeError) as err:
            raise self.corrupt(err, key) from err
