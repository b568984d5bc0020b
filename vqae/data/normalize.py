"""Per-band normalization: (x - mean) / std, with stats from `vqae stats` or built-in defaults."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vqae.errors import DataError

# BigEarthNet-S2 (v1, L2A) band statistics in digital numbers, as published with the dataset's
# reference models; good enough to start training without running `vqae stats` first.
BIGEARTHNET_S2_STATS = {
    "B01": (340.76769064, 554.81258967), "B02": (429.9430203, 572.41639287),
    "B03": (614.21682446, 582.87945694), "B04": (590.23569706, 675.88746967),
    "B05": (950.68368468, 729.89827633), "B06": (1792.46290469, 1096.01480586),
    "B07": (2075.46795189, 1273.45393088), "B08": (2218.94553375, 1365.45589904),
    "B8A": (2266.46036911, 1356.13789355), "B09": (2246.0605464, 1302.3292881),
    "B11": (1594.42694882, 1079.19066363), "B12": (1009.32729131, 818.86747235),
}
# Sentinel-1 GRD backscatter in dB: typical land means/spreads; run `vqae stats` for your data.
S1_STATS = {"VV": (-12.6, 5.1), "VH": (-19.3, 5.5)}


class Normalizer:
    """Maps digital numbers to zero-mean unit-variance bands and back."""

    def __init__(self, bands: list[str], mean: list[float], std: list[float]):
        self.bands = list(bands)
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1, 1, 1)  # (C, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1, 1, 1)
        if (self.std <= 0).any():
            raise DataError(f"normalization stats have a non-positive std for bands {bands}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def denormalize(self, x):
        """Inverse of __call__; works on numpy arrays and (B, C, H, W) torch tensors alike."""
        mean, std = self.mean, self.std
        if not isinstance(x, np.ndarray):
            import torch

            mean = torch.as_tensor(mean, device=x.device, dtype=x.dtype)
            std = torch.as_tensor(std, device=x.device, dtype=x.dtype)
        return x * std + mean

    def to_dict(self) -> dict:
        return {b: {"mean": float(m), "std": float(s)}
                for b, m, s in zip(self.bands, self.mean.ravel(), self.std.ravel())}

    @classmethod
    def from_dict(cls, stats: dict, bands: list[str], source: str = "stats") -> Normalizer:
        missing = [b for b in bands if b not in stats]
        if missing:
            raise DataError(
                f"{source} has no statistics for band(s) {missing}; it holds {sorted(stats)}. "
                "Recompute with `vqae stats --data PATH --out stats.json` for these bands"
            )
        try:
            return cls(bands, [stats[b]["mean"] for b in bands], [stats[b]["std"] for b in bands])
        except (KeyError, TypeError) as err:
            raise DataError(f"{source}: each band needs 'mean' and 'std' numbers ({err})") from err


def builtin_stats() -> dict:
    table = {**BIGEARTHNET_S2_STATS, **S1_STATS}
    return {b: {"mean": m, "std": s} for b, (m, s) in table.items()}


def load_normalizer(path: str, bands: list[str], offset: float = 0.0) -> Normalizer:
    """From a `vqae stats` JSON, or the built-in BigEarthNet stats when `path` is empty.

    Built-in stats are for offset-free data; the reader subtracts the offset first when asked.
    """
    if not path:
        return Normalizer.from_dict(builtin_stats(), bands, "built-in BigEarthNet stats")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"stats file {p} does not exist; create it with `vqae stats --out {p}`")
    try:
        stats = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"stats file {p} is not valid JSON: {err}") from err
    return Normalizer.from_dict(stats.get("bands", stats), bands, str(p))
