"""`vqae encode` / `verify-encoded` on a damaged LMDB, a full disk and a read-only one: one line
naming the file and the fix, and nothing committed before is lost."""

from __future__ import annotations

import shutil
import subprocess

import lmdb
import pytest

from tests.data.encode_helpers import (
    assert_same,
    break_patch,
    damage_lmdb,
    one_line_error,
    read_lmdb,
    run_cli,
)
from tests.fakes import patch_names, write_fake_tree
from vqae.data.encode import skipped_path

PATCH = patch_names(3)[1]
# A fake patch is ~160 KB (4 bands of 120x120, 6 of 60x60, 2 of 20x20 uint16), so 12 patches
# are ~1.9 MB: twice the 1 MiB disk.
BIG = 12


@pytest.fixture
def encoded(tmp_path):
    """Three fake patches encoded into tmp_path/out; returns (source root, OUT)."""
    write_fake_tree(tmp_path / "s2", n=3)
    out = tmp_path / "out"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out) == 0
    return tmp_path / "s2", out


COMMANDS = {
    "verify-encoded": lambda s2, out: ("verify-encoded", out, "--against", s2),
    "encode": lambda s2, out: ("encode", "--bigearthnet-s2-root", s2, out, "--resume"),
}


# --- damaged LMDB -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("how", ["start", "middle", "key"])
def test_damaged_lmdb_is_one_line_naming_it(encoded, capsys, how, command):
    s2, out = encoded
    damage_lmdb(out, how, PATCH)
    assert run_cli(*COMMANDS[command](s2, out)) == 2
    msg = one_line_error(capsys.readouterr().err, command)
    assert str(out) in msg and "--overwrite" in msg
    if how == "key":
        assert "xff" in msg and "not utf-8" in msg


def test_value_not_safetensors(encoded, capsys):
    s2, out = encoded
    damage_lmdb(out, "value", PATCH)
    assert run_cli(*COMMANDS["verify-encoded"](s2, out)) == 1  # a difference, not a crash
    captured = capsys.readouterr()
    assert f"{PATCH}: the LMDB value is not valid safetensors" in captured.out
    assert "Traceback" not in captured.err
    assert run_cli(*COMMANDS["encode"](s2, out)) == 2  # --resume must not complete it
    msg = one_line_error(capsys.readouterr().err, "encode")
    assert str(out) in msg and PATCH in msg and "--overwrite" in msg


def test_overwrite_repairs_a_damaged_lmdb(encoded):
    s2, out = encoded
    damage_lmdb(out, "middle", PATCH)
    assert run_cli("encode", "--bigearthnet-s2-root", s2, out, "--overwrite") == 0
    assert run_cli(*COMMANDS["verify-encoded"](s2, out)) == 0


# --- full or read-only disk -------------------------------------------------------------------


def test_full_disk_keeps_committed_patches_and_resume_completes(tmp_path, small_disk, capsys):
    written = write_fake_tree(tmp_path / "s2", n=BIG)
    out = small_disk("1m") / "out"
    rc = run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, "--batch-size", "2")
    assert rc == 2
    msg = one_line_error(capsys.readouterr().err, "encode")
    assert str(out) in msg and "space" in msg and "--resume" in msg
    kept = read_lmdb(out)
    assert 0 < len(kept) < BIG and len(kept) % 2 == 0  # whole batches only
    assert_same(kept, {k: written[k] for k in kept})
    # A bigger disk: copy OUT over and complete it.
    bigger = tmp_path / "bigger"
    shutil.copytree(out, bigger)
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", bigger, "--resume") == 0
    assert_same(read_lmdb(bigger), written)
    assert run_cli("verify-encoded", bigger, "--against", tmp_path / "s2") == 0


def test_full_disk_overwrite_leaves_old_out(tmp_path, small_disk, capsys):
    old = write_fake_tree(tmp_path / "a", n=2, seed=1)
    write_fake_tree(tmp_path / "b", n=BIG, seed=2)
    out = small_disk("1m") / "out"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "a", out) == 0
    capsys.readouterr()
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "b", out, "--overwrite") == 2
    msg = one_line_error(capsys.readouterr().err, "encode")
    assert f"{out} was left unchanged" in msg and "space" in msg
    assert_same(read_lmdb(out), old)
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no out.tmp left


def test_read_only_disk(tmp_path, small_disk, capsys):
    write_fake_tree(tmp_path / "s2", n=2)
    out = small_disk(readonly=True) / "out"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out) == 2
    msg = one_line_error(capsys.readouterr().err, "encode")
    assert str(out) in msg and "Read-only" in msg and "writable" in msg


def test_resume_on_a_disk_remounted_read_only(tmp_path, small_disk, capsys):
    written = write_fake_tree(tmp_path / "s2", n=3)
    disk = small_disk("4m")
    out = disk / "out"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out) == 0
    env = lmdb.open(str(out), subdir=True)
    with env.begin(write=True) as txn:
        txn.delete(PATCH.encode())  # so that --resume has a patch to add
    env.close()
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    capsys.readouterr()
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, "--resume") == 2
    msg = one_line_error(capsys.readouterr().err, "encode")
    assert str(out) in msg and "Read-only" in msg and "--resume" in msg
    assert_same(read_lmdb(out), {k: v for k, v in written.items() if k != PATCH})


def test_unwritable_skipped_list(tmp_path, capsys):
    written = write_fake_tree(tmp_path / "s2", n=3)
    break_patch(tmp_path / "s2", PATCH, "corrupt")
    out = tmp_path / "out"
    blocker = skipped_path(out)
    (blocker / "x").mkdir(parents=True)  # a non-empty folder where the list goes
    args = ("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, "--skip-bad")
    assert run_cli(*args) == 2
    msg = one_line_error(capsys.readouterr().err, "encode")
    assert str(blocker) in msg and "--resume" in msg
    good = {k: v for k, v in written.items() if k != PATCH}
    assert_same(read_lmdb(out), good)  # the LMDB itself is complete
    shutil.rmtree(blocker)
    assert run_cli(*args, "--resume") == 1
    assert skipped_path(out).read_text().splitlines()[1].startswith(f"{PATCH}\t")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "out.skipped.tsv", "s2"]
