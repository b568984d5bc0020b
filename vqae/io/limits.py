"""Checks every input file passes before it is read: a regular file (a FIFO would block the
reader forever, /dev/zero never ends), of a size the reader can hold.

DESIGN.md, Safety: memory per input is bounded by what its header declares and the file's
size, checked before reading; non-regular files are refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from vqae.errors import DataError, VqaeError

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def require_regular(path: str | Path, what: str = "input file",
                    error: type[VqaeError] = DataError,
                    fix: str = "pass a plain file") -> os.stat_result:
    """stat() of `path` (links followed) when it is a regular file; else one-line `error`
    ending in `fix`.

    Never opens the file, so a FIFO cannot block and a device is never read."""
    try:
        st = os.stat(path)
    except OSError as err:
        raise error(f"{what} {path} cannot be read: {err.strerror or err}") from err
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        link = f" (a link to {os.path.realpath(path)})" if os.path.islink(path) else ""
        raise error(f"{what} {path} is {kind}{link}, not a regular file; {fix}")
    return st


def open_regular(path: str | Path, what: str = "input file",
                 error: type[VqaeError] = DataError) -> BinaryIO:
    """`path` opened for reading in binary, when it is a regular file; else one-line `error`.

    Checked before the open and again on the open descriptor: a file swapped for a FIFO in
    between cannot block the open (O_NONBLOCK) nor be read."""
    require_regular(path, what, error)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        raise error(f"{what} {path} cannot be read: {err.strerror or err}") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{what} {path} is not a regular file; pass a plain file")
    return os.fdopen(fd, "rb")


def read_small(path: str | Path, limit: int, what: str = "input file",
               error: type[VqaeError] = DataError) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (config files, JSON tables)."""
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise error(f"{what} {path} is {size:,} bytes, more than the {limit:,} "
                        "such a file can be; pass the right file")
        try:
            data = f.read(limit + 1)
        except OSError as err:
            raise error(f"{what} {path} cannot be read: {err.strerror or err}") from err
    if len(data) > limit:  # grew after the check
        raise error(f"{what} {path} is more than the {limit:,} bytes such a file can be")
    return data
