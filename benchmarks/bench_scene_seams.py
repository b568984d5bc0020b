"""Seams: PSNR of the pixels on tile borders against the tiles' interior, on a decoded scene.

    python benchmarks/scene_data.py WORK
    python benchmarks/bench_scene_seams.py --ckpt CKPT WORK/s1920 [--out WORK/seams]

Compresses the scene as `vqae compress` does (`--ramp R` overrides the side ramp and decode
blend, for the sweep in BENCHMARKS.md), upsamples original and decoded bands over the whole
scene as the reader does, and reports the PSNR (DESIGN.md's, R = 10000, over all bands)
of the pixels within 1, 2 and 4 px of a tile edge, of the interior (>= 8 px from every edge),
and, as a control for the codec's own 4 px latent grid, of the same bands around the
tiles' middle lines. The scene's outer edge is left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tabulate import tabulate

from vqae.codec.codec import Codec
from vqae.rd.scene_rd import natives, upsample
from vqae.scene import compress_scene, read_region
from vqae.scene import scene_codec as sc


def band_psnr(se: np.ndarray, mask: np.ndarray) -> float:
    return float(10 * np.log10(1e8 / se[mask].mean()))


def rings(height: int, width: int, tile: int, offset: int) -> np.ndarray:
    """Distance (px, + 0.5) of each pixel to the nearest line at `offset` mod tile."""
    yy, xx = np.mgrid[0:height, 0:width]
    half = tile // 2
    dist = lambda v: np.abs(((v - offset + half) % tile) - half + 0.5)  # noqa: E731
    return np.minimum(dist(yy), dist(xx))


def measure(codec, scene, vqz: Path, ref, factors, width, height) -> dict:
    compress_scene(codec, scene, vqz, overwrite=True)
    rec = upsample(read_region(codec, vqz), factors, width, height, codec.flag)
    se = ((np.clip(ref, 0, 10000) - np.clip(rec, 0, 10000)) ** 2).mean(axis=0)
    t = codec.model.image_size
    inner = np.zeros_like(se, bool)
    inner[t:-t, t:-t] = True  # no pixel of the scene's outer tiles
    edge, middle = rings(height, width, t, 0), rings(height, width, t, t // 2)
    row = {"bytes": vqz.stat().st_size, "all": band_psnr(se, se >= 0)}
    for k in (1, 2, 4):
        row[f"edge<{k}px"] = band_psnr(se, inner & (edge < k))
        row[f"middle<{k}px"] = band_psnr(se, inner & (middle < k))
    row["interior>=8px"] = band_psnr(se, inner & (edge >= 8))
    row["edge<2px - interior"] = row["edge<2px"] - row["interior>=8px"]
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("scene", type=Path)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--out", type=Path, default=Path("scene-seams"))
    p.add_argument("--ramp", type=int, nargs="+", default=[sc.RAMP],
                   help="side ramps (px) to measure; the decode blend follows (default: vqae's)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    codec = Codec.from_checkpoint(args.ckpt, "cpu")
    raw, factors, width, height = natives(codec, args.scene)
    ref = upsample(raw, factors, width, height, codec.flag)
    rows = []
    for ramp in args.ramp:
        sc.RAMP = sc.BLEND = ramp  # the file records them
        rows.append({"ramp": ramp, **measure(codec, args.scene, args.out / f"ramp{ramp}.vqz",
                                             ref, factors, width, height)})
        print(json.dumps(rows[-1]), flush=True)
    print(tabulate(rows, headers="keys", floatfmt=".2f"))
    (args.out / "seams.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
