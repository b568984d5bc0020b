"""Seeded tiny fake BigEarthNet trees written as real GeoTIFFs (v1 and v2 layouts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

from vqae.data.bands import NATIVE_SIZE, S1_BANDS, S2_BANDS


def write_tiff(path: Path, array: np.ndarray, nodata=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = array[None] if array.ndim == 2 else array
    profile = dict(driver="GTiff", height=array.shape[1], width=array.shape[2],
                   count=array.shape[0], dtype=array.dtype.name, nodata=nodata)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def fake_s2_bands(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Smooth-ish uint16 reflectances at native band sizes."""
    out = {}
    for band in S2_BANDS:
        n = NATIVE_SIZE[band]
        base = rng.integers(200, 3000)
        out[band] = (base + rng.integers(0, 800, (n, n))).astype(np.uint16)
    return out


def fake_s1_bands(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {b: rng.normal(-15, 4, (120, 120)).astype(np.float32) for b in S1_BANDS}


def patch_names(n: int, prefix: str = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP") -> list[str]:
    return [f"{prefix}_{i // 10}_{i % 10}" for i in range(n)]


def write_fake_tree(root: Path, n: int = 4, layout: str = "v1", seed: int = 0,
                    suffix: str = ".tif") -> dict[str, dict[str, np.ndarray]]:
    """Write n S2 patches under root; return patch -> band -> array as written."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in patch_names(n):
        folder = root / name if layout == "v1" else root / name.rsplit("_", 2)[0] / name
        bands = fake_s2_bands(rng)
        for band, arr in bands.items():
            write_tiff(folder / f"{name}_{band}{suffix}", arr)
        written[name] = bands
    return written


def write_fake_s1_tree(root: Path, names: list[str], seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    written = {}
    for name in names:
        bands = fake_s1_bands(rng)
        for band, arr in bands.items():
            write_tiff(root / "S1_scene" / name / f"{name}_{band}.tif", arr)
        written[name] = bands
    return written
