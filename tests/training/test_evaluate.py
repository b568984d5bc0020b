"""`vqae evaluate --out`: which files it may replace (the whole command: tests/training/test_train.py)."""

import json
import os

import pytest

from vqae.errors import DataError
from vqae.training.evaluate import check_out


def test_out_replaces_only_an_earlier_result(tmp_path):
    ckpt, data = tmp_path / "model.pt", tmp_path / "tiles"
    ckpt.write_bytes(b"weights")
    data.mkdir()
    inputs = [str(ckpt), str(data), None]
    check_out(str(tmp_path / "new.json"), inputs)
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({"written_by": "vqae evaluate", "psnr": 40.0}))
    check_out(str(earlier), inputs)
    os.link(ckpt, tmp_path / "hard.pt")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "list.json").write_text('[{"written_by": "vqae evaluate"}]')
    (tmp_path / "big.json").write_bytes(b" " * (16 << 20) + b"{}")
    refused = {ckpt: "is the input", tmp_path / "hard.pt": "is the input",
               data: "is a folder", data / "m.json": "lies inside",
               tmp_path / "fifo": "not an earlier", tmp_path / "dangling": "not an earlier",
               tmp_path / "list.json": "not an earlier", tmp_path / "big.json": "not an earlier"}
    for out, why in refused.items():
        with pytest.raises(DataError, match=why) as err:
            check_out(str(out), inputs)
        assert str(out) in str(err.value) and "\n" not in str(err.value)
