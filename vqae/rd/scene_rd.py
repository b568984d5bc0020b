"""`vqae rd --scene SCENE`: the rate-distortion report over a scene's tiles, the model through
real scene files at every depth, JPEG 2000 coding each whole native band at the same rates.

Each complete 120 x 120 tile of the scene is one "patch" of DESIGN.md's metrics: the reference
is the scene's 12-band stack at 10 m (20/60 m bands upsampled over the whole scene by the
model's reader interpolation). The model's reconstruction is its decode on the 10 m grid (as
a patch's 120 x 120 decode in `vqae rd`); "(native files)" rows measure instead what its
GeoTIFFs hold, the native bands upsampled as the reference. JPEG 2000 codes each whole native
band ("jpeg2000", upsampled as the reference) and the whole 10 m stack as one codestream
("jpeg2000-stack"); BD-rates use the better of the two at each rate. Rates are bits per 10 m
pixel per band of the whole file. Writes scene_rd.csv,
scene_rd.json (BD-rates against JPEG 2000 on the mean and pooled curves) and region.png
(RGB of B04/B03/B02, a fixed stretch: the original, the model and JPEG 2000 at its rate).
The report holds the scene in memory (at most REPORT_PIXELS); compression itself never does.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np

from vqae.errors import DataError
from vqae.rd import jpeg2000
from vqae.rd.bdrate import bd_rate
from vqae.scene import compress_scene, read_region
from vqae.scene.raster_input import SceneRasters

REPORT_PIXELS = 6000 * 6000
STRETCH = (0, 3000)  # DN shown black .. white in region.png
RGB = ("B04", "B03", "B02")


def natives(codec, scene) -> tuple[dict[str, np.ndarray], list[int], int, int]:
    with SceneRasters(scene, tuple(codec.bands), ignore_nodata=True,
                      max_pixels=REPORT_PIXELS) as r:
        bands = {b.band: r.window(i, 0, b.height, 0, b.width)[0] for i, b in enumerate(r.files)}
        return bands, [b.factor for b in r.files], r.width, r.height


def upsample(bands: dict[str, np.ndarray], factors: list[int], width: int, height: int,
             flag: int) -> np.ndarray:
    """{band: native} -> (C, height, width) float32 at 10 m, as the reader upsamples."""
    out = np.empty((len(bands), height, width), np.float32)
    for i, (a, f) in enumerate(zip(bands.values(), factors)):
        up = a if f == 1 else cv2.resize(a, (a.shape[1] * f, a.shape[0] * f), interpolation=flag)
        out[i] = up[:height, :width]
    return out


def decoded_grid(codec, vqz: Path, width: int, height: int) -> np.ndarray:
    """A scene file's decode on the 10 m grid, every band (C, height, width) float32."""
    from vqae.scene.files import open_scene_file
    from vqae.scene.scene_codec import Region, SceneDecoder

    f, file = open_scene_file(vqz)
    with f:
        rows = [np.stack(r) for _, r in SceneDecoder(codec, file).rows(
            Region(0, 0, width, height), grid=True)]
    return np.concatenate(rows, axis=1)[:, :height, :width].astype(np.float32)


def tile_psnr(ref: np.ndarray, rec: np.ndarray, tile: int) -> np.ndarray:
    """Per complete tile: PSNR (R = 10000) over its bands and pixels, both clamped."""
    rows, cols = ref.shape[1] // tile, ref.shape[2] // tile
    se = (np.clip(ref, 0, 10000) - np.clip(rec, 0, 10000)) ** 2  # (C, H, W)
    se = se[:, : rows * tile, : cols * tile].reshape(len(se), rows, tile, cols, tile)
    mse = se.mean(axis=(0, 2, 4)).ravel()
    return 10 * np.log10(1e8 / np.maximum(mse, 1e-10))


def summary(name: str, nbytes: int, pixels: int, bands: int, psnr: np.ndarray) -> dict:
    mse = 1e8 / 10 ** (psnr / 10)
    return {"codec": name, "bytes": nbytes, "bpppb": 8 * nbytes / pixels / bands,
            "psnr": float(psnr.mean()), "psnr_pooled": float(10 * np.log10(1e8 / mse.mean())),
            "psnr_p10": float(np.percentile(psnr, 10)), "psnr_min": float(psnr.min())}


OUTPUTS = ("scene_rd.csv", "scene_rd.json", "region.png")


def check_out(out: Path, scene, overwrite: bool) -> None:
    """--out apart from the scene; an earlier report is replaced only with --overwrite, and
    a folder holding other files never."""
    from vqae.io.outputs import check_apart

    check_apart(out, [scene], flag="--out")
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; --out names a folder")
    found = {p.name for p in out.iterdir()} if out.is_dir() else set()
    ours = {p for p in found if p in OUTPUTS or (p.startswith("depth") and p.endswith(".vqz"))}
    if found - ours:
        raise DataError(f"--out {out} holds files this report does not write "
                        f"({', '.join(sorted(found - ours)[:3])}); choose an empty or new folder")
    if ours and not overwrite:
        raise DataError(f"--out {out} holds an earlier scene report; pass --overwrite to "
                        "replace it")


