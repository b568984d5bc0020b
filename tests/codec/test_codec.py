"""Indices <-> .vqz bytes: bit-exact round trips, size vs ideal entropy, progressive prefixes,
and the clear errors for wrong, cut, damaged and empty files."""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np
import pytest
import torch

from tests.codec.conftest import make_checkpoint
from vqae.checkpoint.manager import load_model
from vqae.codec import bandfilter, bitstream
from vqae.codec.codec import Codec, Parsed
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
        data = codec.pack(grid).data
        np.testing.assert_array_equal(codec.parse(data, source="r.vqz").indices, grid)


def test_real_patches_round_trip_bit_exactly(sample_dir, tmp_path):
    ckpt = make_checkpoint(tmp_path / "real.pt", sample_dir / LMDB_NAME)
    model, cfg = load_model(ckpt)
    codec = Codec(model, str(ckpt))
    from vqae.data.source import DataSource

    with DataSource(cfg.data) as source:
        ds = source.dataset("all")
        x = torch.stack([ds[i]["image"] for i in range(8)])  # (8, 12, 120, 120)
    grids, patch_means = codec.analyse(x)
    assert patch_means.shape == (8, 0)  # a model with global statistics sends no side information
    for grid in grids:
        np.testing.assert_array_equal(
            codec.parse(codec.pack(grid).data, source="real.vqz").indices, grid)


def test_coded_size_is_within_one_percent_of_the_ideal_entropy_plus_framing(codec):
    grids = np.stack([codec.analyse(torch.full((1, 12, 120, 120), v))[0][0]
                      for v in (300.0, 900.0, 2500.0)])
    for grid in [*grids, *random_grids(codec, 4, seed=1)]:
        enc = codec.pack(grid)
        overhead = enc.header_bytes + codec.depth * CHUNK_FRAMING
        assert 8 * len(enc.data) <= 1.01 * enc.ideal_bits + 8 * overhead


def test_a_file_cut_after_chunk_k_decodes_at_k_stages(codec):
    grid = random_grids(codec, 3, seed=2)[2]
    data = codec.pack(grid).data
    parsed = bitstream.read(data, "x")
    ends = np.cumsum([parsed.header_bytes] + [len(bitstream.varint(len(p))) + 4 + len(p)
                                               for p in parsed.payloads])
    for k in range(1, codec.depth + 1):
        got = codec.parse(data[: ends[k]], source="cut.vqz").indices
        np.testing.assert_array_equal(got, grid[:k])
        shallow = codec.pack(grid[:k]).data  # the same chunks, a header saying k
        assert data[ends[0]: ends[k]] == shallow[ends[0]:]
        np.testing.assert_array_equal(codec.parse(data, k, "x").indices, grid[:k])


def error_of(codec, data: bytes, name="p.vqz") -> str:
    with pytest.raises(DataError) as info:
        codec.parse(data, source=name)
    message = str(info.value)
    assert name in message and "\n" not in message
    return message


def test_wrong_model_truncated_damaged_and_empty_files_are_clear_errors(codec, other_ckpt):
    grid = random_grids(codec, 1)[2]
    data = codec.pack(grid).data
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
    by_hand = Codec(model, str(ckpt))  # a library user's Codec, not from_checkpoint
    grid = np.zeros((by_hand.depth, by_hand.h, by_hand.w), np.int64)
    with pytest.raises(DataError, match="fit-prior"):
        by_hand.pack(grid)
    with pytest.raises(DataError, match="fit-prior"):
        by_hand.compress(torch.zeros(12, 120, 120))


@pytest.fixture(scope="module")
def per_patch(fake_patches, tmp_path_factory) -> Codec:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("pp") / "pp.pt", fake_patches,
                           overrides=["model.patch_means=true"])
    model, _ = load_model(ckpt)
    return Codec(model, str(ckpt))


def patches(n: int = 3) -> torch.Tensor:
    x = 300 + 2500 * torch.rand(n, 12, 120, 120, generator=torch.Generator().manual_seed(5))
    return x.round()


