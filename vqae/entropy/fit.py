"""Fitting the prior: count a split's indices, choose each stage's context by held-out bits.

For every stage and candidate context (none; the parent stage at the same position; the same
stage one row up) the joint counts (context symbol, index) are gathered in two folds (patches
alternate). The K + 1 context symbols are clustered into at most 128 table rows by k-means
under code length, and each row is smoothed toward the stage's marginal. (context, rows,
smoothing) is chosen per stage by two-fold cross-validation on the integer tables the coder
uses, then refitted on all patches. docs/format.md has the measured choices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from tabulate import tabulate
from torch.utils.data import Dataset
from tqdm import tqdm

from vqae.data.loader import Loader
from vqae.entropy.prior import CONTEXT_NAMES, NONE, PARENT, UP, context_symbols
from vqae.io.stops import Stopped

log = logging.getLogger(__name__)

PRECISION_BITS = 20  # rows are quantized to integer frequencies summing to about 2**20
ROW_CHOICES = (1, 2, 4, 8, 16, 32, 64, 128)  # table rows per stage tried
STRENGTHS = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0)  # Dirichlet pull toward the stage marginal
CLUSTER_STRENGTH = 4.0  # smoothing of the row distributions while clustering
KMEANS_ITERS = 8
FLUSH_PATCHES = 2048  # index grids buffered before one counting pass
# Context counts are (2, K + 1, K) int64 per stage and kind: 34 MB at K = 1024, 137 MB at 2048,
# 61 GB at FSQ's 64,000. Larger codebooks get the stage marginal only.
MAX_CONTEXT_CODES = 2048


def candidate_kinds(stage: int, height: int, codebook_size: int) -> list[int]:
    kinds = [NONE]
    if codebook_size > MAX_CONTEXT_CODES:
        return kinds
    if stage > 0:
        kinds.append(PARENT)
    if height > 1:
        kinds.append(UP)
    return kinds


def n_symbols(kind: int, codebook_size: int) -> int:
    return 1 if kind == NONE else codebook_size + 1


class IndexCounts:
    """Joint counts (fold, context symbol, index) per (stage, context kind)."""

    def __init__(self, depth: int, codebook_size: int, height: int):
        self.k = codebook_size
        self.kinds = {s: candidate_kinds(s, height, codebook_size) for s in range(depth)}
        if codebook_size > MAX_CONTEXT_CODES:
            log.info("K = %d codes > %d: no context tables, each stage's marginal only",
                     codebook_size, MAX_CONTEXT_CODES)
        self.n = {(s, kind): np.zeros((2, n_symbols(kind, self.k), self.k), dtype=np.int64)
                  for s, kinds in self.kinds.items() for kind in kinds}
        self.patches = 0
        self._buffer: list[np.ndarray] = []

    def add(self, indices: np.ndarray) -> None:
        """indices (B, depth, h, w), patches in a fixed order (folds alternate by patch)."""
        self._buffer.append(indices.astype(np.int64))
        if sum(len(b) for b in self._buffer) >= FLUSH_PATCHES:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        idx = np.concatenate(self._buffer)  # (B, depth, h, w)
        self._buffer = []
        fold = ((self.patches + np.arange(len(idx))) % 2)[:, None, None]  # (B, 1, 1)
        self.patches += len(idx)
        for (s, kind), n in self.n.items():
            ctx = context_symbols(idx, s, kind, self.k)  # (B, h, w)
            flat = (fold * n.shape[1] + ctx) * self.k + idx[:, s]
            n += np.bincount(flat.ravel(), minlength=n.size).reshape(n.shape)


def marginal(n: np.ndarray) -> np.ndarray:
    """Smoothed stage marginal (K,) from counts (S, K) (add-1/2, so no index has mass 0)."""
    total = n.sum(axis=0) + 0.5
    return total / total.sum()


def aggregate(n: np.ndarray, labels: np.ndarray, rows: int) -> np.ndarray:
    """Counts (S, K) summed into their rows: (rows, K)."""
    agg = np.zeros((rows, n.shape[1]))
    np.add.at(agg, labels, n)
    return agg


def row_probs(agg: np.ndarray, strength: float, base: np.ndarray) -> np.ndarray:
    """(rows, K) distributions of row counts, pulled toward `base` (K,) with `strength`."""
    return (agg + strength * base) / (agg.sum(axis=1, keepdims=True) + strength)


def cluster_contexts(n: np.ndarray, rows: int) -> np.ndarray:
    """(S,) row of each context symbol: k-means under code length, seeded by the `rows` most
    frequent symbols; unseen symbols join the row with the most mass."""
    total = n.sum(axis=1)
    seen = np.flatnonzero(total)
    rows = min(rows, len(seen))
    if rows <= 1:
        return np.zeros(len(n), dtype=np.int64)
    base = marginal(n)
    seeds = np.argsort(-total, kind="stable")[:rows]
    labels = np.zeros(len(n), dtype=np.int64)
    labels[seeds] = np.arange(rows)
    centre = row_probs(n[seeds].astype(np.float64), CLUSTER_STRENGTH, base)
    for _ in range(KMEANS_ITERS):
        cost = n[seen] @ -np.log2(centre).T  # (S_seen, rows) bits of each symbol's indices
        new = cost.argmin(axis=1)
        if np.array_equal(new, labels[seen]):
            break
        labels[seen] = new
        centre = row_probs(aggregate(n, labels, rows), CLUSTER_STRENGTH, base)
    mass = np.bincount(labels[seen], weights=total[seen], minlength=rows)
    unseen = np.setdiff1d(np.arange(len(n)), seen)
    labels[unseen] = int(mass.argmax())
    return labels


def quantize(probs: np.ndarray) -> np.ndarray:
    """Integer frequencies >= 1 (every index codable) summing to about 2**PRECISION_BITS."""
    return np.maximum(np.rint(probs * 2.0**PRECISION_BITS), 1).astype(np.int64)


def coded_bits(freqs: np.ndarray, agg: np.ndarray) -> float:
    """Bits to code row counts `agg` (C, K) with the integer rows `freqs` (C, K)."""
    log_p = np.log2(freqs / freqs.sum(axis=1, keepdims=True))
    return float(-(agg * log_p).sum())


@dataclass
class StageFit:
    stage: int
    kind: int = NONE
    rows: int = 1
    strength: float = 1.0
    bits: float = float("inf")  # held-out bits per index of this choice
    best_by_kind: dict[int, float] = field(default_factory=dict)  # held-out bits per index
    freqs: np.ndarray | None = None  # (C, K)
    labels: np.ndarray | None = None  # (S,)


def held_out_bits(n: np.ndarray, rows: int) -> np.ndarray:
    """Bits of each fold's indices under tables fitted on the other fold, per strength."""
    bits = np.zeros(len(STRENGTHS))
    for f in (0, 1):
        train, test = n[f], n[1 - f]
        labels = cluster_contexts(train, rows)
        fitted, held = aggregate(train, labels, rows), aggregate(test, labels, rows)
        for i, a in enumerate(STRENGTHS):
            bits[i] += coded_bits(quantize(row_probs(fitted, a, marginal(train))), held)
    return bits


