"""A real scene round-trips through `vqae compress` / `vqae decompress` with its CRS,
geotransform and nodata, every band at its native size, and a region decodes alone."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from tests.scene.conftest import HEIGHT, WIDTH, native_shape, write_band
from vqae.cli import main
from vqae.data.bands import S2_BANDS
from vqae.scene import decompress_scene, read_region
from vqae.scene.container import SceneFile
from vqae.scene.scene_codec import Region, SceneDecoder


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = (np.clip(v.astype(np.float64), 0, 10000) for v in (a, b))
    return 10 * np.log10(1e8 / max(((a - b) ** 2).mean(), 1e-12))


def test_the_cli_round_trip_keeps_crs_transform_nodata_and_native_sizes(
        scene_ckpt, real_scene, tmp_path, capsys):
    vqz, out = tmp_path / "scene.vqz", tmp_path / "decoded"
    assert main(["compress", str(scene_ckpt), str(real_scene), "-o", str(vqz),
                 "--no-progress"]) == 0
    assert '"width": 357' in capsys.readouterr().out
    assert main(["decompress", str(vqz), "-o", str(out), "--ckpt", str(scene_ckpt),
                 "--no-progress"]) == 0
    for band in S2_BANDS:
        with rasterio.open(real_scene / f"T18SVG_{band}.tif") as a, \
                rasterio.open(out / f"scene_{band}.tif") as b:
            assert (b.crs, b.transform, b.nodata) == (a.crs, a.transform, a.nodata), band
            assert b.shape == a.shape == native_shape(band)
            assert b.descriptions == (band,)
            assert b.profile["tiled"] and b.profile["compress"] == "deflate"
            original, decoded = a.read(1), b.read(1)
        nodata = original == 0
        assert nodata.any() and (decoded[nodata] == 0).all(), band  # nodata stays nodata
        assert (decoded[~nodata] != 0).all(), band  # and no valid pixel becomes nodata
        assert psnr(original[~nodata], decoded[~nodata]) > 25, band


def test_a_region_decodes_alone_to_the_pixels_of_the_whole_scene(scene_codec, scene_file,
                                                                  tmp_path):
    whole = read_region(scene_codec, scene_file)
    assert {b: a.shape for b, a in whole.items()} == {b: native_shape(b) for b in S2_BANDS}
    part = read_region(scene_codec, scene_file, (130, 250, 200, 97))
    assert part["B02"].shape == (97, 200)
    assert (part["B02"] == whole["B02"][250:347, 130:330]).all()
    assert (part["B05"] == whole["B05"][125:174, 65:165]).all()
    assert (part["B01"] == whole["B01"][41:58, 21:55]).all()
    with open(scene_file, "rb") as f:  # a corner tile decodes itself and its ring only
        decoder = SceneDecoder(scene_codec, SceneFile(f, scene_file.stat().st_size, "s"))
        list(decoder.rows(Region(0, 0, 10, 10)))
        assert sorted(decoder.decoded) == [(0, 0), (0, 1), (1, 0), (1, 1)]
        assert set(decoder.tiles) <= {(r, c) for r in range(3) for c in range(3)}


def test_a_region_writes_georeferenced_rasters_of_its_window(scene_codec, scene_file,
                                                            real_scene, tmp_path):
    paths = decompress_scene(scene_codec, scene_file, tmp_path / "win", window=(120, 240, 60, 60))
    with rasterio.open(real_scene / "T18SVG_B02.tif") as a, \
            rasterio.open(tmp_path / "win" / "T18SVG_B02.tif") as b:
        assert b.shape == (60, 60)
        assert b.transform == a.transform @ a.transform.translation(120, 240)
    with rasterio.open(tmp_path / "win" / "T18SVG_B01.tif") as b:
        assert b.shape == (10, 10)
    assert len(paths) == 12


def test_fewer_stages_read_a_smaller_file_and_decode(scene_codec, real_scene, scene_file,
                                                     tmp_path):
    from vqae.scene import compress_scene

    shallow = tmp_path / "d1.vqz"
    compress_scene(scene_codec, real_scene, shallow, depth=1)
    assert shallow.stat().st_size < scene_file.stat().st_size
    one = read_region(scene_codec, shallow)
    assert (one["B02"] == read_region(scene_codec, scene_file, depth=1)["B02"]).all()


def test_a_multiband_geotiff_with_band_names_compresses(scene_codec, scene_arrays, tmp_path):
    from vqae.scene import compress_scene

    a, crs, transform = scene_arrays["B02"]
    stack = np.stack([np.resize(scene_arrays["B02"][0], a.shape)] * 12)
    path = tmp_path / "stack.tif"
    with rasterio.open(path, "w", driver="GTiff", width=a.shape[1], height=a.shape[0],
                       count=12, dtype="uint16", crs=crs, transform=transform) as d:
        d.write(stack)
        for i, band in enumerate(reversed(S2_BANDS)):
            d.set_band_description(i + 1, band)
    summary = compress_scene(scene_codec, path, tmp_path / "stack.vqz")
    assert (summary["width"], summary["height"]) == (WIDTH, HEIGHT)
    bands = read_region(scene_codec, tmp_path / "stack.vqz")
    assert all(v.shape == a.shape for v in bands.values())  # every band on the file's grid


def test_a_folder_of_jpeg2000_bands_codes_as_its_geotiffs(scene_codec, real_scene, scene_file,
                                                         tmp_path):
    """A SAFE IMG_DATA folder holds lossless JPEG 2000 per band (`..._B8A_20m.jp2` in L2A):
    the same pixels and georeferencing give the same file."""
    from vqae.scene import compress_scene

    safe = tmp_path / "IMG_DATA"
    for band in S2_BANDS:
        with rasterio.open(real_scene / f"T18SVG_{band}.tif") as src:
            profile = {"driver": "JP2OpenJPEG", "width": src.width, "height": src.height,
                       "count": 1, "dtype": "uint16", "crs": src.crs,
                       "transform": src.transform, "nodata": src.nodata,
                       "QUALITY": "100", "REVERSIBLE": "YES"}
            res = {WIDTH: "10m", -(-WIDTH // 2): "20m", -(-WIDTH // 6): "60m"}[src.width]
            (safe / f"R{res}").mkdir(parents=True, exist_ok=True)
            with rasterio.open(safe / f"R{res}" / f"T18SVG_20160112_{band}_{res}.jp2", "w",
                               **profile) as dst:
                dst.write(src.read())
    out = compress_scene(scene_codec, safe, tmp_path / "jp2.vqz")
    assert out["crs"] == "EPSG:32618"
    assert (tmp_path / "jp2.vqz").read_bytes() == scene_file.read_bytes()
