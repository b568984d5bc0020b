"""LMDB's B-tree, read with pread, to check a record before py-lmdb hands it out.

py-lmdb touches every page of a value when it returns one (its "preload"), and LMDB trusts
the size a leaf node claims: a crafted node whose value runs past the end of data.mdb kills
the process with SIGBUS before any check of ours could look at the value. So a record is
found here first, the way LMDB finds it (root page, branch pages by key, the leaf), and its
extent is checked against the file: an inline value must fit its page, a large one's overflow
pages must exist and be as many as its size needs. Layout of LMDB 0.9 on 64-bit builds; a
database whose keys do not sort as plain bytes (DUPSORT, INTEGERKEY, REVERSEKEY) is not
checked (rico-hdl and vqae write none).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from vqae.errors import DataError

PAGE_HEADER = 16  # pgno u64, pad u16, flags u16, lower u16, upper u16 (overflow: pages u32)
NODE = struct.Struct("<HHHH")  # lo, hi, flags, key size
P_BRANCH, P_LEAF, P_OVERFLOW = 0x01, 0x02, 0x04
F_BIGDATA = 0x01
NO_ROOT = 0xFFFFFFFFFFFFFFFF  # an empty database
UNSORTED = 0x02 | 0x04 | 0x08  # REVERSEKEY, DUPSORT, INTEGERKEY: not byte order
MAX_DEPTH = 64


class Tree:
    """The main database of one data.mdb at one meta page (root, depth, last page)."""

    def __init__(self, fd: int, page_size: int, last_page: int, root: int, depth: int,
                 flags: int, where: str, fix: str):
        self.fd, self.psize, self.last = fd, page_size, last_page
        self.root, self.depth, self.where, self.fix = root, depth, where, fix
        self.checked = not flags & UNSORTED and root != NO_ROOT
        self.key: bytes | None = None  # the key being looked up, for the message

    def _damaged(self, what: str) -> DataError:
        at = "" if self.key is None else f" key {self.key.decode('utf-8', 'replace')!r}"
        return DataError(f"{self.where}{at}: {what}; the file is damaged; {self.fix}")

    def _page(self, pgno: int, kind: int) -> bytes:
        if pgno > self.last:
            raise self._damaged(f"a node points to page {pgno}, past its last page {self.last}")
        raw = os.pread(self.fd, self.psize, pgno * self.psize)
        if len(raw) < self.psize:  # the file shrank under us
            raise self._damaged(f"page {pgno} lies past the end of the file")
        (own, flags) = struct.unpack_from("<Q2xH", raw)
        if own != pgno or not flags & kind:
            raise self._damaged(f"page {pgno} is not the page its parent names")
        return raw

    def _nodes(self, raw: bytes, pgno: int) -> list[int]:
        (lower,) = struct.unpack_from("<H", raw, 12)
        count = (lower - PAGE_HEADER) // 2
        if lower < PAGE_HEADER or count * 2 + PAGE_HEADER > self.psize:
            raise self._damaged(f"page {pgno} has an impossible node count")
        offsets = struct.unpack_from(f"<{count}H", raw, PAGE_HEADER)
        if any(not PAGE_HEADER + 2 * count <= o <= self.psize - NODE.size for o in offsets):
            raise self._damaged(f"page {pgno} has a node outside the page")
        return list(offsets)

    def _key(self, raw: bytes, off: int) -> bytes:
        ksize = NODE.unpack_from(raw, off)[3]
        start = off + NODE.size
        if start + ksize > self.psize:
            raise self._damaged("a key runs past its page")
        return raw[start : start + ksize]

    def _child(self, raw: bytes, off: int) -> int:
        lo, hi, flags, _ = NODE.unpack_from(raw, off)
        return lo | hi << 16 | flags << 32  # a branch node keeps its child's number there

    def _value(self, raw: bytes, off: int, pgno: int) -> tuple[int, bytes]:
        """(size, the value's bytes in its leaf or first overflow page), its extent checked."""
        lo, hi, flags, ksize = NODE.unpack_from(raw, off)
        size, data = lo | hi << 16, off + NODE.size + ksize
        if not flags & F_BIGDATA:
            if data + size > self.psize:
                raise self._damaged(f"a record on page {pgno} runs past its page")
            return size, raw[data : data + size]
        if data + 8 > self.psize:
            raise self._damaged(f"a record on page {pgno} runs past its page")
        (first,) = struct.unpack_from("<Q", raw, data)
        needed = -(-(PAGE_HEADER + size) // self.psize)  # pages of the value, header included
        if first + needed - 1 > self.last:
            raise self._damaged(f"a record claims {size:,} bytes, past the end of the file")
        page = self._page(first, P_OVERFLOW)
        (pages,) = struct.unpack_from("<I", page, 12)
        if pages < needed:
            raise self._damaged(f"a record claims {size:,} bytes on {pages} overflow page(s)")
        return size, page[PAGE_HEADER : PAGE_HEADER + size]

    def check_key(self, key: bytes) -> None:
        """Check the record of `key` (if any) before LMDB reads it."""
        if not self.checked:
            return
        pgno, self.key = self.root, key
        for _ in range(MAX_DEPTH):
            raw = self._page(pgno, P_BRANCH | P_LEAF)
            offsets = self._nodes(raw, pgno)
            if struct.unpack_from("<H", raw, 10)[0] & P_LEAF:
                for off in offsets:
                    if self._key(raw, off) == key:
                        self._value(raw, off, pgno)
                return
            # the last branch node whose key is <= key (the first node's key stands for -inf)
            chosen = offsets[0] if offsets else None
            for off in offsets[1:]:
                if self._key(raw, off) > key:
                    break
                chosen = off
            if chosen is None:
                raise self._damaged(f"branch page {pgno} is empty")
            pgno = self._child(raw, chosen)
        raise self._damaged("the tree is deeper than any LMDB")

    def check_all(self) -> None:
        """Check every record (before a scan of the whole database)."""
        for _ in self.heads():
            pass

    def heads(self) -> Iterator[tuple[bytes, int, bytes]]:
        """(key, value size, the value's first bytes) of every record in key order, each
        checked as `check_key` does: one page read per large value (its first overflow page,
        up to a page of bytes), where py-lmdb's cursor would touch every page of every value
        (~40 per BigEarthNet patch) and so read the whole file."""
        if not self.checked:
            return
        todo, seen, last = [self.root], set(), None
        while todo:
            pgno = todo.pop()
            if pgno in seen:
                raise self._damaged(f"page {pgno} is reached twice")
            seen.add(pgno)
            raw = self._page(pgno, P_BRANCH | P_LEAF)
            offsets = self._nodes(raw, pgno)
            if struct.unpack_from("<H", raw, 10)[0] & P_LEAF:
                for off in offsets:  # a page's nodes are in key order
                    key = self.key = self._key(raw, off)  # named in any error
                    if last is not None and key <= last:  # LMDB's binary search would miss it
                        raise self._damaged(f"the keys on page {pgno} are out of order")
                    last = key
                    yield key, *self._value(raw, off, pgno)
            else:  # children in key order: the first one is popped next
                todo.extend(self._child(raw, off) for off in reversed(offsets))