def choose_stage(counts: IndexCounts, stage: int) -> StageFit:
    """The (context, rows, strength) of least held-out bits, refitted on both folds."""
    best = StageFit(stage)
    symbols = counts.n[(stage, NONE)].sum()
    for kind in counts.kinds[stage]:
        n = counts.n[(stage, kind)]
        kind_best = float("inf")
        for rows in ROW_CHOICES if kind != NONE else (1,):
            if rows > 1 and rows > np.count_nonzero(n.sum(axis=(0, 2))):
                break
            bits = held_out_bits(n, rows) / max(symbols, 1)
            i = int(bits.argmin())
            kind_best = min(kind_best, float(bits[i]))
            if bits[i] < best.bits - 1e-9:
                best.kind, best.rows, best.strength, best.bits = kind, rows, STRENGTHS[i], bits[i]
        best.best_by_kind[kind] = kind_best
    n_all = counts.n[(stage, best.kind)].sum(axis=0)  # (S, K)
    best.labels = cluster_contexts(n_all, best.rows)
    agg = aggregate(n_all, best.labels, best.rows)
    best.freqs = quantize(row_probs(agg, best.strength, marginal(n_all)))
    return best


def fit_tables(counts: IndexCounts) -> tuple[np.ndarray, list[int], np.ndarray, list[StageFit]]:
    """(freqs (depth, C, K), context kinds, clusters (depth, K + 1), per-stage report)."""
    counts.flush()
    fits = [choose_stage(counts, s) for s in range(len(counts.kinds))]
    k, rows = counts.k, max(f.freqs.shape[0] for f in fits)
    freqs = np.ones((len(fits), rows, k), dtype=np.int64)
    clusters = np.zeros((len(fits), k + 1), dtype=np.int64)
    for s, f in enumerate(fits):
        freqs[s, : f.freqs.shape[0]] = f.freqs
        clusters[s] = f.labels if f.kind != NONE else 0  # NONE: the one symbol is row 0
    return freqs, [f.kind for f in fits], clusters, fits