def test_band_means_travel_in_the_header_and_restore_the_brightness(per_patch):
    x = patches()
    grids, patch_means = per_patch.analyse(x)
    assert patch_means.shape == (3, 12) and patch_means.dtype == np.int64
    for grid, side in zip(grids, patch_means):
        enc = per_patch.pack(grid, side)
        assert enc.header_bytes == 28 + 2 * 12  # a 28-byte header and a u16 mean per band
        back, header = per_patch.parse(enc.data, source="m.vqz")
        np.testing.assert_array_equal(back, grid)
        assert header.patch_means == tuple(side)
        dn = per_patch.decode_images(back[None], np.array([side]))[0]
        want = per_patch.model.decode(torch.from_numpy(grid)[None],
                                      torch.from_numpy(side[None]).float())[0]
        np.testing.assert_array_equal(dn, want.detach().numpy())
        # the brightness is the sent means': 700 DN more in the header, 700 DN brighter
        brighter = per_patch.decode_images(back[None], np.array([side + 700]))[0]
        np.testing.assert_allclose(brighter - dn, 700, atol=1e-3)


def test_patch_means_must_match_the_model(per_patch):
    grid, side = (a[0] for a in per_patch.analyse(patches(1)))
    with pytest.raises(AssertionError, match="patch means"):
        per_patch.pack(grid)  # a per-patch model's file without its means
    real = per_patch.pack(grid, side).data
    header, pos = bitstream.parse_header(real, "x")
    no_means = dataclasses.replace(header, patch_means=()).pack()  # valid CRC, means left out
    assert "patch means" in error_of(per_patch, no_means + real[pos:])


@pytest.fixture(scope="module")
def scaled(fake_patches, tmp_path_factory) -> Codec:
    ckpt = make_checkpoint(tmp_path_factory.mktemp("ps") / "ps.pt", fake_patches,
                           overrides=["model.patch_means=true", "model.patch_scales=true"])
    model, _ = load_model(ckpt)
    return Codec(model, str(ckpt))


def test_patch_scales_travel_in_a_version_5_header_and_restore_the_contrast(scaled, per_patch):
    x = patches()
    x[1] = (x[1] - x[1].mean()) * 9 + 3000  # nine times the contrast: a larger scale code
    x[2] = 800.0  # a constant patch: the lowest scale code
    grids, side = scaled.analyse(x)
    assert side.shape == (3, 24)  # 12 means, then 12 scale codes
    assert (side[1, 12:] - side[0, 12:] >= 45).all() and (side[2, 12:] == -32).all()
    for grid, values in zip(grids, side):
        enc = scaled.pack(grid, values, "gain", np.full(12, 64))
        assert enc.header_bytes == 28 + 2 * 12 + (1 + 12) + 12  # scales: a count, an int8 each
        back, header = scaled.parse(enc.data, source="s.vqz")
        assert header.version == 5 and header.patch_means == tuple(values[:12])
        assert header.patch_scales == tuple(values[12:])
        np.testing.assert_array_equal(back, grid)
        dn = scaled.pixels(bitstream_parsed := scaled.parse(enc.data))
        want = scaled.model.decode(torch.from_numpy(grid)[None],
                                   torch.from_numpy(values[None]).float())[0].detach().numpy()
        np.testing.assert_allclose(dn, want, atol=1e-3)  # the gain 1.0 filter changes nothing
        assert bitstream_parsed.header.filter_kind == "gain"
    # a scale code of +16 doubles the decoded deviations from the patch means
    grid, values = grids[0], side[0].copy()
    base = scaled.decode_images(grid[None], values[None])[0]
    values[12:] += 16
    wider = scaled.decode_images(grid[None], values[None])[0]
    means = values[:12, None, None]
    np.testing.assert_allclose(wider - means, 2 * (base - means), rtol=1e-4, atol=1e-2)
    # files without scales stay version 4, byte for byte what that version wrote
    grid, m = (a[0] for a in per_patch.analyse(patches(1)))
    assert bitstream.parse_header(per_patch.pack(grid, m).data, "x")[0].version == 4
    assert per_patch.format_version == 4 and scaled.format_version == 5
    # another model's count of scale codes is damage, named
    real = scaled.pack(grids[0], side[0]).data
    header, pos = bitstream.parse_header(real, "x")
    assert "patch scales" in error_of(per_patch, dataclasses.replace(
        header, fingerprint=per_patch.fingerprint).pack() + real[pos:])


def plain_chunks(data: bytes) -> bytes:
    """A file's chunks as versions 1-3 wrote them: each with the plain CRC32 of its payload."""
    return b"".join(bitstream.varint(len(p)) + zlib.crc32(p).to_bytes(4, "little") + p
                    for p in bitstream.read(data, "x").payloads)


