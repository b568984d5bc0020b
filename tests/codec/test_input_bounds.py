"""`vqae compress` from, and `vqae decompress` of, a truncated LMDB: one line, not SIGBUS; a
checkpoint whose config the codec cannot serve: one line, not an AssertionError."""

from __future__ import annotations

from tests.codec.test_commands import vqae
from tests.hostile import one_line, run_vqae, truncated_copy
from vqae.checkpoint.manager import read_checkpoint, save_checkpoint


def test_decompress_truncated_bitstream_lmdb(tiny_ckpt, fake_patches, tmp_path):
    bits = tmp_path / "bits.lmdb"
    assert vqae("compress", tiny_ckpt, fake_patches, "-o", bits) == 0
    size = (bits / "data.mdb").stat().st_size
    cut = truncated_copy(bits, tmp_path / "cut.lmdb", size - 4096)
    (cut / "manifest.json").write_bytes((bits / "manifest.json").read_bytes())
    proc = run_vqae("decompress", cut, "-o", tmp_path / "dn", "--no-progress")
    message = one_line(proc, "decompress")
    assert str(cut) in message and "truncated" in message


def test_compress_from_truncated_lmdb(tiny_ckpt, fake_patches, tmp_path):
    data = tmp_path / "data.lmdb"
    assert run_vqae("encode", "--bigearthnet-s2-root", fake_patches, data, "--workers", "1",
                    "--no-progress").returncode == 0
    cut = truncated_copy(data, tmp_path / "cut.lmdb", (data / "data.mdb").stat().st_size // 2)
    proc = run_vqae("compress", tiny_ckpt, cut, "-o", tmp_path / "bits", "--no-progress")
    message = one_line(proc, "compress")
    assert str(cut) in message and "truncated" in message


def test_checkpoint_with_unsupported_image_size_is_one_line(tiny_ckpt, fake_patches, tmp_path):
    state = read_checkpoint(tiny_ckpt)
    state["config"]["model"]["image_size"] = 128  # what base accepted, then asserted on
    ckpt = save_checkpoint(tmp_path / "128.pt", state)
    message = one_line(run_vqae("compress", ckpt, fake_patches, "-o", tmp_path / "bits",
                                "--no-progress"), "compress")
    assert "model.image_size=128 is not valid; choose one of: 120" in message
