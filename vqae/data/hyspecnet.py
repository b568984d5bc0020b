"""HySpecNet-11k (EnMAP L2A) patches: one `<patch>-SPECTRAL_IMAGE.TIF` of 224 bands per patch.

Only the spectral image is data; the quality layers (`-QL_*.TIF`) and thumbnails beside it are
skipped. Band names follow rico-hdl: `B1` ... `B224`, each (128, 128) int16 as stored.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vqae.data.bands import HYSPECNET_BANDS, HYSPECNET_DTYPE, HYSPECNET_SIZE
from vqae.data.geotiff import Expected, read_tiff
from vqae.errors import DataError

SPECTRAL_SUFFIX = "-SPECTRAL_IMAGE"


def _patch_of(filename: str) -> str | None:
    stem, ext = os.path.splitext(filename)
    if ext.lower() not in (".tif", ".tiff") or not stem.endswith(SPECTRAL_SUFFIX):
        return None
    return stem[: -len(SPECTRAL_SUFFIX)]


def find_hyspecnet(root: str | Path) -> dict[str, Path]:
    """Patch name -> its SPECTRAL_IMAGE file, at any depth under root, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"HySpecNet-11k root {root} is not a folder; pass the unpacked dataset")
    found: dict[str, Path] = {}
    for folder, _dirs, files in os.walk(root, followlinks=True):
        for filename in files:
            if (name := _patch_of(filename)) is None:
                continue
            path = Path(folder) / filename
            if name in found:
                raise DataError(
                    f"HySpecNet patch {name} appears twice: {found[name]} and {path}; remove one"
                )
            found[name] = path
    if not found:
        raise DataError(
            f"no HySpecNet-11k patches under {root}; expected files like "
            f"{root}/<patch>/<patch>{SPECTRAL_SUFFIX}.TIF"
        )
    return dict(sorted(found.items()))


def read_hyspecnet(path: str | Path) -> dict[str, np.ndarray]:
    """Band name (B1..B224) -> (128, 128) int16 arrays; a header declaring another shape or
    dtype is refused before decoding, naming the file."""
    expected = Expected(len(HYSPECNET_BANDS), HYSPECNET_SIZE, HYSPECNET_SIZE, HYSPECNET_DTYPE,
                        f"{path}: spectral image", "(bands, height, width) for a HySpecNet-11k "
                        "patch")
    cube = read_tiff(path, expected)  # (224, 128, 128), checked from the header
    return {band: cube[i] for i, band in enumerate(HYSPECNET_BANDS)}
