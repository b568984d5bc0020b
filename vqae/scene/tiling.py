"""How a scene is cut: a grid of model-sized tiles, each coded on its own, seen by the networks
through windows that reach into its neighbours, with side information that varies smoothly.

A per-patch model normalizes each patch by its band means and scales (its side information).
A scene keeps one set per tile; each pixel takes its own tile's values, cross-faded with the
neighbour's within `ramp` pixels of a tile edge (`side_maps`), so neither the encoder's input
nor the decoder's output has a step at a tile edge. The encoder sees each tile with
`encoder_halo` pixels of its neighbours and keeps the tile's latents; the decoder decodes the
tile's latents with `decoder_halo` latent rows and columns of its neighbours and keeps the
tile's pixels: tile borders become interior pixels of every network pass, while the
networks' GroupNorm statistics stay the tile's own (vqae.scene.networks.tile_statistics)
(docs/format.md, "Scenes").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A width x height scene (10 m pixels) cut into tile x tile tiles, padded at the right
    and bottom edges to whole tiles."""

    width: int
    height: int
    tile: int

    @property
    def rows(self) -> int:
        return -(-self.height // self.tile)

    @property
    def cols(self) -> int:
        return -(-self.width // self.tile)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def window(self, row: int, col: int, halo: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of a tile and `halo` pixels around it, clipped to the padded grid."""
        t = self.tile
        return (max(row * t - halo, 0), min((row + 1) * t + halo, self.rows * t),
                max(col * t - halo, 0), min((col + 1) * t + halo, self.cols * t))


def _blend(coords: np.ndarray, tile: int, count: int, ramp: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel positions -> the two nearest tiles and the weight of the second: 0 or 1 farther
    than `ramp` px from their common edge, rising linearly through 0.5 at the edge (ramp =
    tile / 2: the bilinear blend between tile centres)."""
    u = np.clip((coords + 0.5) / tile - 0.5, 0, count - 1)
    first = np.minimum(np.floor(u).astype(np.int64), max(count - 2, 0))
    second = np.minimum(first + 1, count - 1)
    edge = (first + 1) * tile  # the edge between the two tiles, in pixels
    weight = np.clip(0.5 + (coords + 0.5 - edge) / (2 * ramp), 0, 1)
    return first, second, np.where(second > first, weight, 0.0)


def side_maps(side: np.ndarray, grid: Grid, y0: int, y1: int, x0: int, x1: int,
              ramp: float | None = None) -> np.ndarray:
    """Per-tile side values (rows, cols, M) -> (M, y1 - y0, x1 - x0) float64: each pixel's
    bilinear blend of the values at the nearest tile centres (constant beyond the outer ones)."""
    ramp = grid.tile / 2 if ramp is None else ramp
    r0, r1, a = _blend(np.arange(y0, y1), grid.tile, grid.rows, ramp)
    c0, c1, b = _blend(np.arange(x0, x1), grid.tile, grid.cols, ramp)
    side = np.asarray(side, np.float64)
    a, b = a[:, None, None], b[None, :, None]
    out = ((1 - a) * ((1 - b) * side[np.ix_(r0, c0)] + b * side[np.ix_(r0, c1)])
           + a * ((1 - b) * side[np.ix_(r1, c0)] + b * side[np.ix_(r1, c1)]))  # (H, W, M)
    return np.moveaxis(out, -1, 0)
