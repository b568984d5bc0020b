"""Bad scenes and damaged scene files: one-line errors naming the file, nothing written."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine

from tests.scene.conftest import write_scene
from vqae.cli import main
from vqae.errors import DataError
from vqae.scene import compress_scene, read_region


def refused(codec, scene, tmp_path, *words) -> str:
    out = tmp_path / "out.vqz"
    with pytest.raises(DataError) as err:
        compress_scene(codec, scene, out)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message
    assert not out.exists() and not list(tmp_path.glob(".out.vqz*"))  # nothing half-written
    return message


def test_rasters_that_disagree_on_crs_extent_or_resolution_are_refused(
        scene_codec, scene_arrays, tmp_path):
    def crs(band, a, kw):
        return a, kw | ({"crs": CRS.from_epsg(32633)} if band == "B05" else {})

    def shifted(band, a, kw):
        t = kw["transform"]
        return a, kw | ({"transform": t @ Affine.translation(3, 0)} if band == "B11" else {})

    def resolution(band, a, kw):  # B06 handed over at 10 m
        if band != "B06":
            return a, kw
        t = kw["transform"]
        return np.repeat(np.repeat(a, 2, 0), 2, 1), kw | {
            "transform": Affine(t.a / 2, 0, t.c, 0, t.e / 2, t.f)}

    def cropped(band, a, kw):
        return (a[:-10] if band == "B12" else a), kw

    for change, words in ((crs, ("T18SVG_B05.tif", "CRS")),
                          (shifted, ("T18SVG_B11.tif", "different extents")),
                          (resolution, ("T18SVG_B06.tif", "native resolution")),
                          (cropped, ("T18SVG_B12.tif", "different extents"))):
        scene = write_scene(tmp_path / change.__name__, scene_arrays, change=change)
        refused(scene_codec, scene, tmp_path, *words)


def test_a_missing_band_names_it(scene_codec, scene_arrays, tmp_path):
    scene = write_scene(tmp_path / "missing", scene_arrays, skip=("B8A",))
    refused(scene_codec, scene, tmp_path, "B8A", "no raster")


def test_a_raster_without_crs_compresses_and_decodes_without_one(scene_codec, scene_ckpt,
                                                                 scene_arrays, tmp_path,
                                                                 capsys):
    scene = write_scene(tmp_path / "nocrs", scene_arrays,
                        change=lambda b, a, kw: (a, kw | {"crs": None}))
    out = tmp_path / "nocrs.vqz"
    assert main(["compress", str(scene_ckpt), str(scene), "-o", str(out), "--no-progress"]) == 0
    assert "has no CRS" in capsys.readouterr().out
    assert main(["decompress", str(out), "-o", str(tmp_path / "dec"), "--ckpt",
                 str(scene_ckpt), "--no-progress"]) == 0
    with rasterio.open(tmp_path / "dec" / "nocrs_B02.tif") as d:
        assert d.crs is None and d.nodata == 0


def test_a_huge_declared_size_is_refused_before_reading(scene_codec, tmp_path):
    scene = tmp_path / "huge"
    scene.mkdir()
    from vqae.data.bands import NATIVE_SIZE, S2_BANDS

    for band in S2_BANDS:  # sparse files: GDAL writes no block of them
        f = 120 // NATIVE_SIZE[band]
        with rasterio.open(scene / f"H_{band}.tif", "w", driver="GTiff", count=1,
                           width=100_000 // f, height=100_000 // f, dtype="uint16",
                           crs="EPSG:32618", transform=Affine(10 * f, 0, 0, 0, -10 * f, 0),
                           tiled=True, sparse_ok=True, compress="deflate"):
            pass
    assert sum(p.stat().st_size for p in scene.iterdir()) < 50 << 20
    refused(scene_codec, scene, tmp_path, "H_B02.tif", "100,000 x 100,000", "--max-pixels")


def test_a_nodata_value_the_data_never_uses_codes_no_mask(scene_codec, scene_arrays, tmp_path):
    scene = write_scene(tmp_path / "unused", scene_arrays,
                        change=lambda b, a, kw: (np.maximum(a, 1), kw | {"nodata": 0}))
    out = tmp_path / "unused.vqz"
    compress_scene(scene_codec, scene, out)
    bands = read_region(scene_codec, out)
    assert all((v != 0).all() for v in bands.values())  # nothing decodes as nodata


def test_rasters_that_disagree_on_nodata_or_dtype_are_refused(scene_codec, scene_arrays,
                                                              tmp_path):
    scene = write_scene(tmp_path / "nd", scene_arrays,
                        change=lambda b, a, kw: (a, kw | ({"nodata": 7} if b == "B03" else {})))
    refused(scene_codec, scene, tmp_path, "different nodata", "--nodata")
    scene = write_scene(tmp_path / "dt", scene_arrays,
                        change=lambda b, a, kw: (a.astype(np.int16) if b == "B04" else a, kw))
    refused(scene_codec, scene, tmp_path, "T18SVG_B04.tif", "int16")


def damaged(scene_file, tmp_path, edit):
    data = bytearray(scene_file.read_bytes())
    data = edit(data)
    path = tmp_path / "bad.vqz"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("edit, words", [
    (lambda d: d[: len(d) // 2], "index"),
    (lambda d: d[:-1], "index"),
    (lambda d: d[:30], "ends inside"),
    (lambda d: d.__setitem__(len(d) // 2, d[len(d) // 2] ^ 1) or d, "fails its CRC"),
    (lambda d: d.__setitem__(12, d[12] ^ 1) or d, "header fails its CRC"),
    (lambda d: d.__setitem__(40, d[40] ^ 1) or d, "metadata"),
])
def test_a_damaged_scene_file_is_a_one_line_error(scene_codec, scene_file, tmp_path, edit,
                                                  words):
    bad = damaged(scene_file, tmp_path, edit)
    with pytest.raises(DataError) as err:
        read_region(scene_codec, bad)
    assert words in str(err.value) and "bad.vqz" in str(err.value) and "\n" not in str(err.value)


def test_another_model_or_a_window_outside_the_scene_is_refused(scene_file, structured_ckpt,
                                                               scene_codec, tmp_path):
    from vqae.codec.codec import Codec

    with pytest.raises(DataError, match="another model"):
        read_region(Codec.from_checkpoint(structured_ckpt, "cpu"), scene_file)
    with pytest.raises(DataError, match="outside"):
        read_region(scene_codec, scene_file, (300, 0, 100, 10))
    out = tmp_path / "dec"
    with pytest.raises(DataError, match="outside"):
        from vqae.scene import decompress_scene

        decompress_scene(scene_codec, scene_file, out, window=(0, 0, 0, 10))
    assert not out.exists()


def test_scene_mode_refuses_patch_options_and_an_existing_output(scene_ckpt, real_scene,
                                                                 scene_file, tmp_path, capsys):
    out = tmp_path / "x.vqz"
    assert main(["compress", str(scene_ckpt), str(real_scene), "-o", str(out),
                 "--max-error", "2"]) != 0
    assert "--max-error" in capsys.readouterr().err and not out.exists()
    out.write_bytes(b"mine")
    assert main(["compress", str(scene_ckpt), str(real_scene), "-o", str(out),
                 "--overwrite", "--no-progress"]) != 0
    assert out.read_bytes() == b"mine"  # not ours: never replaced


def test_nodata_at_a_padded_edge_is_no_data_to_the_encoder(scene_codec, scene_arrays,
                                                           tmp_path):
    """A nodata column at the scene's right edge (357 px: the last tile is padded by
    mirroring) must not reach the encoder as a value: its neighbours decode as well as
    without it."""
    def errors(change):
        scene = write_scene(tmp_path / change.__name__, scene_arrays, change=change)
        compress_scene(scene_codec, scene, tmp_path / f"{change.__name__}.vqz")
        got = read_region(scene_codec, tmp_path / f"{change.__name__}.vqz")["B02"]
        want = scene_arrays["B02"][0]
        valid = want[:, 240:-1] != 0
        return np.abs(got[:, 240:-1].astype(float) - want[:, 240:-1])[valid].mean()

    def plain(band, a, kw):
        return a, kw

    def edge(band, a, kw):
        a = a.copy()
        a[:, -1] = 0
        return a, kw

    assert errors(edge) < 1.5 * errors(plain) + 5


def test_a_stack_whose_band_names_repeat_or_miss_a_band_is_refused(scene_codec, scene_arrays,
                                                                  tmp_path):
    a, crs, transform = scene_arrays["B02"]
    from vqae.data.bands import S2_BANDS

    for names, words in ((["B11", *S2_BANDS[1:]], "B11 twice"),
                         ([*S2_BANDS[:-1], "B8A"], "no B12")):
        path = tmp_path / f"{words.split()[0]}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0],
                           count=12, dtype="uint16", crs=crs, transform=transform) as d:
            d.write(np.stack([a] * 12))
            for i, band in enumerate(names):
                d.set_band_description(i + 1, band)
        refused(scene_codec, path, tmp_path, path.name, words)


def test_crafted_georeferencing_is_a_data_error():
    from vqae.codec.georef import Georef

    with pytest.raises(DataError, match="x.vqz: its CRS is not one GDAL reads"):
        Georef("hello world").rasterio_fields(1, 0, 0, "x.vqz")
    for transform in (b"1" + b"0" * 400, b"1e308"):
        raw = b'{"crs": null, "transform": [' + transform + b', 0, 0, 0, -10, 0], "nodata": 0}'
        with pytest.raises(DataError, match="transform"):
            Georef.parse(raw, "x.vqz")


def test_the_scene_report_keeps_what_it_did_not_write(scene_ckpt, real_scene, tmp_path,
                                                      capsys):
    out = tmp_path / "rd"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["rd", "--scene", "--ckpt", str(scene_ckpt), "--data", str(real_scene),
                 "--out", str(out), "--jpeg2000-quality", "50"]) != 0
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    inside = real_scene / "rd"
    assert main(["rd", "--scene", "--ckpt", str(scene_ckpt), "--data", str(real_scene),
                 "--out", str(inside)]) != 0
    assert not inside.exists()


def test_a_malformed_window_is_a_data_error(scene_codec, scene_file):
    with pytest.raises(DataError, match="X,Y,WIDTH,HEIGHT"):
        read_region(scene_codec, scene_file, ())


def test_contradicting_options_or_a_missing_output_folder_are_refused(scene_codec, real_scene,
                                                                      tmp_path):
    with pytest.raises(DataError, match="contradict"):
        compress_scene(scene_codec, real_scene, tmp_path / "a.vqz", nodata=0,
                       ignore_nodata=True)
    with pytest.raises(DataError, match="does not exist"):
        compress_scene(scene_codec, real_scene, tmp_path / "nowhere" / "a.vqz")
    assert not (tmp_path / "a.vqz").exists() and not (tmp_path / "nowhere").exists()


def test_bytes_after_a_tiles_last_stage_are_damage(scene_codec, scene_file, tmp_path):
    """Junk inside a tile's record, with an index rewritten to match, is still refused."""
    import struct
    import zlib

    from vqae.scene.container import SceneFile

    data = scene_file.read_bytes()
    with open(scene_file, "rb") as f:
        offsets = SceneFile(f, len(data), "s").offsets
    end0, index_at = int(offsets[1]), int(offsets[-1])
    lengths = list(np.diff(offsets).astype(int))
    lengths[0] += 2
    index = struct.pack(f"<I{len(lengths)}I", len(lengths), *lengths)
    crafted = (data[:end0] + b"\x01\x02" + data[end0:index_at] + index
               + struct.pack("<IQ4s", zlib.crc32(index), index_at + 2, b"VQZI"))
    bad = tmp_path / "junk.vqz"
    bad.write_bytes(crafted)
    with pytest.raises(DataError, match="tile 0 has bytes after its last stage"):
        read_region(scene_codec, bad, (0, 0, 10, 10))
