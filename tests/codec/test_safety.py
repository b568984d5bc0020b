"""Hostile and unlucky inputs to the codec commands: manifests, output folders, signals, bounded
reads, crafted bitstreams and bad counts. Every hostile file is built here."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from tests.data.encode_helpers import break_patch, one_line_error, read_lmdb
from tests.fakes import write_fake_tree
from vqae.checkpoint.manager import load_model
from vqae.cli import main
from vqae.codec import bitstream
from vqae.codec.codec import Codec
from vqae.errors import DataError
from vqae.io.stops import EXIT_PREEMPTED


def vqae(*args) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def compressed(tiny_ckpt, fake_patches, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "vqz"
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out) == 0
    return out


@pytest.fixture(scope="module")
def data_lmdb(fake_patches, tmp_path_factory) -> Path:
    """The fake patches encoded as a rico-hdl LMDB: a dataset, not an output of compress."""
    db = tmp_path_factory.mktemp("safety-db") / "data.lmdb"
    assert main(["encode", "--bigearthnet-s2-root", str(fake_patches), str(db), "--workers",
                 "1", "--no-progress"]) == 0
    return db


def set_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ---- the manifest is a hint ----------------------------------------------------------------

def test_a_relative_checkpoint_in_the_manifest_resolves_beside_it(tiny_ckpt, other_ckpt,
                                                                  compressed, tmp_path,
                                                                  monkeypatch):
    tiles = tmp_path / "download" / "tiles"
    shutil.copytree(compressed, tiles)
    shutil.copy(tiny_ckpt, tiles / "model.pt")
    set_manifest(tiles, checkpoint="model.pt")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    shutil.copy(other_ckpt, cwd / "model.pt")  # a decoy under the same relative name
    monkeypatch.chdir(cwd)
    assert vqae("decompress", tiles, "-o", tmp_path / "dec") == 0
    assert len(list((tmp_path / "dec").glob("*/*_B02.tif"))) == 8


def test_a_manifest_naming_another_model_is_refused_before_decoding(other_ckpt, compressed,
                                                                    tmp_path, capsys):
    tiles = tmp_path / "tiles"
    shutil.copytree(compressed, tiles)
    set_manifest(tiles, checkpoint=str(other_ckpt))
    capsys.readouterr()
    assert vqae("decompress", tiles, "-o", tmp_path / "dec") == 2
    msg = one_line_error(capsys.readouterr().err, "decompress")
    assert "fingerprint" in msg and "--ckpt" in msg
    assert not (tmp_path / "dec").exists()  # nothing decoded, nothing written


@pytest.mark.parametrize("content", [
    b"[1, 2]", b"7", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000, b'{"checkpoint": 5}',
    b'{"checkpoint": ["a"]}', b" " * (2 << 20) + b"{}", b"{\"checkpoint\": \"x.pt\""])
def test_malformed_manifests_are_one_line_errors(compressed, tmp_path, capsys, content):
    tiles = tmp_path / "tiles"
    shutil.copytree(compressed, tiles)
    (tiles / "manifest.json").write_bytes(content)
    capsys.readouterr()
    assert vqae("decompress", tiles, "-o", tmp_path / "dec") == 2
    msg = one_line_error(capsys.readouterr().err, "decompress")
    assert "manifest.json" in msg or "--ckpt" in msg


def test_a_fifo_manifest_is_refused_without_blocking(compressed, tmp_path, capsys):
    tiles = tmp_path / "tiles"
    shutil.copytree(compressed, tiles)
    (tiles / "manifest.json").unlink()
    os.mkfifo(tiles / "manifest.json")
    capsys.readouterr()
    assert vqae("decompress", tiles, "-o", tmp_path / "dec") == 2
    assert "not a regular file" in one_line_error(capsys.readouterr().err, "decompress")


# ---- OUT: never the input, replaced only when vqae wrote it, built beside it ----------------

def test_out_is_never_the_input(tiny_ckpt, data_lmdb, tmp_path, capsys):
    before = tree(data_lmdb)
    link = tmp_path / "link.lmdb"
    link.symlink_to(data_lmdb)
    dotted = data_lmdb.parent / "x" / ".." / data_lmdb.name
    for out in (data_lmdb, link, dotted):
        for mode in ((), ("--overwrite",), ("--resume",)):
            assert vqae("compress", tiny_ckpt, data_lmdb, "-o", out, *mode) == 2, (out, mode)
            one_line_error(capsys.readouterr().err, "compress")
    assert vqae("compress", tiny_ckpt, data_lmdb, "-o", data_lmdb / "inside", "--lmdb") == 2
    assert "inside" in one_line_error(capsys.readouterr().err, "compress")
    assert tree(data_lmdb) == before


def test_overwrite_replaces_only_outputs_of_the_same_command(tiny_ckpt, fake_patches, data_lmdb,
                                                             tmp_path, capsys):
    dataset = tmp_path / "ben.lmdb"
    shutil.copytree(data_lmdb, dataset)  # an LMDB of vqae encode: data, not bitstreams
    rico = tmp_path / "rico.lmdb"
    shutil.copytree(data_lmdb, rico)
    (rico / "manifest.json").unlink()  # as rico-hdl writes it: nothing proves it is ours
    for out in (dataset, rico):
        before = tree(out)
        assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--overwrite") == 2
        msg = one_line_error(capsys.readouterr().err, "compress")
        assert str(out) in msg and "another OUT" in msg
        assert tree(out) == before


def test_failed_overwrite_leaves_the_old_output(tiny_ckpt, fake_patches, compressed, tmp_path,
                                                capsys):
    out = tmp_path / "vqz"
    shutil.copytree(compressed, out)
    before = tree(out)
    broken = tmp_path / "broken"
    shutil.copytree(fake_patches, broken)
    name = sorted(p.name for p in broken.iterdir())[5]
    break_patch(broken, name, "corrupt")
    capsys.readouterr()
    assert vqae("compress", tiny_ckpt, broken, "-o", out, "--overwrite", "--batch-size",
                "2") == 2
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "vqz"]  # no temp left


def test_decompress_overwrite_never_touches_a_sibling(tiny_ckpt, fake_patches, tmp_path):
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", tmp_path / "x.lmdb") == 0
    mine = tmp_path / "dn.lmdb.tmp"  # the user's folder, with the name the old code used
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    out = tmp_path / "dn.lmdb"
    assert vqae("decompress", tmp_path / "x.lmdb", "-o", out) == 0
    first = read_lmdb(out)
    assert vqae("decompress", tmp_path / "x.lmdb", "-o", out, "--overwrite") == 0
    assert (mine / "notes.txt").read_text() == "mine"
    assert read_lmdb(out).keys() == first.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dn.lmdb", "dn.lmdb.tmp", "x.lmdb"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["writer"] == "vqae" and manifest["complete"] is True


def test_overwrite_keeps_files_the_tool_did_not_write(tiny_ckpt, fake_patches, compressed,
                                                      tmp_path, capsys):
    out = tmp_path / "vqz"
    shutil.copytree(compressed, out)
    (out / "notes.txt").write_text("mine")
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--overwrite") == 2
    assert "notes.txt" in one_line_error(capsys.readouterr().err, "compress")
    assert (out / "notes.txt").read_text() == "mine"


# ---- signals: stop after the batch, keep what is whole, resume --------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_process_group_stops_compress_and_resume_completes(tmp_path, sig):
    from tests.codec.conftest import make_checkpoint

    data = tmp_path / "tiffs"
    write_fake_tree(data, n=48, layout="v1", seed=5)
    ckpt = make_checkpoint(tmp_path / "tiny.pt", data)
    out = tmp_path / "vqz"
    cmd = [sys.executable, "-m", "vqae", "compress", str(ckpt), str(data), "-o", str(out),
           "--workers", "2", "--batch-size", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.vqz"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, sig)  # workers too, as Slurm, timeout and Ctrl-C do
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "Traceback" not in err and f"stopped on {sig.name}" in err and "--resume" in err
    kept = sorted(out.glob("*.vqz"))
    assert 3 <= len(kept) < 48
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] is False and manifest["patches"] == len(kept)
    stamps = {p.name: p.stat().st_mtime_ns for p in kept}
    assert main(cmd[3:] + ["--resume"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in kept} == stamps  # kept, not redone
    assert main(cmd[3:-5] + ["-o", str(tmp_path / "straight"), "--no-progress"]) == 0
    assert tree(out) == {**tree(tmp_path / "straight"), "manifest.json": tree(out)["manifest.json"]}
    assert json.loads((out / "manifest.json").read_text())["complete"] is True


def test_resume_refuses_other_settings(tiny_ckpt, other_ckpt, fake_patches, compressed,
                                       tmp_path, capsys):
    out = tmp_path / "vqz"
    shutil.copytree(compressed, out)
    before = tree(out)
    capsys.readouterr()
    assert vqae("compress", other_ckpt, fake_patches, "-o", out, "--resume") == 2
    assert "fingerprint" in one_line_error(capsys.readouterr().err, "compress")
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--resume", "--depth", "1") == 2
    assert "depth" in one_line_error(capsys.readouterr().err, "compress")
    assert tree(out) == before
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", out, "--resume") == 0  # all present
    assert tree(out).keys() == before.keys()


# ---- bounded reads and crafted bitstreams ------------------------------------------------------

def test_a_huge_vqz_file_is_refused_from_its_header(compressed, tmp_path):
    src = min(compressed.glob("*.vqz"))
    big = tmp_path / "big.vqz"
    big.write_bytes(src.read_bytes())
    os.truncate(big, 1_500_000_000)  # sparse: 1.5 GB on paper, nothing on disk
    tracemalloc.start()
    with pytest.raises(DataError, match="more than a .vqz file"):
        bitstream.read_file(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_non_regular_vqz_files_are_refused(tiny_ckpt, tmp_path, capsys, kind):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    target = tiles / "x.vqz"
    if kind == "fifo":
        os.mkfifo(target)  # reading it would block forever
    elif kind == "dev-zero":
        target.symlink_to("/dev/zero")  # reading it would never end
    else:
        target.mkdir()
    assert vqae("decompress", tiles, "-o", tmp_path / "dec", "--ckpt", tiny_ckpt) == 2
    msg = one_line_error(capsys.readouterr().err, "decompress")
    assert "x.vqz" in msg and "regular file" in msg


def test_zeroed_chunks_under_a_valid_header_are_damage_not_an_image(tiny_ckpt, compressed,
                                                                   tmp_path, capsys):
    """Length 0 and CRC 0 is an empty payload with the CRC32 of nothing, and an ANS decoder
    turns nothing into an all-zero index map; format 4 binds each chunk's CRC to its stage and
    header, so zeroed bytes fail it."""
    src = min(compressed.glob("*.vqz"))
    header, _ = bitstream.parse_header(src.read_bytes(), str(src))
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    (tiles / "zeroed.vqz").write_bytes(header.pack() + bytes(5 * header.depth))
    assert vqae("decompress", tiles, "-o", tmp_path / "dec", "--ckpt", tiny_ckpt) == 2
    msg = one_line_error(capsys.readouterr().err, "decompress")
    assert "zeroed.vqz" in msg and "CRC32" in msg
    assert not (tmp_path / "dec").exists()


@pytest.mark.parametrize("fields", [{"height": 64}, {"width": 240},
                                    {"bands": ("B02", "B03", "B04"), "filter_codes": (0, 0, 0)},
                                    {"model_depth": 4}])
def test_header_fields_are_checked_against_the_model(tiny_ckpt, compressed, fields):
    import dataclasses

    data = min(compressed.glob("*.vqz")).read_bytes()
    parsed = bitstream.read(data, "x")
    forged = dataclasses.replace(parsed.header, **fields)  # with a valid CRC
    codec = Codec(load_model(tiny_ckpt)[0], str(tiny_ckpt))
    with pytest.raises(DataError, match="damaged"):
        codec.parse(bitstream.write(forged, parsed.payloads), source="forged.vqz")


def test_decompress_says_when_an_input_may_be_incomplete(tiny_ckpt, fake_patches, tmp_path,
                                                         caplog):
    lmdb_out = tmp_path / "x.lmdb"
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", lmdb_out) == 0
    set_manifest(lmdb_out, complete=False)
    with caplog.at_level(logging.WARNING):
        assert vqae("decompress", lmdb_out, "-o", tmp_path / "a.lmdb") == 0
    assert "INCOMPLETE" in caplog.text and "--resume" in caplog.text
    caplog.clear()
    (lmdb_out / "manifest.json").unlink()  # as an interrupted older vqae left it
    with caplog.at_level(logging.WARNING):
        assert vqae("decompress", lmdb_out, "-o", tmp_path / "b.lmdb", "--ckpt", tiny_ckpt) == 0
    assert "no manifest.json" in caplog.text


# ---- counts and reports --------------------------------------------------------------------

@pytest.mark.parametrize("command, option, value", [
    ("compress", "--batch-size", "0"), ("compress", "--batch-size", "-3"),
    ("compress", "--workers", "-1"), ("rd", "--batch-size", "0"), ("rd", "--max-patches", "-1"),
    ("decompress", "--depth", "0")])
def test_bad_counts_are_one_line_errors(tiny_ckpt, fake_patches, compressed, tmp_path, capsys,
                                        command, option, value):
    args = {"compress": ["compress", tiny_ckpt, fake_patches, "-o", tmp_path / "o"],
            "decompress": ["decompress", compressed, "-o", tmp_path / "o"],
            "rd": ["rd", "--ckpt", tiny_ckpt, "--data", fake_patches, "--out", tmp_path / "o"]}
    with pytest.raises(SystemExit) as exited:  # argparse: a usage line and one error line
        vqae(*args[command], option, value)
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "Traceback" not in err
    assert f"vqae {command}: error: argument {option}" in err and value in err
    assert not (tmp_path / "o").exists()


def test_rd_keeps_an_earlier_report_unless_told(tiny_ckpt, fake_patches, tmp_path, capsys):
    args = ["rd", "--ckpt", tiny_ckpt, "--data", fake_patches, "--out", tmp_path / "rd",
            "--max-patches", "1", "--jpeg2000-quality", "50"]
    assert vqae(*args) == 0
    before = (tmp_path / "rd" / "rd.csv").read_bytes()
    capsys.readouterr()
    assert vqae(*args, "--band-filter", "none") == 2
    assert "--overwrite" in one_line_error(capsys.readouterr().err, "rd")
    assert (tmp_path / "rd" / "rd.csv").read_bytes() == before
    assert vqae(*args, "--band-filter", "none", "--overwrite") == 0
    assert (tmp_path / "rd" / "rd.csv").read_bytes() != before


# ---- found by a hostile review -------------------------------------------------------------

def test_a_crafted_header_is_checked_against_the_model_before_the_body_is_read(tiny_ckpt,
                                                                              compressed,
                                                                              tmp_path):
    """65535x65535 pixels would allow a file of terabytes; the model says 120x120."""
    header = bitstream.parse_header(min(compressed.glob("*.vqz")).read_bytes(), "x")[0]
    import dataclasses

    huge = dataclasses.replace(header, height=65535, width=65535, depth=1)
    path = tmp_path / "big.vqz"
    path.write_bytes(huge.pack() + bitstream.varint(3_000_000_000))
    os.truncate(path, 3_000_000_000)  # sparse
    codec = Codec(load_model(tiny_ckpt)[0], str(tiny_ckpt))
    tracemalloc.start()
    with pytest.raises(DataError, match="size"):
        bitstream.read_file(path, lambda h: codec.check_header(h, str(path)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2_000_000


def crafted_lmdb(folder: Path, value: bytes) -> None:
    """An LMDB whose one record claims about 2 GB (its leaf node's size field patched); the
    meta pages and the file size stay valid."""
    import struct

    import lmdb

    env = lmdb.open(str(folder), map_size=1 << 24)
    key = b"S2A_PATCH_0"
    with env.begin(write=True) as txn:
        txn.put(key, value)
    env.close()
    data = bytearray((folder / "data.mdb").read_bytes())
    at = data.find(key)
    struct.pack_into("<HH", data, at - 8, 0xFFF0, 0x7FFF)
    (folder / "data.mdb").write_bytes(bytes(data))


@pytest.mark.timeout(120)
def test_an_lmdb_record_past_the_end_of_its_file_is_an_error_not_a_bus_error(
        tiny_ckpt, compressed, tmp_path):
    # a value longer than a page: LMDB keeps it on overflow pages and trusts its size field
    crafted_lmdb(tmp_path / "evil.lmdb", min(compressed.glob("*.vqz")).read_bytes()
                 + bytes(20_000))
    done = subprocess.run([sys.executable, "-m", "vqae", "decompress", str(tmp_path / "evil.lmdb"),
                           "--ckpt", str(tiny_ckpt), "-o", str(tmp_path / "dn.lmdb"),
                           "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    (msg,) = [line for line in done.stderr.splitlines() if "error:" in line]
    assert "past the end" in msg and "S2A_PATCH_0" in msg and "Traceback" not in done.stderr
    assert not (tmp_path / "dn.lmdb").exists()


def test_decompress_overwrite_removes_only_patch_folders(tiny_ckpt, compressed, tmp_path,
                                                         capsys):
    out = tmp_path / "D"
    assert vqae("decompress", compressed, "-o", out) == 0
    models = out / "models"
    models.mkdir()
    shutil.copy(tiny_ckpt, models / "tiny.pt")
    capsys.readouterr()
    assert vqae("decompress", compressed, "-o", out, "--overwrite", "--ckpt",
                models / "tiny.pt") == 2
    assert "models" in one_line_error(capsys.readouterr().err, "decompress")
    assert (models / "tiny.pt").is_file()


def test_an_input_inside_out_is_seen_through_a_bind_mount(tiny_ckpt, compressed, tmp_path,
                                                          capsys):
    out = tmp_path / "D"
    assert vqae("decompress", compressed, "-o", out) == 0
    shutil.copytree(compressed, out / "vq")
    view = tmp_path / "view"
    view.mkdir()
    if subprocess.run(["mount", "--bind", str(out / "vq"), str(view)]).returncode != 0:
        skip_or_fail("mount --bind needs root")
    try:
        before = tree(out / "vq")
        capsys.readouterr()
        assert vqae("decompress", view, "-o", out, "--overwrite") == 2
        assert "inside" in one_line_error(capsys.readouterr().err, "decompress")
        assert tree(out / "vq") == before
    finally:
        subprocess.run(["umount", str(view)])


def test_overwrite_never_replaces_another_commands_output(tiny_ckpt, compressed, data_lmdb,
                                                         tmp_path, capsys):
    assert vqae("compress", tiny_ckpt, data_lmdb, "-o", tmp_path / "c.lmdb") == 0
    dataset = tmp_path / "ds.lmdb"
    shutil.copytree(data_lmdb, dataset)  # lossless, from vqae encode
    before = tree(dataset)
    capsys.readouterr()
    assert vqae("decompress", tmp_path / "c.lmdb", "-o", dataset, "--overwrite") == 2
    assert "another kind of output" in one_line_error(capsys.readouterr().err, "decompress")
    assert tree(dataset) == before


def test_overwrite_through_a_symlink_replaces_its_target_and_keeps_modes(tiny_ckpt, fake_patches,
                                                                         compressed, tmp_path):
    real = tmp_path / "real"
    shutil.copytree(compressed, real)
    os.chmod(real, 0o755)
    link = tmp_path / "link"
    link.symlink_to(real)
    stale = tmp_path / ".real.k1lled42.tmp"  # left by a replacement killed with SIGKILL
    stale.mkdir()
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", link, "--overwrite", "--depth",
                "1") == 0
    assert link.is_symlink() and link.resolve() == real
    assert json.loads((real / "manifest.json").read_text())["depth"] == 1
    assert oct(real.stat().st_mode & 0o777) == oct(0o755)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_resume_refuses_another_input(tiny_ckpt, fake_patches, compressed, tmp_path, capsys):
    out = tmp_path / "vqz"
    shutil.copytree(compressed, out)
    set_manifest(out, complete=False)
    other = tmp_path / "other"
    write_fake_tree(other, n=3, layout="v1", seed=9)
    capsys.readouterr()
    assert vqae("compress", tiny_ckpt, other, "-o", out, "--resume") == 2
    assert "data" in one_line_error(capsys.readouterr().err, "compress")


def test_fit_prior_out_never_replaces_a_users_file(tiny_ckpt, fake_patches, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    args = ["fit-prior", tiny_ckpt, "--data", fake_patches, "--split", "all"]
    for out, words in ((notes, "not a vqae checkpoint"), (tmp_path, "is a folder"),
                       (tiny_ckpt, "is the input")):
        before = Path(out).read_bytes() if Path(out).is_file() else None
        assert vqae(*args, "-o", out) == 2
        assert words in one_line_error(capsys.readouterr().err, "fit-prior")
        if before is not None:
            assert Path(out).read_bytes() == before
    fitted = tmp_path / "fitted.pt"
    assert vqae(*args, "-o", fitted) == 0
    assert vqae(*args, "-o", fitted) == 0  # an earlier checkpoint: -o replaces it
