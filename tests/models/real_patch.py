"""One real BigEarthNet S2 patch as (12, 120, 120) digital numbers, read with rasterio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F

from vqae.data.bands import S2_BANDS


def s2_root() -> Path:
    """$VQAE_SHARED_DATA or the shared/data folder next to the repository, then BigEarthNet-S2."""
    env = os.environ.get("VQAE_SHARED_DATA")
    data = Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return data / "rico-hdl" / "BigEarthNet" / "BigEarthNet-S2"


def first_patch_dir(root: Path) -> Path | None:
    folders = sorted(p.parent for p in root.glob("*/*/*_B02.tif*"))
    return folders[0] if folders else None


def read_band(folder: Path, band: str) -> torch.Tensor:
    (path,) = [p for p in folder.glob(f"*_{band}.tif*")]
    with rasterio.open(path) as src:
        array = src.read(1).astype(np.float32)  # (H, W) native size: 120, 60 or 20
    up = F.interpolate(torch.from_numpy(array)[None, None], size=(120, 120), mode="bilinear",
                       align_corners=False)
    return up[0, 0]


def real_patch() -> torch.Tensor:
    """(12, 120, 120) float32 DN; skips (or fails with VQAE_REQUIRE_DATA=1) if absent."""
    root = s2_root()
    folder = first_patch_dir(root) if root.is_dir() else None
    if folder is None:
        message = f"no BigEarthNet-S2 patch under {root} (set VQAE_SHARED_DATA)"
        if os.environ.get("VQAE_REQUIRE_DATA") == "1":
            pytest.fail(message + "; VQAE_REQUIRE_DATA=1 requires it")
        pytest.skip(message)
    return torch.stack([read_band(folder, band) for band in S2_BANDS])  # (12, 120, 120)
