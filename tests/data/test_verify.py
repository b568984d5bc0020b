"""`vqae verify-encoded`: every kind of difference is reported and fails the run."""

from __future__ import annotations

import lmdb
import numpy as np
from safetensors.numpy import save as st_save

from tests.data.encode_helpers import read_lmdb, run_cli
from tests.fakes import write_fake_tree


def _encoded(tmp_path):
    write_fake_tree(tmp_path / "s2", n=3)
    out = tmp_path / "out"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out) == 0
    return out, read_lmdb(out)


def _put(out, key: str, bands: dict | None) -> None:
    env = lmdb.open(str(out), subdir=True)
    with env.begin(write=True) as txn:
        if bands is None:
            txn.delete(key.encode())
        else:
            txn.put(key.encode(), st_save(bands))
    env.close()


def test_identical_passes(tmp_path, capsys):
    out, _ = _encoded(tmp_path)
    assert run_cli("verify-encoded", out, "--against", tmp_path / "s2", workers=2) == 0
    assert "OK: identical" in capsys.readouterr().out


def test_every_difference_is_reported(tmp_path, capsys):
    out, stored = _encoded(tmp_path)
    a, b, c = sorted(stored)
    changed = dict(stored[a])
    changed["B04"] = changed["B04"].copy()
    changed["B04"][0, :5] += 1  # 5 values off
    changed["B01"] = changed["B01"].astype(np.int32)  # dtype
    changed["B09"] = np.zeros((10, 10), np.uint16)  # shape
    del changed["B12"]
    changed["B10"] = np.zeros((20, 20), np.uint16)  # a band no source has
    _put(out, a, changed)
    _put(out, b, None)  # missing key
    _put(out, "stray_patch", stored[c])  # extra key
    assert run_cli("verify-encoded", out, "--against", tmp_path / "s2") == 1
    text = capsys.readouterr().out
    for expected in (f"{a} B04: 5 of 14400 values differ", f"{a} B01: dtype int32",
                     f"{a} B09: shape (10, 10)", f"{a}: bands missing from the LMDB: B12",
                     f"{a}: bands in the LMDB but not in the source: B10",
                     f"{b}: missing from the LMDB", "stray_patch: in the LMDB but in no source",
                     "FAILED"):
        assert expected in text, expected


def test_not_an_lmdb_or_no_source(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_fake_tree(tmp_path / "s2", n=1)
    assert run_cli("verify-encoded", tmp_path / "empty", "--against", tmp_path / "s2") == 2
    assert "holds no LMDB" in capsys.readouterr().err
    assert run_cli("verify-encoded", tmp_path / "empty", "--against", tmp_path / "empty") == 2
    assert "SPECTRAL_IMAGE" in capsys.readouterr().err


def test_rico_hdl_reference_verifies_against_its_tiffs(shared_data, capsys):
    ref = shared_data / "rico-hdl"
    rc = run_cli("verify-encoded", ref / "BigEarthNet_LMDB", "--against", ref / "BigEarthNet")
    assert rc == 0, capsys.readouterr().out
