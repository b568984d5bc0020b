"""Band filters: a per-patch linear correction of the decoded bands that the encoder fits and
the file carries (`vqae compress --band-filter`).

The encoder decodes its own indices (analysis by synthesis) and fits, by least squares in the
integer lattice, a C x C matrix M with which the decoder returns `out = p + M (decoded - p)`
per pixel; p is the header's patch means for a per-patch model, else each decoded band's mean.

- `gain`: diagonal, each band's contrast; C u8 codes, M_bb = code / 64.
- `mix`: full, each band from all decoded bands; C*C int8 codes, M = code / 32.
- `none`: M = I.

A fitted band is never worse than the band as decoded (the guard in `fit_mix`). Rates and
gains are measured in BENCHMARKS.md.
"""

from __future__ import annotations

import numpy as np

KINDS = ("none", "gain", "mix")  # a header stores the position
GAIN_STEP, MIX_STEP = 64, 32  # coefficient = code / step
PASSES = 4  # coordinate descent sweeps over the columns of M


def code_count(kind: str, bands: int) -> int:
    return {"none": 0, "gain": bands, "mix": bands * bands}[kind]


def bits(kind: str, bands: int) -> int:
    """Header bits per patch of a filter of this kind (its kind byte aside)."""
    return 8 * code_count(kind, bands)


def pivots(decoded: np.ndarray, patch_means: np.ndarray | None) -> np.ndarray:
    """decoded (B, C, H, W) and the header's patch_means (B, C) or None -> (B, C, 1, 1) float64."""
    if patch_means is not None and np.size(patch_means):
        return np.asarray(patch_means, np.float64).reshape(*decoded.shape[:2], 1, 1)
    return decoded.astype(np.float64).mean(axis=(-2, -1), keepdims=True)


def matrices(kind: str, codes: np.ndarray, bands: int) -> np.ndarray:
    """(B, n) codes of a gain or a mix -> (B, C, C) float64 matrices M."""
    codes = np.asarray(codes, np.float64).reshape(len(codes), -1)
    if kind == "gain":
        return np.stack([np.diag(row / GAIN_STEP) for row in codes])
    return codes.reshape(-1, bands, bands) / MIX_STEP


def apply(decoded: np.ndarray, patch_means: np.ndarray | None, kind: str,
          codes: np.ndarray, dtype=np.float32) -> np.ndarray:
    """decoded (B, C, H, W) and (B, n) codes of `kind` -> p + M (decoded - p), computed in
    float64 and returned as `dtype` (float64 for the enhancement layer's exact base)."""
    if kind == "none":
        return decoded.astype(dtype, copy=False)
    p = pivots(decoded, patch_means)
    r = decoded.astype(np.float64) - p
    m = matrices(kind, codes, decoded.shape[1])
    return (p + np.einsum("bij,bjhw->bihw", m, r)).astype(dtype, copy=False)


def fit(kind: str, original: np.ndarray, decoded: np.ndarray,
        patch_means: np.ndarray | None) -> np.ndarray:
    """original, decoded (B, C, H, W) digital numbers -> (B, code_count) int64 codes of the
    least-squares filter of `kind` for each patch."""
    b, c = decoded.shape[:2]
    if kind == "none":
        return np.zeros((b, 0), np.int64)
    p = pivots(decoded, patch_means)
    x = (original.astype(np.float64) - p).reshape(b, c, -1)
    r = (decoded.astype(np.float64) - p).reshape(b, c, -1)
    gram = r @ r.transpose(0, 2, 1)  # (B, C, C): decoded band j with band k
    cross = x @ r.transpose(0, 2, 1)  # (B, C, C): original band i with decoded band k
    if kind == "gain":
        energy, dot = np.diagonal(gram, axis1=1, axis2=2), np.diagonal(cross, axis1=1, axis2=2)
        gain = np.where(energy > 0, dot / np.maximum(energy, 1e-12), 1.0)
        return np.clip(np.rint(gain * GAIN_STEP), 0, 255).astype(np.int64)
    return np.stack([fit_mix(g, x_r) for g, x_r in zip(gram, cross)]).reshape(b, -1)


def fit_mix(gram: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """One patch's (C, C) Gram matrix of the decoded bands and cross products with the original
    -> (C, C) int64 codes minimising each output band's squared error over int8 / MIX_STEP."""
    c = len(gram)
    scale = max(np.trace(gram), 1e-12) / c
    real = np.linalg.solve(gram + 1e-9 * scale * np.eye(c), cross.T).T  # least squares, rows
    q = np.clip(np.rint(real * MIX_STEP), -128, 127)
    live = np.diagonal(gram) > 1e-9 * scale  # a flat decoded band has nothing to give
    q[:, ~live] = 0
    for _ in range(PASSES):
        for j in np.flatnonzero(live):  # the best integer column j, all rows at once
            rest = cross[:, j] - (q / MIX_STEP) @ gram[:, j] + q[:, j] / MIX_STEP * gram[j, j]
            q[:, j] = np.clip(np.rint(rest / gram[j, j] * MIX_STEP), -128, 127)
    identity = np.eye(c) * MIX_STEP
    worse = row_error(q, gram, cross) > row_error(identity, gram, cross)
    q[worse] = identity[worse]  # never worse than leaving a band as decoded
    return q.astype(np.int64)


def row_error(q: np.ndarray, gram: np.ndarray, cross: np.ndarray) -> np.ndarray:
    """Squared error of each output band for codes q, up to the band's constant energy."""
    m = q / MIX_STEP
    return np.einsum("ij,jk,ik->i", m, gram, m) - 2 * np.einsum("ij,ij->i", m, cross)
