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
import json
import os
import re
import resource
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from vqae.data.lmdb_store import LmdbStore, is_lmdb
from vqae.errors import DataError
from vqae.io.outputs import read_manifest

MAX_SHARDS = 4096
SPARE_FILES = 64  # open files left for the rest of the run (loader pipes, checkpoints)


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
    found = re.fullmatch(r"([0-9]{1,5})/([0-9]{1,5})", text)  # ASCII digits only
    index, count = (int(found[1]), int(found[2])) if found else (0, 0)
    if not 1 <= index <= count <= MAX_SHARDS:
        raise ValueError(f"--shard {text[:40]!r}: give i/n with 1 <= i <= n <= {MAX_SHARDS}, "
                         "e.g. --shard $SLURM_ARRAY_TASK_ID/4 in an array --array=1-4")
    return Shard(index, count)


def pick(names: list[str], shard: Shard | None) -> list[str]:
    return names if shard is None else [n for n in names if shard.holds(n)]


def _parts(path: Path) -> Iterator[os.DirEntry]:
    """The sub-folders of a set, hidden ones left out (an interrupted --overwrite's temporary
    copy, .ipynb_checkpoints)."""
    with os.scandir(path) as entries:
        yield from (e for e in entries if e.is_dir() and not e.name.startswith("."))


def is_shard_set(path: Path) -> bool:
    """A folder (not an LMDB) whose sub-folders are LMDBs, one at least with the manifest of
    `vqae encode --shard`; stops at the first that is not an LMDB (a GeoTIFF tree's root may
    hold 549,488 patch folders)."""
    if not path.is_dir() or is_lmdb(path):
        return False
    sharded = False
    for entry in _parts(path):
        if not is_lmdb(entry.path):
            return False
        try:
            sharded = sharded or "shard" in (read_manifest(Path(entry.path)) or {})
        except DataError:
            sharded = True  # a damaged manifest in a folder of LMDBs: say so when opened
    return sharded


def _shard_of_lmdb(path: Path) -> tuple[Shard, object]:
    """(its shard, the patches its run listed) from a part's manifest."""
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
    return Shard(*got), manifest.get("source")


def part_of(path: Path) -> Shard | None:
    """The shard an LMDB written by `vqae encode --shard` holds, None for a whole one."""
    if "shard" not in (read_manifest(path, fix="pass the OUT of `vqae encode`") or {}):
        return None
    return _shard_of_lmdb(path)[0]


class ShardedStore:
    """The LMDBs of a shard set as one read-only store: what LmdbDataset and the name scan
    use of an LmdbStore (get, headers, band_names, corrupt, close), routed by name hash."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        found: dict[int, tuple[Path, Shard]] = {}
        counts, sources = set(), set()
        for sub in sorted(Path(e.path) for e in _parts(self.path)):
            shard, encoded_from = _shard_of_lmdb(sub)
            counts.add(shard.count)
            sources.add(json.dumps(encoded_from, sort_keys=True))
            if shard.index in found:
                raise DataError(f"{self.path} holds shard {shard.describe()} twice "
                                f"({found[shard.index][0].name} and {sub.name}); keep one")
            found[shard.index] = (sub, shard)
        if len(counts) != 1:
            raise DataError(f"{self.path} mixes shards of different splits (n = "
                            f"{', '.join(map(str, sorted(counts)))}); keep the LMDBs of one run")
        self.count = counts.pop()
        if len(sources) > 1:
            raise DataError(f"{self.path} holds parts of different encodes (their runs listed "
                            "other patches: \"source\" in each part's manifest.json); keep the "
                            "LMDBs of one run, or encode the missing parts again")
        missing = sorted(set(range(1, self.count + 1)) - set(found))
        if missing:
            raise DataError(f"{self.path} lacks shard(s) {', '.join(map(str, missing[:5]))} of "
                            f"{self.count}; encode them (--shard i/{self.count}) first")
        _allow_files(self.count, self.path)
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


def _allow_files(parts: int, path: Path) -> None:
    """Raise this process's soft limit on open files (up to the hard limit) so that a set of
    n parts can hold its 2n files open (each data.mdb, mapped and for its checks) beside what
    is open already."""
    needed = len(os.listdir("/proc/self/fd")) + 2 * parts + SPARE_FILES \
        if os.path.isdir("/proc/self/fd") else 2 * parts + 256
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise DataError(f"{path} has {parts} parts, which need {needed} open files; the "
                            f"limit here is {hard} (ulimit -Hn): encode fewer parts")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def open_store(path: str | Path) -> LmdbStore | ShardedStore:
    path = Path(path)
    return ShardedStore(path) if is_shard_set(path) else LmdbStore(path)
