"""`vqae encode` against a signal to its process group, an OUT that is its input, and an
--overwrite of something it did not write."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.data.encode_helpers import assert_same, one_line_error, read_lmdb, run_cli
from tests.fakes import write_fake_tree
from vqae.io.stops import EXIT_PREEMPTED


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_signal_to_the_process_group_commits_and_stops_then_resume_completes(tmp_path):
    """The reader workers are frozen (SIGSTOP) while TERM reaches the whole group, then thawed:
    they must ignore it, and the parent must commit what it has and exit 75."""
    written = write_fake_tree(tmp_path / "s2", n=40, seed=4)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vqae", "encode", "--bigearthnet-s2-root", str(tmp_path / "s2"),
           str(out), "--workers", "2", "--batch-size", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(workers := children(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    os.killpg(proc.pid, signal.SIGTERM)
    time.sleep(0.5)  # the parent takes the signal while its workers cannot finish a chunk
    for pid in workers:
        os.kill(pid, signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "Traceback" not in err and "stopped on SIGTERM" in err and "--resume" in err
    kept = read_lmdb(out)
    assert 0 < len(kept) < len(written)
    assert_same(kept, {k: written[k] for k in kept})
    assert json.loads((out / "manifest.json").read_text())["complete"] is False
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, "--resume") == 0
    assert_same(read_lmdb(out), written)
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_out_may_not_be_or_hold_a_root(tmp_path, capsys):
    write_fake_tree(tmp_path / "s2", n=2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for out in (tmp_path / "s2", tmp_path / "s2" / "x" / "..", tmp_path / "s2" / "db",
                tmp_path):
        for mode in ((), ("--overwrite",), ("--resume",)):
            assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", out, *mode) == 2
            msg = one_line_error(capsys.readouterr().err, "encode")
            assert "input" in msg or "inside" in msg, msg
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_overwrite_needs_proof_that_vqae_wrote_out(tmp_path, capsys):
    old = write_fake_tree(tmp_path / "a", n=2, seed=1)
    write_fake_tree(tmp_path / "b", n=3, seed=2)
    out = tmp_path / "out"
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "a", out) == 0
    (out / "manifest.json").unlink()  # an LMDB as rico-hdl or another tool writes it
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "b", out, "--overwrite") == 2
    assert "nothing proves" in one_line_error(capsys.readouterr().err, "encode")
    assert_same(read_lmdb(out), old)
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "b", out, "--resume") == 0
    got = read_lmdb(out)  # resuming never deletes: allowed
    assert set(old) < set(got) and len(got) == 3


def test_a_stale_skipped_list_is_removed_only_if_encode_wrote_it(tmp_path):
    write_fake_tree(tmp_path / "s2", n=2)
    mine = tmp_path / "out.skipped.tsv"
    mine.write_text("my notes\n")
    assert run_cli("encode", "--bigearthnet-s2-root", tmp_path / "s2", tmp_path / "out") == 0
    assert mine.read_text() == "my notes\n"
