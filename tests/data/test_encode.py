"""`vqae encode`: rico-hdl parity, values, resume after SIGKILL, bad input, OUT safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
import rasterio
import torch

from tests.data.encode_helpers import (
    assert_same,
    break_patch,
    one_line_error,
    read_lmdb,
    run_cli,
)
from tests.fakes import patch_names, write_fake_s1_tree, write_fake_tree, write_tiff
from vqae.data.bands import HYSPECNET_BANDS
from vqae.data.encode import EncodeOptions, collect_jobs, encode, skipped_path

PATCH = patch_names(3)[1]  # the patch the bad-input tests damage


# --- real data ------------------------------------------------------------------------------


def test_matches_rico_hdl_reference(shared_data, tmp_path):
    ref = shared_data / "rico-hdl"
    roots = ref / "BigEarthNet"
    rc = run_cli("encode", "--bigearthnet-s1-root", roots / "BigEarthNet-S1",
                 "--bigearthnet-s2-root", roots / "BigEarthNet-S2", tmp_path / "out", workers=2)
    assert rc == 0
    assert_same(read_lmdb(tmp_path / "out"), read_lmdb(ref / "BigEarthNet_LMDB"))


def test_hyspecnet_bands_equal_spectral_image(shared_data, tmp_path):
    root = shared_data / "rico-hdl" / "HySpecNet-11k"
    assert run_cli("encode", "--hyspecnet", root, tmp_path / "out") == 0
    got = read_lmdb(tmp_path / "out")
    images = sorted(root.rglob("*-SPECTRAL_IMAGE.TIF"))
    assert sorted(got) == sorted(p.name.removesuffix("-SPECTRAL_IMAGE.TIF") for p in images)
    for path in images:
        with rasterio.open(path) as src:
            cube = src.read()  # (224, 128, 128) int16
        bands = got[path.name.removesuffix("-SPECTRAL_IMAGE.TIF")]
        assert set(bands) == set(HYSPECNET_BANDS)  # quality layers are not bands
        for i, band in enumerate(HYSPECNET_BANDS):
            assert bands[band].dtype == np.int16 and bands[band].shape == (128, 128)
            np.testing.assert_array_equal(bands[band], cube[i])


# --- fake trees -----------------------------------------------------------------------------


def test_s1_s2_together_v2_layout_and_tiff_suffix(tmp_path):
    s2 = write_fake_tree(tmp_path / "s2", n=5, layout="v2", suffix=".tiff")
    s1 = write_fake_s1_tree(tmp_path / "s1", [f"S1_{i}" for i in range(3)])
    (tmp_path / "s2" / "maps" / "X").mkdir(parents=True)  # reference maps are ignored
    (tmp_path / "s2" / "maps" / "X" / "X_reference_map.tif").write_bytes(b"")
    rc = run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2",
                 "--bigearthnet-s1-root", tmp_path / "s1", tmp_path / "out", workers=2)
    assert rc == 0
    assert_same(read_lmdb(tmp_path / "out"), {**s2, **s1})


def test_map_size_grows_when_full(tmp_path):
    written = write_fake_tree(tmp_path / "s2", n=6)
    jobs = collect_jobs(s2_root=tmp_path / "s2")
    report = encode(jobs, tmp_path / "out", EncodeOptions(batch_size=4, progress=False),
                    map_size=64 * 1024)  # far smaller than one batch
    assert report.written == 6
    assert_same(read_lmdb(tmp_path / "out"), written)


def _entries(path: Path) -> int:
    if not (path / "data.mdb").exists():
        return 0
    try:
        env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
    except lmdb.Error:  # data.mdb exists but its header is not written yet
        return 0
    try:
        return env.stat()["entries"]
    finally:
        env.close()


def test_sigkill_then_resume_completes(tmp_path):
    n = 100
    written = write_fake_tree(tmp_path / "s2", n=n)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vqae", "encode", "--bigearthnet-s2-root", str(tmp_path / "s2"),
           str(out), "--workers", "2", "--batch-size", "2", "--no-progress"]
    # Own session, so the kill takes the pool workers too, as `kill -9` of a job would.
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while _entries(out) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _entries(out)
    assert 0 < killed_at < n, f"the kill should land mid-run, found {killed_at} of {n} entries"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out) == 2  # no flag
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, "--resume") == 0
    assert_same(read_lmdb(out), written)
    assert run_cli("verify-encoded", out, "--against", tmp_path / "s2") == 0


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["missing", "corrupt", "shape"])
def test_bad_patch_stops_with_the_file_named(tmp_path, capsys, how):
    write_fake_tree(tmp_path / "s2", n=3)
    bad = break_patch(tmp_path / "s2", PATCH, how)
    rc = run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", tmp_path / "out")
    assert rc == 2
    err = one_line_error(capsys.readouterr().err, "encode")
    assert str(bad) in err and "--skip-bad" in err
    assert PATCH not in read_lmdb(tmp_path / "out")


@pytest.mark.parametrize("how", ["missing", "corrupt", "shape"])
def test_skip_bad_lists_and_continues_then_resume_fixes(tmp_path, how):
    written = write_fake_tree(tmp_path / "s2", n=3)
    bad = break_patch(tmp_path / "s2", PATCH, how)
    out = tmp_path / "out"
    rc = run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, "--skip-bad")
    assert rc == 1
    assert_same(read_lmdb(out), {k: v for k, v in written.items() if k != PATCH})
    lines = skipped_path(out).read_text().splitlines()
    assert lines[0] == "patch\treason" and len(lines) == 2
    assert lines[1].startswith(f"{PATCH}\t") and str(bad) in lines[1]
    # Repair the file, then --resume adds only that patch and drops the stale list.
    bad.unlink(missing_ok=True)
    write_tiff(bad, written[PATCH]["B03"])
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, "--resume") == 0
    assert_same(read_lmdb(out), written)
    assert not skipped_path(out).exists()


# --- OUT safety -----------------------------------------------------------------------------


def test_existing_out_is_refused(tmp_path, capsys):
    write_fake_tree(tmp_path / "s2", n=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ("encode", "--bigearthnet-s2-root", tmp_path / "s2", out)
    assert run_cli(*args) == 2
    assert "--resume" in capsys.readouterr().err
    assert run_cli(*args, "--overwrite") == 2  # not an LMDB: never deleted
    assert run_cli(*args, "--resume") == 2
    assert (out / "notes.txt").read_text() == "mine"
    (tmp_path / "empty").mkdir()
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", tmp_path / "empty") == 0


def test_overwrite_keeps_old_out_until_new_one_is_complete(tmp_path):
    old = write_fake_tree(tmp_path / "a", n=2, seed=1)
    new = write_fake_tree(tmp_path / "b", n=3, seed=2)
    out = tmp_path / "out"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "a", out) == 0
    bad = break_patch(tmp_path / "b", PATCH, "corrupt")
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "b", out, "--overwrite") == 2
    assert_same(read_lmdb(out), old)  # the failed replacement left OUT untouched
    assert not (tmp_path / "out.tmp").exists()
    bad.unlink()
    write_tiff(bad, new[PATCH]["B03"])
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "b", out, "--overwrite") == 0
    assert_same(read_lmdb(out), new)
    assert sorted(p.name for p in out.iterdir()) == ["data.mdb", "lock.mdb", "manifest.json"]


def test_needs_a_root(tmp_path, capsys):
    assert run_cli("encode", tmp_path / "out") == 2
    assert "--bigearthnet-s2-root" in capsys.readouterr().err


def test_readers_give_identical_tensors_from_lmdb_and_geotiffs(tmp_path):
    from vqae.data.bands import S2_BANDS
    from vqae.data.readers import GeoTiffDataset, LmdbDataset

    write_fake_tree(tmp_path / "s2", n=3, layout="v2")
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", tmp_path / "out") == 0
    tiffs = GeoTiffDataset(tmp_path / "s2", bands=S2_BANDS)
    encoded = LmdbDataset(tmp_path / "out", bands=S2_BANDS)
    assert encoded.names == tiffs.names
    for i in range(len(tiffs)):
        a, b = tiffs[i]["image"], encoded[i]["image"]  # (12, 120, 120) float digital numbers
        assert a.shape == (12, 120, 120) and torch.equal(a, b)
