"""Per-band mean, std, min, max and percentiles in one streaming pass.

Percentiles come from a fixed-grid histogram (1 DN for S2, 0.01 dB for S1), so memory stays
constant however many patches stream by and the result is exact to the grid.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from vqae.data.bands import is_s1
from vqae.data.readers import PatchDataset

PERCENTILES = (1, 2, 50, 98, 99)
# band kind -> (lowest value, grid step, number of bins)
GRIDS = {"s2": (-1000.0, 1.0, 67_537), "s1": (-60.0, 0.01, 10_001)}


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


def compute_stats(ds: PatchDataset, progress: bool = True) -> dict:
    """Stats of the digital numbers the reader produces (after resampling and offset)."""
    accs = [BandAccumulator("s1" if is_s1(b) else "s2") for b in ds.bands]
    for i in tqdm(range(len(ds)), desc="stats", unit="patch", disable=not progress):
        x = ds.read_dn(i)  # (C, 120, 120)
        for acc, band_values in zip(accs, x):
            acc.add(band_values)
    return {"patches": len(ds), "bands": {b: a.result() for b, a in zip(ds.bands, accs)}}
