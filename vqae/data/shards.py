"""`--shard i/n`: one of n parts of a dataset, chosen by name hash, and the n LMDBs that
`vqae encode --shard` writes (a Slurm job array, one task a part) read as one dataset.

A patch's part depends on its name alone (SHA-1, as the hash splits), so every task of an
array agrees on it without talking to the others, whatever it lists, and a reader finds a
patch's LMDB from its name: the set costs no per-patch memory beyond the list of names.

A shard set is a folder whose sub-folders are the n LMDBs, each with the manifest that
`vqae encode --shard i/n` wrote (complete, shard [i, n]): pass the folder as the data path.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vqae.data.lmdb_store import LmdbStore, is_lmdb
from vqae.errors import DataError
from vqae.outputs import read_manifest

MAX_SHARDS = 4096


@dataclass(frozen=True)
class Shard:
    index: int  # 1..count
    count: int

    def holds(self, name: str) -> bool:
        return shard_of(name, self.count) == self.index

    def describe(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(name: str, count: int) -> int:
    """The part (1..count) that patch `name` belongs to."""
    h = int.from_bytes(hashlib.sha1(name.encode("utf-8", "surrogateescape")).digest()[8:16], "big")
    return h % count + 1


def parse_shard(text: str) -> Shard:
    """`i/n` with 1 <= i <= n <= MAX_SHARDS (Slurm: --array=1-n and $SLURM_ARRAY_TASK_ID/n)."""
    parts = text.split("/")
    try:
        index, count = (int(p) for p in parts) if len(parts) == 2 else (0, 0)
    except ValueError:
        index = count = 0
    if not 1 <= index <= count <= MAX_SHARDS:
        raise ValueError(f"--shard {text[:40]!r}: give i/n with 1 <= i <= n <= {MAX_SHARDS}, "
                         "e.g. --shard $SLURM_ARRAY_TASK_ID/4 in an array --array=1-4")
    return Shard(index, count)


def pick(names: list[str], shard: Shard | None) -> list[str]:
    return names if shard is None else [n for n in names if shard.holds(n)]


def is_shard_set(path: Path) -> bool:
    """A folder (not an LMDB) whose sub-folders are LMDBs; stops at the first that is not
    (a GeoTIFF tree's root may hold 549,488 patch folders)."""
    if not path.is_dir() or is_lmdb(path):
        return False
    found = False
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir():
                if not is_lmdb(entry.path):
                    return False
                found = True
    return found


def _shard_of_lmdb(path: Path) -> Shard:
    fix = "re-encode it with `vqae encode --shard i/n`"
    manifest = read_manifest(path, fix=fix) or {}
    got = manifest.get("shard")
    if manifest.get("command") != "encode" or not (
            isinstance(got, list) and len(got) == 2 and all(type(v) is int for v in got)
            and 1 <= got[0] <= got[1] <= MAX_SHARDS):
        raise DataError(f"{path} is in a shard set but its manifest names no shard of "
                        f"`vqae encode --shard i/n`; {fix}, or pass it alone as the data path")
    if manifest.get("complete") is not True:
        raise DataError(f"shard {got[0]}/{got[1]} at {path} is incomplete (its encode was "
                        "interrupted); finish it with `vqae encode --shard ... --resume`")
    return Shard(*got)


class ShardedStore:
    """The LMDBs of a shard set as one read-only store: what LmdbDataset and the name scan
    use of an LmdbStore (get, headers, band_names, corrupt, close), routed by name hash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        found: dict[int, tuple[Path, Shard]] = {}
        counts = set()
        for sub in sorted(p for p in self.path.iterdir() if p.is_dir()):
            shard = _shard_of_lmdb(sub)
            counts.add(shard.count)
            if shard.index in found:
                raise DataError(f"{self.path} holds shard {shard.describe()} twice "
                                f"({found[shard.index][0].name} and {sub.name}); keep one")
            found[shard.index] = (sub, shard)
        if len(counts) != 1:
            raise DataError(f"{self.path} mixes shards of different splits (n = "
                            f"{', '.join(map(str, sorted(counts)))}); keep the LMDBs of one run")
        self.count = counts.pop()
        missing = sorted(set(range(1, self.count + 1)) - set(found))
        if missing:
            raise DataError(f"{self.path} lacks shard(s) {', '.join(map(str, missing[:5]))} of "
                            f"{self.count}; encode them (--shard i/{self.count}) first")
        self.stores = [LmdbStore(found[i][0]) for i in range(1, self.count + 1)]

    def store_for(self, key: str) -> LmdbStore:
        return self.stores[shard_of(key, self.count) - 1]

    def get(self, key: str) -> bytes | None:
        return self.store_for(key).get(key)

    def headers(self) -> Iterator[tuple[str, list[str]]]:
        """Every shard's (key, tensor names) merged in key order; a key in the wrong shard is
        refused, since it could not be found by its name."""
        yield from heapq.merge(*(self._checked(i, s) for i, s in enumerate(self.stores, 1)))

    def _checked(self, index: int, store: LmdbStore) -> Iterator[tuple[str, list[str]]]:
        for key, bands in store.headers():
            if shard_of(key, self.count) != index:
                raise DataError(f"{store.path} (shard {index}/{self.count}) holds {key!r}, "
                                f"which belongs to shard {shard_of(key, self.count)}; "
                                "re-encode the set with one --shard n")
            yield key, bands

    def band_names(self, key: str, value: bytes | memoryview) -> list[str]:
        return self.store_for(key).band_names(key, value)

    def corrupt(self, err: Exception, key: str | None = None) -> DataError:
        store = self.stores[0] if key is None else self.store_for(key)
        return store.corrupt(err, key)

    def close(self) -> None:
        for store in self.stores:
            store.close()

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path) -> LmdbStore | ShardedStore:
    path = Path(path)
    return ShardedStore(path) if is_shard_set(path) else LmdbStore(path)
