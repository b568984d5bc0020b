"""Integer context features of one band-phase of the enhancement layer (exact everywhere).

The decoder knows, when it decodes the pixels of band b in phase k: the integer base of every
band, the reconstructed residuals rho (decoded minus base, DN) of the bands before b in the
coding order, and rho of band b's pixels of phases before k. Everything here is integer
numpy (floor divisions, shifts, exact logs), so encoder and decoder compute the same features
bit for bit, and the fit (vqae.codec.residual_fit) trains on the very same features.
"""

from __future__ import annotations

import numpy as np

from vqae.entropy.residual_model import (
    FIXED,
    INPUT_BITS,
    LS_ONE,
    PHASES,
    PREVIOUS,
    feature_count,
    ilog,
    step_log,
)

ONE = 1 << INPUT_BITS  # a one-hot 1 (the float network sees 1.0)
LOG_GAIN = 16  # integer logs scaled so the float network sees them near 0..5


def phase_mask(n: int, k: int) -> np.ndarray:
    """(n, n) bool: the pixels of phase k."""
    py, px = PHASES[k]
    m = np.zeros((n, n), bool)
    m[py::2, px::2] = True
    return m


def known_mask(n: int, k: int) -> np.ndarray:
    """(n, n) bool: the pixels of phases before k (decoded before phase k)."""
    m = np.zeros((n, n), bool)
    for j in range(k):
        m |= phase_mask(n, j)
    return m


def box3(a: np.ndarray, centre: bool = True) -> np.ndarray:
    """Sum over each pixel's 3x3 neighbourhood (zero outside), int64; without `centre`, the 8
    neighbours only."""
    p = np.pad(np.asarray(a, np.int64), 1)
    n0, n1 = a.shape
    out = sum(p[1 + dy : 1 + dy + n0, 1 + dx : 1 + dx + n1]
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if centre or dy or dx)
    return np.asarray(out, np.int64)


def resampled(rho: np.ndarray, n: int) -> np.ndarray:
    """A band's residual (m, m) on an (n, n) grid, x FIXED: block means (floor) of a finer
    band, pixel repeats of a coarser one."""
    m = rho.shape[0]
    if m == n:
        return rho * FIXED
    if m > n:
        f = m // n
        return np.floor_divide(rho.reshape(n, f, n, f).sum(axis=(1, 3)) * FIXED, f * f)
    f = n // m
    return np.repeat(np.repeat(rho, f, axis=0), f, axis=1) * FIXED


def mean_of(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.floor_divide(total, np.maximum(count, 1))


def base_gradient(base: np.ndarray) -> np.ndarray:
    """|4 B - (sum of the 4 neighbours, edges repeated)| x FIXED / 4: the base's local detail."""
    p = np.pad(base, 1, mode="edge")
    lap = 4 * base - p[:-2, 1:-1] - p[2:, 1:-1] - p[1:-1, :-2] - p[1:-1, 2:]
    return np.abs(lap) * FIXED // 4


def previous_grids(previous: list[np.ndarray], n: int) -> list[np.ndarray]:
    """The PREVIOUS latest bands' residuals on an (n, n) grid, x FIXED (zeros where absent)."""
    prev = [resampled(p, n) for p in previous[:PREVIOUS]]
    return prev + [np.zeros((n, n), np.int64)] * (PREVIOUS - len(prev))


def ls_fit(r: np.ndarray, previous: list[np.ndarray]) -> np.ndarray:
    """The encoder's least-squares weights of a band's residual r (n, n) on the previous
    bands' (int8 codes / LS_ONE, one per previous band present); the decoder reads them."""
    prev = previous_grids(previous, r.shape[0])[: min(len(previous), PREVIOUS)]
    if not prev:
        return np.zeros(0, np.int64)
    x = np.stack([p.ravel() / FIXED for p in prev], axis=1)
    coef = np.linalg.lstsq(x, r.ravel().astype(np.float64), rcond=None)[0]
    return np.clip(np.rint(np.nan_to_num(coef) * LS_ONE), -127, 127).astype(np.int64)


def ls_prediction(prev: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """sum_j w_j prev_j / LS_ONE (x FIXED, floor): exact integers."""
    total = sum((int(w) * p for w, p in zip(weights, prev)), np.zeros_like(prev[0]))
    return np.floor_divide(total, LS_ONE)


def features(position: int, bands: int, k: int, step: int, base: np.ndarray,
             rho: np.ndarray, previous: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """(N, F) int64 features of phase k's pixels (raster order) of the band at `position` in
    the coding order: `base` and `rho` (n, n) of this band (rho valid where decoded),
    `previous`: rho of the bands before it, the latest first; `weights`: the band's
    least-squares codes on them (ls_fit)."""
    n = base.shape[0]
    at = phase_mask(n, k)
    known = known_mask(n, k)
    count = box3(known, centre=False)
    prev = previous_grids(previous, n)
    ls = ls_prediction(prev, weights)
    cur = np.where(known, rho, 0) * FIXED
    nb_mean = mean_of(box3(cur, centre=False), count)
    nb_abs = mean_of(box3(np.abs(cur), centre=False), count)
    nb_vs_ls = mean_of(box3(np.where(known, cur - ls, 0), centre=False), count)
    nine = box3(np.ones((n, n), np.int64))
    prev_abs = [mean_of(box3(np.abs(p)), nine) for p in prev]
    cols = [nb_mean, nb_abs, count * 32, nb_vs_ls, ls, LOG_GAIN * ilog(ls)]
    for p, a in zip(prev, prev_abs):
        cols += [p, a]
    cols += [LOG_GAIN * ilog(x) for x in (base, base_gradient(base), nb_mean, nb_abs, prev[0],
                                          prev_abs[0], prev_abs[1])]
    n_at = int(at.sum())
    g = np.zeros((n_at, feature_count(bands)), np.int64)
    g[:, position] = ONE
    g[:, bands + k] = ONE
    g[:, bands + len(PHASES)] = LOG_GAIN * step_log(step)
    g[:, bands + len(PHASES) + 1 :] = np.stack([c[at] for c in cols], axis=1)
    return g
