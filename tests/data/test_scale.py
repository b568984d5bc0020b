"""Costs that must not grow with the dataset (issue 19), at a size CI affords: 2,000 patches.

Each test asserts a count (page faults, bytes of memory, records read), never a time."""

import tracemalloc

import lmdb
import numpy as np
import pytest
import safetensors.numpy

from vqae.data.bands import S2_BANDS
from vqae.data.discover import find_patches
from vqae.data.encode import IN_FLIGHT, chunk_mapper
from vqae.data.lmdb_store import LmdbStore
from vqae.data.readers import lmdb_patch_names

N = 2000


def mapped_file_bytes() -> int:
    """RssFile: pages of files mapped into this process and resident (LMDB's data.mdb)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) << 10 for line in f if line.startswith("RssFile:"))


@pytest.fixture(scope="module")
def big_lmdb(tmp_path_factory):
    """2,000 S2 records of 8 pages each (one 120x120 uint16 band), 20 S1 records, and one
    whose safetensors header is longer than a page."""
    path = tmp_path_factory.mktemp("scale") / "big.lmdb"
    env = lmdb.open(str(path), map_size=1 << 30)
    band = np.zeros((120, 120), np.uint16)
    with env.begin(write=True) as txn:
        for i in range(N):
            txn.put(f"S2_patch_{i:05d}".encode(), safetensors.numpy.save({"B02": band + i}))
        for i in range(20):
            txn.put(f"S1_patch_{i:05d}".encode(),
                    safetensors.numpy.save({"VV": np.zeros((120, 120), np.float32)}))
        long = {"B02": band, **{f"x{j:04d}_" + "m" * 40: np.zeros(1, np.uint8) for j in range(200)}}
        txn.put(b"S2_zlong", safetensors.numpy.save(long))
    env.close()
    return path


def test_listing_patches_reads_no_value_pages(big_lmdb):
    """py-lmdb's cursor touches every page of every value it hands out: listing 549,488
    patches read the whole 88 GB file. The names come from each value's first page (pread),
    so listing maps in none of the 58 MB of values (the old scan mapped all of them)."""
    with LmdbStore(big_lmdb) as store:
        lmdb_patch_names(store, "B02")  # warm up: imports, allocator
    with LmdbStore(big_lmdb) as store:  # the last store closed: a fresh mapping
        before = mapped_file_bytes()
        names = lmdb_patch_names(store, "B02")
        mapped = mapped_file_bytes() - before
        expected = sorted(k for k, v in store.items() if "B02" in store.band_names(k, v))
        assert mapped_file_bytes() - before > 50 << 20  # what the old way maps: it can fail
    assert names == expected and len(names) == N + 1 and "S2_zlong" in names
    assert mapped < 2 << 20, f"{mapped:,} bytes of data.mdb mapped to list {N} patches"


def test_listing_sees_s1_keys_and_long_headers(big_lmdb):
    with LmdbStore(big_lmdb) as store:
        assert lmdb_patch_names(store, "VV") == [f"S1_patch_{i:05d}" for i in range(20)]
        headers = dict(store.headers())
    assert "x0199_" + "m" * 40 in headers["S2_zlong"] and headers["S1_patch_00000"] == ["VV"]


def test_a_tree_of_patches_costs_a_few_hundred_bytes_each(tmp_path):
    """find_patches keeps an entry per patch for the whole run (encode, verify, GeoTIFF
    training): a dict of 12 Paths each took ~4 KB, 2.2 GB at 549,488 patches."""
    for i in range(N):
        folder = tmp_path / f"tile{i // 500}" / f"S2A_MSIL2A_20170613T101031_{i:05d}_{i % 97}"
        folder.mkdir(parents=True)
        for band in S2_BANDS:
            (folder / f"{folder.name}_{band}.tif").touch()
    tracemalloc.start()
    try:
        found = find_patches(tmp_path)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(found) == N and sorted(found["S2A_MSIL2A_20170613T101031_00007_7"].files) == \
        sorted(S2_BANDS)
    assert held / N < 600, f"{held / N:.0f} bytes per patch"


def _echo(chunk: list[int]) -> list[int]:
    return chunk


def test_encode_workers_take_chunks_as_the_writer_needs_them():
    """An executor's map submits every chunk at once and keeps each result until taken: with
    a writer slower than the readers, every patch read would wait in memory."""
    drawn = 0

    def chunks():
        nonlocal drawn
        for i in range(N // 8):
            drawn += 1
            yield [i]

    with chunk_mapper(2) as imap:
        for taken, result in enumerate(imap(_echo, chunks()), 1):
            assert result == [taken - 1]
            assert drawn <= taken + IN_FLIGHT * 2, f"{drawn} chunks drawn, {taken} taken"
    assert taken == N // 8


def test_resuming_a_compress_report_holds_names_not_rows(tmp_path):
    """`vqae compress --resume` rewrites patches.csv to the patches OUT holds: streamed, it
    holds a set of names (~250 bytes a patch), where reading every row took ~780."""
    import csv

    from vqae.codec.store import REPORT_COLUMNS, PatchReport

    names = [f"S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_{i:05d}_{i % 97}" for i in range(N)]
    path = tmp_path / "patches.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(REPORT_COLUMNS)
        for name in [*names, names[5], "not-in-out"]:
            writer.writerow([name, 4, "gain", 1234, "0.0123", "34.5678"])
        writer.writerow(["torn", 4])
    present = set(names)
    tracemalloc.start()
    try:
        kept = PatchReport.keep(path, present)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert kept == present
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(REPORT_COLUMNS) and [r[0] for r in rows[1:]] == names
    assert peak / N < 400, f"{peak / N:.0f} bytes per patch"


def test_encode_lists_the_tree_after_its_readers_fork(tmp_path):
    """Workers forked after a 549,488-patch job list was built would each copy it page by page
    as they allocate; `vqae encode` lists the tree only once its two readers exist."""
    import os
    from pathlib import Path

    from tests.fakes import write_fake_tree
    from vqae.data.encode import EncodeOptions, collect_jobs, encode

    write_fake_tree(tmp_path / "s2", n=3)
    seen = []

    def listing():
        kids = [c for t in os.listdir("/proc/self/task")
                for c in Path(f"/proc/self/task/{t}/children").read_text().split()]
        seen.append(len(kids))
        return collect_jobs(tmp_path / "s2")

    report = encode(listing, tmp_path / "out", EncodeOptions(workers=2, progress=False))
    assert seen == [2] and report.written == 3
