"""Reconstruction panels for the tracker: original | reconstruction | error map, one row a patch,
under a header naming the step, the composite and each column (the error with its scale).

Outputs are uint8 RGB arrays (H, W, 3); writers that need BGR (cv2.imwrite) convert themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

# name -> bands shown as (R, G, B)
COMPOSITES = {
    "true_color": ("B04", "B03", "B02"),
    "false_color": ("B08", "B04", "B03"),
}
STRETCH_PERCENTILES = (2.0, 98.0)
ERROR_MAX = 500.0  # DN (5% reflectance) mapped to the hottest colour; fixed so steps compare
GAP = 2  # white pixels between tiles
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.35  # about 6 px a character: 20 fit a tile
LINE = 14  # pixels per header line


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def stretch(original: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2-98 percentile stretch of (C, H, W) `original`, the same mapping on `other`.

    Returns both as uint8 (H, W, C): using the original's limits for both keeps them comparable.
    """
    lo, hi = np.percentile(original, STRETCH_PERCENTILES, axis=(1, 2))  # (C,) each
    scale = np.where(hi > lo, hi - lo, 1.0)[:, None, None]  # flat band -> avoid 0/0

    def apply(img: np.ndarray) -> np.ndarray:
        unit = np.clip((img - lo[:, None, None]) / scale, 0.0, 1.0)
        return np.round(unit * 255).astype(np.uint8).transpose(1, 2, 0)

    return apply(original), apply(other)


def error_map(x: np.ndarray, x_hat: np.ndarray, error_max: float = ERROR_MAX) -> np.ndarray:
    """Mean absolute error over all bands per pixel of (C, H, W) arrays, colour-mapped RGB."""
    mae = np.abs(x - x_hat).mean(axis=0)  # (H, W)
    grey = np.round(np.clip(mae / error_max, 0.0, 1.0) * 255).astype(np.uint8)
    bgr = cv2.applyColorMap(grey, cv2.COLORMAP_INFERNO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _hstack(tiles: list[np.ndarray]) -> np.ndarray:
    gap = np.full((tiles[0].shape[0], GAP, 3), 255, np.uint8)
    parts = [p for tile in tiles for p in (tile, gap)][:-1]
    return np.concatenate(parts, axis=1)


def _vstack(rows: list[np.ndarray]) -> np.ndarray:
    gap = np.full((GAP, rows[0].shape[1], 3), 255, np.uint8)
    parts = [p for row in rows for p in (row, gap)][:-1]
    return np.concatenate(parts, axis=0)


def panel_labels(name: str, step: int | None, error_max: float) -> tuple[str, list[str]]:
    """(title, column labels) of a panel's header."""
    rgb = " ".join(COMPOSITES[name])
    title = f"{name.replace('_', ' ')} ({rgb})" + ("" if step is None else f", step {step}")
    return title, ["original", "reconstruction", f"|error| 0-{error_max:g} DN"]


def _text(text: str, width: int) -> np.ndarray:
    """A white (LINE, width, 3) strip with `text` in black, cut at its right edge."""
    strip = np.full((LINE, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (2, LINE - 4), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def _header(title: str, columns: list[str], width: int) -> np.ndarray:
    """The title over the whole strip, then each column's label over its tiles."""
    labels = _hstack([_text(text, width) for text in columns])
    return np.concatenate([_text(title, labels.shape[1]), labels], axis=0)


def render_panel(
    x: torch.Tensor | np.ndarray,
    x_hat: torch.Tensor | np.ndarray,
    bands: Sequence[str],
    error_max: float = ERROR_MAX,
    step: int | None = None,
) -> dict[str, np.ndarray]:
    """{composite name: uint8 RGB strip} for a batch (B, C, H, W) of patches in DN.

    A header (2 * LINE pixels) names the composite, the step and the columns; below it each
    row is one patch: original | reconstruction | error map (mean |x - x_hat| over all bands,
    0..error_max DN). Composites whose bands are not all in `bands` are skipped.
    """
    xs, ys = _to_numpy(x), _to_numpy(x_hat)
    if xs.shape != ys.shape or xs.ndim != 4 or xs.shape[1] != len(bands):
        raise ValueError(f"x {xs.shape} and x_hat {ys.shape} must both be (B, {len(bands)}, H, W)")
    errors = [error_map(a, b, error_max) for a, b in zip(xs, ys)]
    panels = {}
    for name, rgb in COMPOSITES.items():
        if not set(rgb) <= set(bands):
            continue
        channels = [list(bands).index(b) for b in rgb]
        rows = []
        for a, b, err in zip(xs, ys, errors):
            orig, recon = stretch(a[channels], b[channels])
            rows.append(_hstack([orig, recon, err]))
        header = _header(*panel_labels(name, step, error_max), xs.shape[3])
        panels[name] = _vstack([header, *rows])
    return panels
