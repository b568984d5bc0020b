"""Per-band statistics: built-in BigEarthNet values, `vqae stats` files, and the streaming pass
that writes them (mean, std, min, max and percentiles).

Percentiles come from a fixed-grid histogram (1 DN for S2, 0.01 dB for S1), so memory stays
constant however many patches stream by and the result is exact to the grid.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vqae.data.bands import is_s1
from vqae.data.readers import PatchDataset
from vqae.errors import DataError, cut, shown
from vqae.io.limits import read_small

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

STATS_MAX_BYTES = 1 << 20  # a `vqae stats` file is a few KB
PERCENTILES = (1, 2, 50, 98, 99)
# band kind -> (lowest value, grid step, number of bins)
GRIDS = {"s2": (-1000.0, 1.0, 67_537), "s1": (-60.0, 0.01, 10_001)}


def builtin_stats() -> dict:
    table = {**BIGEARTHNET_S2_STATS, **S1_STATS}
    return {b: {"mean": m, "std": s} for b, (m, s) in table.items()}


def band_mean_std(stats: dict, bands: list[str], source: str) -> tuple[list[float], list[float]]:
    missing = [b for b in bands if b not in stats]
    if missing:
        raise DataError(
            f"{source} has no statistics for band(s) {missing}; it holds {sorted(stats)}. "
            "Recompute with `vqae stats --data PATH --out stats.json` for these bands"
        )
    try:
        mean = [float(stats[b]["mean"]) for b in bands]
        std = [float(stats[b]["std"]) for b in bands]
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"{source}: each band needs 'mean' and 'std' numbers ({err})") from err
    if min(std) <= 0:
        raise DataError(f"{source}: a band has a non-positive std; recompute the statistics")
    return mean, std


def load_stats(path: str, bands: list[str]) -> tuple[list[float], list[float]]:
    """(mean, std) per band from a `vqae stats` JSON, or the built-in values when `path` is "".

    The values describe offset-free digital numbers: the model removes the offset first.
    """
    if not path:
        return band_mean_std(builtin_stats(), bands, "built-in BigEarthNet stats")
    p = Path(path)
    if not os.path.lexists(p):
        raise DataError(f"stats file {p} does not exist; create it with `vqae stats --out {p}`")
    raw = read_small(p, STATS_MAX_BYTES, "stats file")  # a regular file of a few KB
    try:
        stats = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise DataError(f"stats file {p} is not valid JSON: {cut(str(err))}") from err
    stats = stats.get("bands", stats) if isinstance(stats, dict) else stats
    if not isinstance(stats, dict) or not all(isinstance(v, dict) for v in stats.values()):
        raise DataError(f"stats file {p} holds {shown(stats, 80)}, not band -> {{mean, std}}; "
                        f"recompute it with `vqae stats --out {p}`")
    return band_mean_std(stats, bands, str(p))


class BandAccumulator:
    def __init__(self, kind: str):
        self.low, self.step, bins = GRIDS[kind]
        self.hist = np.zeros(bins, dtype=np.int64)
        self.total = self.sq = 0.0
        self.count = 0
        self.min, self.max = np.inf, -np.inf

    def add(self, values: np.ndarray) -> None:
        v = values.astype(np.float64).ravel()
        self.total += v.sum()
        self.sq += np.square(v).sum()
        self.count += v.size
        self.min, self.max = min(self.min, v.min()), max(self.max, v.max())
        idx = np.clip(np.rint((v - self.low) / self.step), 0, self.hist.size - 1).astype(np.int64)
        self.hist += np.bincount(idx, minlength=self.hist.size)

    def result(self) -> dict:
        mean = self.total / self.count
        std = float(np.sqrt(max(self.sq / self.count - mean**2, 0.0)))
        cdf = np.cumsum(self.hist) / self.count
        out = {"mean": float(mean), "std": std, "min": float(self.min), "max": float(self.max)}
        for p in PERCENTILES:
            out[f"p{p}"] = float(self.low + self.step * np.searchsorted(cdf, p / 100))
        return out


def compute_stats(ds: PatchDataset, offsets: list[float] | None = None,
                  progress: bool = True) -> dict:
    """Stats of the reader's digital numbers minus each band's offset (the model's input)."""
    accs = [BandAccumulator("s1" if is_s1(b) else "s2") for b in ds.bands]
    shift = np.asarray(offsets or [0.0] * len(ds.bands), dtype=np.float32)[:, None, None]
    for i in tqdm(range(len(ds)), desc="stats", unit="patch", disable=not progress):
        x = ds.read_dn(i) - shift  # (C, 120, 120)
        for acc, band_values in zip(accs, x):
            acc.add(band_values)
    return {"patches": len(ds), "bands": {b: a.result() for b, a in zip(ds.bands, accs)}}
