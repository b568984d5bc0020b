"""Small input files beside the data (stats JSON, v1 split CSVs): regular files only, bounded,
UTF-8, the right shape; each problem is a DataError naming the file."""

from __future__ import annotations

import os

import pytest

from vqae.data.splits import read_split_table
from vqae.data.stats import load_stats
from vqae.errors import DataError


@pytest.mark.parametrize("kind, fragment", [
    ("list", "holds [1, 2], not band -> {mean, std}"),
    ("fifo", "is a FIFO (named pipe), not a regular file"),
    ("dev-zero", "is a character device (a link to /dev/zero), not a regular file"),
    ("huge", "bytes, more than the 1,048,576"),
])
def test_bad_stats_file_names_it(tmp_path, kind, fragment):
    path = tmp_path / "stats.json"
    if kind == "list":
        path.write_text("[1, 2]")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.write_text(" " * (2 << 20) + "{}")
    with pytest.raises(DataError, match=f"stats file {path}") as exc:
        load_stats(str(path), ["B02"])
    assert fragment in str(exc.value)


def test_v1_split_csvs_must_be_utf8_regular_files(tmp_path):
    for name in ("train.csv", "val.csv", "test.csv"):
        (tmp_path / name).write_text("patch_a\n")
    (tmp_path / "val.csv").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="val.csv is not UTF-8 text"):
        read_split_table(str(tmp_path))
    (tmp_path / "val.csv").unlink()
    os.mkfifo(tmp_path / "val.csv")
    with pytest.raises(DataError, match="val.csv is a FIFO"):
        read_split_table(str(tmp_path))