def scene_report(codec, scene, out: Path, qualities=jpeg2000.DEFAULT_QUALITIES,
                 region: tuple[int, int, int, int] | None = None,
                 overwrite: bool = False) -> dict:
    check_out(out, scene, overwrite)
    raw, factors, width, height = natives(codec, scene)
    tile, pixels, c = codec.model.image_size, width * height, len(codec.bands)
    if width < tile or height < tile:
        raise DataError(f"{scene} is smaller than one {tile} x {tile} tile; the report needs "
                        "whole tiles")
    out.mkdir(parents=True, exist_ok=True)
    ref = upsample(raw, factors, width, height, codec.flag)
    rows, decoded = [], {}
    for depth in range(1, codec.depth + 1):
        vqz = out / f"depth{depth}.vqz"
        compress_scene(codec, scene, vqz, depth=depth, ignore_nodata=True,
                       max_pixels=REPORT_PIXELS, overwrite=True)
        name, nbytes = f"vqae depth {depth}", vqz.stat().st_size
        bands = read_region(codec, vqz)
        decoded[name] = bands
        rec = decoded_grid(codec, vqz, width, height)
        rows.append(summary(name, nbytes, pixels, c, tile_psnr(ref, rec, tile)))
        rec = upsample(bands, factors, width, height, codec.flag)  # what its files hold
        rows.append(summary(f"{name} (native files)", nbytes, pixels, c,
                            tile_psnr(ref, rec, tile)))
    for q in qualities:
        total, bands = jpeg2000.code_native(raw, list(codec.bands), q)
        decoded[f"jpeg2000 q{q:g}"] = bands
        rec = upsample(bands, factors, width, height, codec.flag)
        rows.append(summary(f"jpeg2000 q{q:g}", total, pixels, c, tile_psnr(ref, rec, tile)))
        total, rec = jpeg2000.code_stack(ref, q)
        rows.append(summary(f"jpeg2000-stack q{q:g}", total, pixels, c,
                            tile_psnr(ref, rec, tile)))
    report = {"scene": str(scene), "width": width, "height": height,
              "tiles": (width // tile) * (height // tile), "points": rows,
              "bd_rate": bd_rates(rows)}
    with open(out / "scene_rd.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "scene_rd.json").write_text(json.dumps(report, indent=1))
    picture(raw, decoded, rows, out / "region.png", region or (0, 0, min(width, 480),
                                                               min(height, 480)))
    return report


def bd_rates(rows: list[dict]) -> dict:
    """BD-rates of the model (its 10 m decode, and its native files) against JPEG 2000 (the
    better of per-band and stack codestreams at each rate: the front of both)."""
    curves = {"vqae": [r for r in rows if r["codec"].startswith("vqae") and "(" not in r["codec"]],
              "vqae native files": [r for r in rows if r["codec"].endswith("(native files)")]}
    theirs = [r for r in rows if r["codec"].startswith("jpeg2000")]
    out = {}
    for name, ours in curves.items():
        for key in ("psnr", "psnr_pooled"):
            got = bd_rate([(r["bpppb"], r[key]) for r in ours],
                          [(r["bpppb"], r[key]) for r in theirs])
            out[f"{name} {key}"] = None if got is None else {
                "percent": got.percent, "low": got.low, "high": got.high}
    return out


def picture(raw, decoded, rows, path: Path, region) -> None:
    """Original | the deepest model point | JPEG 2000 at the nearest rate, RGB, fixed stretch."""
    from matplotlib.figure import Figure

    ours = [r for r in rows if r["codec"].startswith("vqae") and "(" not in r["codec"]][-1]
    theirs = min((r for r in rows if r["codec"].startswith("jpeg2000 ")),
                 key=lambda r: abs(np.log(r["bpppb"] / ours["bpppb"])))
    x, y, w, h = region
    panels = [("original", raw), (f"{ours['codec']}: {ours['bpppb']:.3f} bpppb", decoded[ours["codec"]]),
              (f"JPEG 2000: {theirs['bpppb']:.3f} bpppb", decoded[theirs["codec"]])]
    fig = Figure(figsize=(12, 4.4))
    for i, (title, bands) in enumerate(panels):
        rgb = np.stack([bands[b][y : y + h, x : x + w] for b in RGB], -1).astype(np.float32)
        rgb = np.clip((rgb - STRETCH[0]) / (STRETCH[1] - STRETCH[0]), 0, 1)
        ax = fig.add_subplot(1, 3, i + 1)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
