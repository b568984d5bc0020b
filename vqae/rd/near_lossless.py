"""`vqae rd --max-error`: near-lossless and lossless points, near_lossless.csv.

Each model codes every patch at full depth (band filter gain) with an enhancement layer to each
max error E; the classical anchors (vqae.rd.lossless_anchors) code the same patches' native
bands. A row per (codec, E): bpppb pooled over patches (total bits / (patches * 14400 * bands)),
the max abs error measured over every native pixel of every patch, and for a model its rate
against JPEG-LS at the same E and, at E=0, against the cheapest lossless anchor: what a user
choosing an archive format compares.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tabulate import tabulate

from vqae.io.atomic import write_atomic
from vqae.rd.lossless_anchors import GRID

OUTPUT = "near_lossless.csv"
COLUMNS = ("codec", "max_error", "patches", "bpppb", "psnr", "psnr_pooled", "measured_max_error",
           "rate_vs_jpegls", "best_lossless", "rate_vs_best_lossless")
LEGEND = (
    ("max_error: every native pixel within E DN of the original (0: lossless); "
     "measured_max_error: the largest |decoded - original| over every native pixel of every "
     "patch; a vqae row: full depth, band filter gain, with its enhancement layer"),
    ("rate_vs_jpegls: the bpppb / jpegls's at the same max_error - 1 (-0.15: 15% fewer bits); "
     "rate_vs_best_lossless: at max_error 0, against the cheapest lossless anchor "
     "(best_lossless)"))


def model_name(label: str) -> str:
    """A model's codec in the table, apart from any anchor's name."""
    return f"vqae {label}"


def setting(max_error: int) -> str:
    """rd_patches.csv's setting of an enhanced or anchor point."""
    return f"maxerr{max_error}"


def max_abs_error(native: Mapping[str, np.ndarray], decoded: Mapping[str, np.ndarray]) -> int:
    """The largest |decoded - original| over every native pixel of one patch."""
    return max(int(np.abs(np.asarray(decoded[b], np.int64) - np.asarray(a, np.int64)).max())
               for b, a in native.items())


def anchor_points(anchors: list[dict], bands: int) -> list[dict]:
    """Per-patch anchor rows (lossless_anchors.anchor_rows) pooled per (codec, E), as
    lossless_anchors.anchor_table pools them."""
    totals: dict[tuple[str, int], list[int]] = {}
    for row in anchors:
        total = totals.setdefault((row["codec"], row["max_error"]), [0, 0, 0])
        total[0] += row["bits"]
        total[1] = max(total[1], row["measured_max_error"])
        total[2] += 1
    return [{"codec": codec, "max_error": e, "patches": n, "bpppb": bits / (n * GRID * bands),
             "measured_max_error": worst} for (codec, e), (bits, worst, n) in totals.items()]


def table(models: list[dict], anchors: list[dict], bands: int,
          curves: Mapping[str, str]) -> list[dict]:
    """The rows of near_lossless.csv, by max error: `models`, RdPoints' enhanced rows;
    `anchors`, per-patch anchor rows; `curves`, each model's lossy curve (its plot continues
    it)."""
    points = anchor_points(anchors, bands)
    jpegls = {r["max_error"]: r["bpppb"] for r in points if r["codec"] == "jpegls"}
    best = min((r for r in points if r["max_error"] == 0), key=lambda r: r["bpppb"],
               default=None)
    rows = []
    for m in models:
        e = m["max_error"]
        row = {k: m[k] for k in ("codec", "max_error", "patches", "bpppb", "psnr", "psnr_pooled",
                                 "measured_max_error")}
        row["curve"] = curves[m["codec"]]
        row["rate_vs_jpegls"] = m["bpppb"] / jpegls[e] - 1.0 if e in jpegls else None
        if e == 0 and best is not None:
            row["best_lossless"] = best["codec"]
            row["rate_vs_best_lossless"] = m["bpppb"] / best["bpppb"] - 1.0
        rows.append(row)
    return sorted(rows + points, key=lambda r: r["max_error"])  # stable: models first


def write_table(out: Path, rows: list[dict]) -> None:
    """near_lossless.csv, and the table printed with its legend."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / OUTPUT, text.getvalue())
    print(tabulate([[r.get(c) for c in COLUMNS] for r in rows], headers=COLUMNS, floatfmt=".4f"))
    print("\n".join(LEGEND))
