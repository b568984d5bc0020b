"""`vqae rd`'s outputs: rd.csv, rd.json, rd.png, BD-rates on the mean and the pooled curve.

Every curve is compared with the best JPEG 2000 (at each rate, the better of its two modes) on
two y axes: `psnr` (the mean of per-patch PSNR, as image-codec papers report) and `psnr_pooled`
(every pixel weighs the same, so the worst tiles count). A target curve (`--target-psnr`) is
also compared point by point with JPEG 2000 coded to the same per-patch target.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tabulate import tabulate

from vqae.io.atomic import write_atomic, write_json
from vqae.rd import jpeg2000
from vqae.rd.bdrate import MIN_SPAN, bd_rate, front, psnr_span, rate_at

BEST = "jpeg2000-best"
JPEG2000_TARGET = "jpeg2000-target"
JPEG2000_MODES = tuple(f"jpeg2000-{mode}" for mode in jpeg2000.MODES)
AXES = ("psnr", "psnr_pooled")  # the curves' y axes: mean of patches, pooled MSE
AGGREGATES = ("psnr", "psnr_pooled", "psnr_p10", "psnr_min", "patches_below")


def front_rows(rows: list[dict], codecs: list[str], name: str) -> list[dict]:
    """The front of several codecs' points as one curve `name`: at each rate, the best of
    them; each row's setting says which codec and setting it came from."""
    points = [r for r in rows if r["codec"] in codecs]
    keep = set(front([(r["bpppb"], r["psnr"]) for r in points]))
    best = [dict(r, codec=name, setting=f"{r['codec'].removeprefix('jpeg2000-')} {r['setting']}")
            for r in points if (r["bpppb"], r["psnr"]) in keep]
    return sorted(best, key=lambda r: r["bpppb"])


def best_jpeg2000(rows: list[dict]) -> list[dict]:
    """The front of both JPEG 2000 modes: at each rate, the better of the two."""
    return front_rows(rows, list(JPEG2000_MODES), BEST)


def curve(rows: list[dict], codecs, axis: str = "psnr") -> list[tuple[float, float]]:
    codecs = {codecs} if isinstance(codecs, str) else set(codecs)
    return [(r["bpppb"], r[axis]) for r in rows if r["codec"] in codecs]


def add_equal_quality_rates(rows: list[dict], labels: list[str]) -> None:
    """Each model point: the best JPEG 2000 bpppb at the same PSNR, and the rate change; a
    target point: JPEG 2000's rate at the same per-patch target."""
    anchor = curve(rows, BEST)
    targets = {r["setting"]: r["bpppb"] for r in rows if r["codec"] == JPEG2000_TARGET}
    for row in rows:
        if row["codec"] not in labels:
            continue
        rate = (targets.get(row["setting"]) if row.get("target") is not None
                else rate_at(anchor, row["psnr"]))
        row["jpeg2000_bpppb_same_psnr"] = rate
        row["rate_vs_jpeg2000"] = None if rate is None else row["bpppb"] / rate - 1.0


def bd_rates(rows: list[dict], labels: list[str], axis: str = "psnr",
             window: tuple[float, float] | None = None) -> dict[str, dict]:
    """Each curve's BD-rate on `axis` against the best JPEG 2000 over the PSNR range both reach,
    and, with `window`, over the part of that range inside it (key "window")."""
    anchor = curve(rows, JPEG2000_MODES, axis)  # its front is the best of both modes
    out = {}
    for label in labels:
        test = curve(rows, label, axis)
        out[label] = described(bd_rate(test, anchor))
        if window is not None:
            out[label]["window"] = described(bd_rate(test, anchor, within=window))
            out[label]["window"]["asked"] = list(window)
        out[label]["model_psnr"] = list(psnr_span(test))
        out[label]["jpeg2000_psnr"] = list(psnr_span(anchor)) if anchor else None
    return out


def described(res) -> dict:
    return ({"percent": None, "psnr_range": None} if res is None else
            {"percent": res.percent, "psnr_range": [res.low, res.high]})


def describe_bd(label: str, bd: dict, axis: str = "psnr") -> str:
    what = "mean" if axis == "psnr" else "pooled"
    if bd["percent"] is None:
        return (f"BD-rate {label} vs JPEG 2000 ({what}): the PSNR ranges share less than "
                f"{MIN_SPAN} dB (model {bd['model_psnr'][0]:.2f}-{bd['model_psnr'][1]:.2f} dB, "
                f"JPEG 2000 {bd['jpeg2000_psnr'][0]:.2f}-{bd['jpeg2000_psnr'][1]:.2f} dB)")
    low, high = bd["psnr_range"]
    line = (f"BD-rate {label} vs JPEG 2000 ({what}, best of bands/stack): {bd['percent']:+.1f}% "
            f"over PSNR {low:.2f}-{high:.2f} dB")
    window = bd.get("window")
    if window is None:
        return line
    asked = "-".join(f"{v:g}" for v in window["asked"])
    if window["percent"] is None:
        return f"{line}; within {asked} dB: under {MIN_SPAN} dB shared"
    low, high = window["psnr_range"]
    return f"{line}; within {asked} dB: {window['percent']:+.1f}% over {low:.2f}-{high:.2f} dB"


COLUMNS = ["codec", "setting", "patches", "bytes", "bpp_coded", "bpppb", "bpp_entropy",
           *AGGREGATES, "ssim", "sam", "jpeg2000_bpppb_same_psnr", "rate_vs_jpeg2000",
           "target", "patches_reaching_target"]


def write_outputs(out: Path, rows: list[dict], labels: list[str], meta: dict,
                  bands: list[str], bd_window: tuple[float, float] | None = None,
                  fronts: tuple[str, ...] = ()) -> dict:
    """rd.csv, rd.json (meta: data, patches, checkpoints, jpeg2000_qualities, ...) and rd.png,
    and the table and BD-rates printed. Target curves are in `labels` but get no BD-rate (their
    points are few and compared at equal target instead)."""
    from vqae.rd.plot import plot_rd

    curves = [label for label in labels if not any(r.get("target") is not None for r in rows
                                                    if r["codec"] == label)]
    bd = {axis: bd_rates(rows, curves, axis, bd_window) for axis in AXES}
    add_equal_quality_rates(rows, labels)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=[*COLUMNS, *(f"psnr/{b}" for b in bands)],
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "rd.csv", table.getvalue())
    result = {**meta, "bd_rate": bd["psnr"], "bd_rate_pooled": bd["psnr_pooled"], "rows": rows}
    write_json(out / "rd.json", result)
    plot_rd(rows, labels, out / "rd.png", meta["data"], fronts)
    short = ["codec", "setting", "bpppb", "psnr", "psnr_pooled", "psnr_p10", "psnr_min",
             "patches_below", "ssim", "rate_vs_jpeg2000", "patches_reaching_target"]
    print(tabulate([[r.get(c) for c in short] for r in rows], headers=short, floatfmt=".4f"))
    print(f"patches_below: patches under {meta['psnr_threshold']:g} dB")
    for axis in AXES:
        for label in curves:
            print(describe_bd(label, bd[axis][label], axis))
    return result