def as_version(data: bytes, version: int, drop: int) -> bytes:
    """A current file rewritten as an older version wrote it: `drop` header bytes before the
    CRC left out (fields that version lacks, all zero), its own header CRC, plain chunk CRCs."""
    header, _ = bitstream.parse_header(data, "v4")
    old = header.pack()[: -4 - drop]
    old = old[:4] + bytes([version]) + old[5:]
    return old + zlib.crc32(old).to_bytes(4, "little") + plain_chunks(data)


def as_version_1(data: bytes) -> bytes:
    """A file of a model without side information as version 1 wrote it: no patch_means or gains
    count byte."""
    return as_version(data, 1, drop=2)


def test_version_1_files_still_decode(codec):
    grid = random_grids(codec, 1, seed=4)[2]
    v1 = as_version_1(codec.pack(grid).data)
    assert v1[4] == 1
    np.testing.assert_array_equal(codec.parse(v1, source="old.vqz").indices, grid)
    v9 = bytearray(v1)
    v9[4] = 9
    assert "version 9" in error_of(codec, bytes(v9))


def test_version_3_files_with_plain_chunk_crcs_still_decode(codec):
    grid = random_grids(codec, 1, seed=5)[2]
    v4 = codec.pack(grid, (), "gain", np.full(12, 64)).data
    v3 = as_version(v4, 3, drop=0)
    assert v3[4] == 3 and len(v3) == len(v4) and v3 != v4
    back, header = codec.parse(v3, source="old.vqz")
    np.testing.assert_array_equal(back, grid)
    assert header.version == 3 and header.filter_codes == (64,) * 12


def test_chunks_are_bound_to_their_stage_and_model(codec):
    """Version 4: a chunk's CRC starts from its model and stage, so a zeroed chunk, two stages
    swapped, or a chunk of another model's file is damage."""
    a = codec.pack(random_grids(codec, 1, seed=6)[2]).data
    pa = bitstream.read(a, "a").payloads
    _, start = bitstream.parse_header(a, "a")

    def framed(payloads, crcs):
        return b"".join(bitstream.varint(len(p)) + c.to_bytes(4, "little") + p
                        for p, c in zip(payloads, crcs))

    header = a[:start]
    swapped = [pa[1], pa[0], *pa[2:]]
    crcs = [bitstream.chunk_crc(p, s, codec.fingerprint) for s, p in enumerate(pa)]
    assert "CRC32" in error_of(codec, header + framed(swapped, [crcs[1], crcs[0], *crcs[2:]]))
    other = [bitstream.chunk_crc(p, s, bytes(8)) for s, p in enumerate(pa)]
    assert "CRC32" in error_of(codec, header + framed(pa, other))  # another model's chunks
    np.testing.assert_array_equal(codec.parse(header + framed(pa, crcs), source="a").indices,
                                  random_grids(codec, 1, seed=6)[2])
    zeroed = header + bytes(5 * len(pa))  # length 0, CRC 0: the CRC32 of nothing
    assert "CRC32" in error_of(codec, zeroed)


# ---- band filters -----------------------------------------------------------------------

def lost_contrast(seed: int = 3):
    """Originals (4, 12, 16, 16) and a decoding with their structure at 2/3 of the contrast."""
    rng = np.random.default_rng(seed)
    x = rng.normal(1500, 300, (4, 12, 16, 16))
    patch_means = x.mean(axis=(-2, -1))
    decoded = patch_means[..., None, None] + (x - patch_means[..., None, None]) / 1.5
    return x, (decoded + rng.normal(0, 5, x.shape)).astype(np.float32), patch_means, rng


def mse(y, x):
    return ((y - x) ** 2).mean(axis=(-2, -1))  # (B, C)


def test_band_gains_recover_a_lost_contrast():
    x, decoded, patch_means, _ = lost_contrast()
    codes = bandfilter.fit("gain", x, decoded, patch_means)
    assert codes.shape == (4, 12) and codes.dtype == np.int64
    np.testing.assert_allclose(codes / bandfilter.GAIN_STEP, 1.5, atol=0.05)
    fixed = bandfilter.apply(decoded, patch_means, "gain", codes)
    assert fixed.dtype == np.float32
    assert mse(fixed, x).max() < 0.05 * mse(decoded, x).min()
    flat = np.full((1, 12, 8, 8), 700.0, np.float32)  # nothing to scale: gain 1
    assert (bandfilter.fit("gain", flat + 1, flat, None) == bandfilter.GAIN_STEP).all()