@torch.no_grad()
def collect_counts(model, dataset: Dataset, device: torch.device, batch_size: int = 16,
                   workers: int = 0, progress: bool = True,
                   stop: Callable[[], bool] | None = None) -> IndexCounts:
    """Index counts of `model` over every patch of `dataset`, in a fixed order; Stopped when
    `stop` (asked before each batch) says so."""
    depth, h, _ = model.latent_shape()
    counts = IndexCounts(depth, model.quantizer.codebook_size, h)
    loader = Loader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                    generator=torch.Generator().manual_seed(0))  # global RNG untouched
    model.eval()
    try:
        for batch in tqdm(loader, desc="fit-prior", unit="batch", disable=not progress):
            if stop is not None and stop():
                raise Stopped(f"prior fit stopped after {counts.patches} patches")
            x = batch["image"].to(device)  # (B, C, H, W) digital numbers
            counts.add(model.encode(x).cpu().numpy())  # (B, depth, h, w)
    finally:
        loader.shutdown()
    counts.flush()
    return counts


def fit_prior(model, dataset: Dataset, device: torch.device, batch_size: int = 16,
              workers: int = 0, progress: bool = True,
              stop: Callable[[], bool] | None = None) -> list[StageFit]:
    """Fit `model.prior` on every patch of `dataset`; returns the per-stage choices. Raises
    Stopped, the prior untouched, when `stop` says so while the indices are counted."""
    counts = collect_counts(model, dataset, device, batch_size, workers, progress, stop)
    if counts.patches < 2:
        raise ValueError("fitting a prior needs at least 2 patches (two folds)")
    freqs, kinds, clusters, fits = fit_tables(counts)
    model.prior.set_tables(freqs, kinds, clusters)
    return fits


def report(fits: list[StageFit], codebook_size: int, positions: int, pixels: int) -> str:
    """Table of held-out bits per index for each context, the choice, and the bpp saved."""
    kinds = (NONE, PARENT, UP)
    rows = []
    for f in fits:
        per_kind = [f"{f.best_by_kind[k]:.3f}" if k in f.best_by_kind else "-" for k in kinds]
        rows.append([f.stage, *per_kind, CONTEXT_NAMES[f.kind], f.rows, f.strength])
    none = sum(f.best_by_kind[NONE] for f in fits) * positions / pixels
    chosen = sum(f.bits for f in fits) * positions / pixels
    head = ["stage", *(f"bits/index {CONTEXT_NAMES[k]}" for k in kinds), "chosen", "rows", "a"]
    text = tabulate(rows, headers=head, tablefmt="simple", floatfmt=".3f")
    return (f"{text}\nheld-out bpp: {chosen:.4f} with the chosen contexts, {none:.4f} without "
            f"context ({100 * (1 - chosen / none):.1f}% saved), "
            f"{len(fits) * positions * np.log2(codebook_size) / pixels:.4f} as fixed-length "
            "indices")
