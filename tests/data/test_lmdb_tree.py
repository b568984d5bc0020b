"""vqae.data.lmdb_tree: the B-tree walk that checks a record before py-lmdb touches it."""

from __future__ import annotations

import struct
from pathlib import Path

import lmdb
import pytest

from vqae.data.lmdb_store import LmdbStore
from vqae.errors import DataError


def many_records(folder: Path) -> dict[bytes, bytes]:
    """3000 keys of several lengths (a tree of branch pages), small values inline and large
    ones on overflow pages."""
    records = {f"{i:05d}-{'x' * (i % 37)}".encode(): bytes([i % 251]) * (9000 if i % 7 == 0
                                                                         else i % 300)
               for i in range(3000)}
    env = lmdb.open(str(folder), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for key, value in records.items():
            txn.put(key, value)
    env.close()
    return records


def test_every_record_of_a_deep_tree_passes_and_reads_back(tmp_path):
    records = many_records(tmp_path / "db")
    with LmdbStore(tmp_path / "db") as store:
        from vqae.data.lmdb_store import _HANDLES

        store.env()  # opens the handle
        tree = _HANDLES[store._id].data.tree()
        assert tree.depth >= 2 and tree.checked
        tree.check_all()
        for key in list(records)[::97]:
            tree.check_key(key)
            assert store.get(key.decode()) == records[key]
        tree.check_key(b"absent")  # not found: nothing to check
        assert dict((k.encode(), bytes(v)) for k, v in store.items()) == records


def patch_node(folder: Path, key: bytes, lo: int, hi: int) -> None:
    data = bytearray((folder / "data.mdb").read_bytes())
    at = data.find(key)
    struct.pack_into("<HH", data, at - 8, lo, hi)
    (folder / "data.mdb").write_bytes(bytes(data))


@pytest.mark.parametrize("size", [(0xFFF0, 0x7FFF), (0x0000, 0x0001)])
def test_a_large_record_claiming_more_than_its_pages_is_refused(tmp_path, size):
    records = many_records(tmp_path / "db")
    big = next(k for k, v in records.items() if len(v) == 9000)
    patch_node(tmp_path / "db", big, *size)  # 2 GB past the file / 65536 bytes on 3 pages
    with LmdbStore(tmp_path / "db") as store:
        with pytest.raises(DataError, match="claims"):
            store.get(big.decode())
        with pytest.raises(DataError, match="claims"):
            list(store.items())


def test_a_branch_pointing_past_the_last_page_is_refused(tmp_path):
    from vqae.data.lmdb_store import DataFile

    many_records(tmp_path / "db")
    meta = DataFile(tmp_path / "db").check()
    data = bytearray((tmp_path / "db" / "data.mdb").read_bytes())
    root = meta.root * meta.page_size  # a branch page: the tree is deeper than one page
    assert struct.unpack_from("<H", data, root + 10)[0] & 0x01
    (off,) = struct.unpack_from("<H", data, root + 16)
    struct.pack_into("<HHH", data, root + off, 0xFFFF, 0xFFFF, 0x00FF)  # its first child
    (tmp_path / "db" / "data.mdb").write_bytes(bytes(data))
    with LmdbStore(tmp_path / "db") as store:
        with pytest.raises(DataError, match="past its last page|not the page"):
            list(store.items())


def _swap_first_two_nodes(folder: Path) -> None:
    """Swap the first two node pointers of the (only) leaf page: keys out of order."""
    f = folder / "data.mdb"
    raw = bytearray(f.read_bytes())
    psize = 4096
    for pgno in range(2, len(raw) // psize):
        flags = struct.unpack_from("<H", raw, pgno * psize + 10)[0]
        if flags & 0x02:  # the leaf
            a, b = struct.unpack_from("<HH", raw, pgno * psize + 16)
            struct.pack_into("<HH", raw, pgno * psize + 16, b, a)
            break
    f.write_bytes(raw)


def test_listing_refuses_keys_out_of_order_in_one_line(tmp_path):
    """LMDB finds a key by binary search: a leaf whose keys are out of order lists keys that
    `get` cannot find. The listing says the file is damaged (no traceback later on)."""
    import json

    header = json.dumps({"B02": {"dtype": "U16", "shape": [1], "data_offsets": [0, 2]},
                         "__metadata__": {"pad": "x" * 6000}}).encode()  # a header > a page
    value = struct.pack("<Q", len(header)) + header + b"\0\0"
    env = lmdb.open(str(tmp_path / "db"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        txn.put(b"k1", value)
        txn.put(b"k2", value)
    env.close()
    with LmdbStore(tmp_path / "db") as store:
        assert [k for k, _ in store.headers()] == ["k1", "k2"] == store.keys()
    _swap_first_two_nodes(tmp_path / "db")
    with LmdbStore(tmp_path / "db") as store:
        for listing in (lambda: list(store.headers()), store.keys):
            with pytest.raises(DataError, match="out of order; the file is damaged"):
                listing()