def test_band_mix_undoes_mixed_bands_and_no_filter_ever_adds_error():
    x, _, patch_means, rng = lost_contrast(4)
    p = patch_means[..., None, None]
    mixing = np.eye(12) * 0.7 + 0.3 * np.roll(np.eye(12), 1, axis=1)  # each band leaks into one
    decoded = (p + np.einsum("ij,bjhw->bihw", mixing, x - p)).astype(np.float32)
    codes = bandfilter.fit("mix", x, decoded, patch_means)
    assert codes.shape == (4, 144) and codes.min() >= -128 and codes.max() <= 127
    assert mse(bandfilter.apply(decoded, patch_means, "mix", codes), x).max() < 0.1 * mse(
        bandfilter.apply(decoded, patch_means, "gain", bandfilter.fit("gain", x, decoded, patch_means)),
        x).min()
    # any decoded bands, either pivot: the fitted filter never adds error to a band
    noisy = (x + rng.normal(0, 200, x.shape) - 80).astype(np.float32)
    for pivot in (patch_means, None):
        for kind in ("gain", "mix"):
            out = bandfilter.apply(noisy, pivot, kind, bandfilter.fit(kind, x, noisy, pivot))
            assert (mse(out, x) <= mse(noisy, x) + 1e-6).all(), kind
    flat = noisy.copy()
    flat[:, 3] = 900  # a flat decoded band: its column gets nothing, nothing breaks
    codes = bandfilter.fit("mix", x, flat, None).reshape(4, 12, 12)
    assert (np.delete(codes[:, :, 3], 3, axis=1) == 0).all()  # no other band takes from it


@pytest.mark.parametrize("kind", ["gain", "mix"])
def test_band_filters_travel_in_the_header_and_correct_the_decoded_patch(per_patch, kind):
    x = patches(2)
    grids, patch_means = per_patch.analyse(x)
    fitted = per_patch.fit_band_filter(kind, x, grids, patch_means)
    for grid, side, codes, patch in zip(grids, patch_means, fitted, x):
        enc = per_patch.pack(grid, side, kind, codes)
        # a 28-byte header, a u16 mean per band, one byte per filter code
        assert enc.header_bytes == 28 + 2 * 12 + {"gain": 12, "mix": 144}[kind]
        back, header = per_patch.parse(enc.data, source="f.vqz")
        assert header.filter_kind == kind and header.filter_codes == tuple(codes)
        assert header.patch_means == tuple(side)
        plain = per_patch.decode_images(back[None], side[None])[0]
        dn = per_patch.pixels(Parsed(back, header))
        p = side[:, None, None].astype(np.float64)
        m = bandfilter.matrices(kind, codes[None], 12)[0]
        want = p + np.einsum("ij,jhw->ihw", m, plain.astype(np.float64) - p)
        np.testing.assert_allclose(dn, want, rtol=0, atol=1e-3)
        assert (mse(dn, patch.numpy()) <= mse(plain, patch.numpy()) + 1e-3).all()


def as_version_2(data: bytes) -> bytes:
    """A file without a band filter as version 2 wrote it: no filter kind byte."""
    assert bitstream.parse_header(data, "x")[0].filter_kind == "none"
    return as_version(data, 2, drop=1)


def with_filter_field(data: bytes, field: bytes) -> bytes:
    """A gain file's header with its filter field replaced by `field`, with a valid CRC."""
    _, pos = bitstream.parse_header(data, "x")
    head = data[: pos - 4 - 13] + field
    return head + zlib.crc32(head).to_bytes(4, "little") + data[pos:]


def test_version_2_files_still_decode_and_impossible_filters_are_damage(per_patch):
    grid, side = (a[0] for a in per_patch.analyse(patches(1)))
    v2 = as_version_2(per_patch.pack(grid, side).data)
    assert v2[4] == 2
    back, header = per_patch.parse(v2, source="old.vqz")
    np.testing.assert_array_equal(back, grid)
    assert header.patch_means == tuple(side) and header.filter_kind == "none"
    real = per_patch.pack(grid, side, "gain", np.full(12, 64)).data
    assert "impossible values" in error_of(per_patch, with_filter_field(real, bytes([7])))
    short = with_filter_field(real, bytes([1, 64, 64, 64]))  # 3 gains where 12 bands need 12
    assert "damaged" in error_of(per_patch, short)
