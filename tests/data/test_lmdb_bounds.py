"""A truncated or non-regular data.mdb is one line naming the file, never SIGBUS (rc 135):
LmdbStore checks the file against LMDB's own meta pages before mapping it, and before each
read transaction. Everything that could crash runs in a child process."""

from __future__ import annotations

import os
import textwrap

import pytest

from tests.data.encode_helpers import run_cli
from tests.fakes import write_fake_tree
from tests.hostile import one_line, run_python, run_vqae, truncated_copy

PAGE = 4096


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    """A real LMDB written by `vqae encode` (4 patches, ~160 pages)."""
    root = tmp_path_factory.mktemp("lmdb-src")
    write_fake_tree(root / "tiffs", n=4)
    assert run_cli("encode", "--bigearthnet-s2-root", root / "tiffs", root / "out.lmdb") == 0
    return root / "out.lmdb"


def cut_points(size: int) -> dict[str, int]:
    return {"empty": 0, "in-first-meta": 100, "one-page": PAGE, "metas-only": 2 * PAGE,
            "half": size // 2, "last-page-short": size - PAGE}


@pytest.mark.parametrize("cut", ["empty", "in-first-meta", "one-page", "metas-only", "half",
                                 "last-page-short"])
def test_truncated_data_mdb_is_one_line(encoded, tmp_path, cut):
    size = (encoded / "data.mdb").stat().st_size
    lmdb = truncated_copy(encoded, tmp_path / "cut.lmdb", cut_points(size)[cut])
    proc = run_vqae("stats", "--data", lmdb, "--out", tmp_path / "s.json")
    message = one_line(proc, "stats")
    assert str(lmdb) in message and ("truncated" in message or "meta page" in message)
    assert "vqae encode" in message  # the fix


def test_truncation_after_open_is_one_line(encoded, tmp_path):
    lmdb = truncated_copy(encoded, tmp_path / "late.lmdb", (encoded / "data.mdb").stat().st_size)
    code = textwrap.dedent(f"""
        import os, sys
        from vqae.data.lmdb_store import LmdbStore
        from vqae.errors import DataError
        data = {str(lmdb / "data.mdb")!r}
        store = LmdbStore({str(lmdb)!r})
        keys = store.keys()
        size = os.path.getsize(data)
        whole = open(data, "rb").read()
        os.truncate(data, size // 2)
        try:
            store.get(keys[-1])
        except DataError as err:
            print("get refused:", err)
        with open(data, "r+b") as f:  # restored and read from the start ...
            f.write(whole)
        try:
            for i, (key, value) in enumerate(store.items()):
                bytes(value)
                os.truncate(data, {2 * PAGE})  # ... then cut under the scan
        except DataError as err:
            print("scan refused after", i + 1, "record:", err)
        """)
    proc = run_python(code)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "get refused:" in proc.stdout and "truncated" in proc.stdout
    assert "scan refused after 1 record:" in proc.stdout


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_non_regular_data_mdb_is_refused(tmp_path, kind):
    lmdb = tmp_path / "x.lmdb"
    lmdb.mkdir()
    if kind == "fifo":
        os.mkfifo(lmdb / "data.mdb")
    else:
        (lmdb / "data.mdb").symlink_to("/dev/zero")
    message = one_line(run_vqae("stats", "--data", lmdb, "--out", tmp_path / "s.json",
                                timeout=60), "stats")
    assert str(lmdb / "data.mdb") in message and "not a regular file" in message


def test_intact_lmdb_still_reads(encoded):
    from vqae.data.lmdb_store import DataFile, LmdbStore

    data = DataFile(encoded)
    meta = data.check()
    data.close()
    assert meta.page_size == PAGE and meta.needed == (encoded / "data.mdb").stat().st_size
    with LmdbStore(encoded) as store:
        assert len(store.keys()) == 4
