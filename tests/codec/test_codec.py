"""Indices <-> .vqz bytes: bit-exact round trips, size vs ideal entropy, progressive prefixes,
and the clear errors for wrong, cut, damaged and empty files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.codec.conftest import make_checkpoint
from vqae.checkpoint import load_model
from vqae.codec import bitstream
from vqae.codec.api import Codec
from vqae.data.sample import LMDB_NAME
from vqae.errors import DataError

CHUNK_FRAMING = 2 + 4 + 4  # length varint (< 2**14), CRC32, the coder's final state word


@pytest.fixture(scope="module")
def codec(tiny_ckpt) -> Codec:
    model, _ = load_model(tiny_ckpt)
    return Codec(model, str(tiny_ckpt))


def random_grids(codec: Codec, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    k = codec.model.quantizer.codebook_size
    grids = rng.integers(0, k, (n + 2, codec.depth, codec.h, codec.w))
    grids[0] = 0
    grids[1] = k - 1  # the extremes, and indices the prior may never have seen
    return grids


def test_random_indices_round_trip_bit_exactly(codec):
    for grid in random_grids(codec, 12):
        data = codec.encode_indices(grid).data
        np.testing.assert_array_equal(codec.decode_indices(data, "r.vqz"), grid)


def test_real_patches_round_trip_bit_exactly(sample_dir, tmp_path):
    ckpt = make_checkpoint(tmp_path / "real.pt", sample_dir / LMDB_NAME)
    model, cfg = load_model(ckpt)
    codec = Codec(model, str(ckpt))
    from vqae.data.source import DataSource

    with DataSource(cfg.data) as source:
        ds = source.dataset("all")
        x = torch.stack([ds[i]["image"] for i in range(8)])  # (8, 12, 120, 120)
    grids = codec.encode_images(x)
    for grid in grids:
        np.testing.assert_array_equal(
            codec.decode_indices(codec.encode_indices(grid).data, "real.vqz"), grid)


def test_coded_size_is_within_one_percent_of_the_ideal_entropy_plus_framing(codec):
    grids = np.stack([codec.encode_images(torch.full((1, 12, 120, 120), v))[0]
                      for v in (300.0, 900.0, 2500.0)])
    for grid in [*grids, *random_grids(codec, 4, seed=1)]:
        enc = codec.encode_indices(grid)
        overhead = enc.header_bytes + codec.depth * CHUNK_FRAMING
        assert 8 * len(enc.data) <= 1.01 * enc.ideal_bits + 8 * overhead


def test_a_file_cut_after_chunk_k_decodes_at_k_stages(codec):
    grid = random_grids(codec, 3, seed=2)[2]
    data = codec.encode_indices(grid).data
    parsed = bitstream.read(data, "x")
    ends = np.cumsum([parsed.header_bytes] + [len(bitstream.varint(len(p))) + 4 + len(p)
                                               for p in parsed.payloads])
    for k in range(1, codec.depth + 1):
        got = codec.decode_indices(data[: ends[k]], "cut.vqz")
        np.testing.assert_array_equal(got, grid[:k])
        shallow = codec.encode_indices(grid[:k]).data  # the same chunks, a header saying k
        assert data[ends[0]: ends[k]] == shallow[ends[0]:]
        np.testing.assert_array_equal(codec.decode_indices(data, "x", depth=k), grid[:k])


def error_of(codec, data: bytes, name="p.vqz") -> str:
    with pytest.raises(DataError) as info:
        codec.decode_indices(data, name)
    message = str(info.value)
    assert name in message and "\n" not in message
    return message


def test_wrong_model_truncated_damaged_and_empty_files_are_clear_errors(codec, other_ckpt):
    grid = random_grids(codec, 1)[2]
    data = codec.encode_indices(grid).data
    other, _ = load_model(other_ckpt)
    assert "another model" in error_of(Codec(other, "other.pt"), data)
    assert "empty" in error_of(codec, b"")
    assert "not a .vqz" in error_of(codec, b"GIF89a" + data)
    assert "truncated inside its header" in error_of(codec, data[:10])
    assert "truncated" in error_of(codec, data[:-3])  # inside the last chunk
    flipped = bytearray(data)
    flipped[-5] ^= 0x10  # a payload bit
    assert "CRC32" in error_of(codec, bytes(flipped))
    flipped = bytearray(data)
    flipped[8] ^= 0x01  # a fingerprint bit: the header's own CRC catches it
    assert "header fails its CRC32" in error_of(codec, bytes(flipped))
    assert "after its last chunk" in error_of(codec, data + b"\0")


def test_unfitted_prior_refuses_to_compress(fake_patches, tmp_path):
    ckpt = make_checkpoint(tmp_path / "raw.pt", fake_patches, fit=False)
    model, _ = load_model(ckpt)
    with pytest.raises(DataError, match="fit-prior"):
        Codec(model, str(ckpt)).require_fitted()
