"""Hostile GeoTIFFs are refused from their header: memory stays bounded by the expected shape,
non-regular files never block. The commands run in a child with a 3 GB address space, so a
regression fails fast instead of inflating 3.2 GB here."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests.fakes import write_fake_tree, write_tiff
from tests.hostile import one_line, run_vqae, tiff_bomb

PATCH_BAND = "B02"


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    name = next(iter(write_fake_tree(root, n=1)))
    return root, root / name / f"{name}_{PATCH_BAND}.tif"


@pytest.mark.parametrize("command", ["stats", "encode"])  # rasterio path, tifffile fast path
def test_decompression_bomb_refused_from_its_header(tree, tmp_path, command):
    root, band = tree
    tiff_bomb(band)  # ~80 KB declaring 40000 x 40000 uint16 (3.2 GB decoded)
    args = (["stats", "--data", root, "--out", tmp_path / "s.json"] if command == "stats" else
            ["encode", "--bigearthnet-s2-root", root, tmp_path / "out", "--workers", "1",
             "--no-progress"])
    message = one_line(run_vqae(*args), command)
    assert str(band) in message and "(40000, 40000) uint16" in message
    assert "expected (120, 120) uint16" in message


def test_wrong_dtype_refused(tree, tmp_path):
    root, band = tree
    band.unlink()
    write_tiff(band, np.zeros((120, 120), np.float64))
    message = one_line(run_vqae("stats", "--data", root, "--out", tmp_path / "s.json"), "stats")
    assert "(120, 120) float64" in message and "expected (120, 120) uint16" in message


def test_hyspecnet_bomb_refused(tmp_path):
    folder = tmp_path / "hsn" / "P1"
    folder.mkdir(parents=True)
    image = tiff_bomb(folder / "P1-SPECTRAL_IMAGE.TIF")
    message = one_line(run_vqae("encode", "--hyspecnet", tmp_path / "hsn", tmp_path / "out",
                                "--workers", "1", "--no-progress"), "encode")
    assert str(image) in message and "expected (224, 128, 128) int16" in message


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_non_regular_band_refused_without_blocking(tree, tmp_path, kind):
    root, band = tree
    band.unlink()
    if kind == "fifo":
        os.mkfifo(band)
    else:
        band.symlink_to("/dev/zero")
    proc = run_vqae("stats", "--data", root, "--out", tmp_path / "s.json", timeout=60)
    message = one_line(proc, "stats")
    assert str(band) in message and "not a regular file" in message


def test_oversized_tiles_refused_before_decoding(tmp_path):
    from vqae.data.geotiff import band_expected, read_tiff, read_tiff_fast
    from vqae.errors import DataError

    path = tiff_bomb(tmp_path / "t.tif", 120, 120, tile=8192)  # one 128 MiB tile for 120x120
    for read in (read_tiff_fast, read_tiff):
        with pytest.raises(DataError, match=r"8192x8192 pixels .* more than 4 MiB"):
            read(path, band_expected("B02", "P"))


def test_plain_patch_still_reads(tmp_path):
    from vqae.data.geotiff import band_expected, read_tiff, read_tiff_fast

    path = tiff_bomb(tmp_path / "ok.tif", 120, 120, rows_per_strip=15)  # a valid deflate TIFF
    for read in (read_tiff_fast, read_tiff):
        array = read(path, band_expected("B02", "P"))
        assert array.shape == (1, 120, 120) and array.dtype == np.uint16 and not array.any()
