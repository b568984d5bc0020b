"""`vqae rd`'s outputs: rd.csv, rd.json, rd.png, BD-rates on the mean and the pooled curve.

Every curve is compared with the best JPEG 2000 (at each rate, the better of its two modes) on
two y axes: `psnr` (the mean of per-patch PSNR, as image-codec papers report) and `psnr_pooled`
(every pixel weighs the same, so the worst tiles count). A target curve (`--target-psnr`) is
also compared point by point with JPEG 2000 coded to the same per-patch target.
Each model point is also set against JPEG 2000 at its rate (`psnr_vs_jpeg2000`): where the PSNR
ranges share too little for a BD-rate, that is what is printed.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tabulate import tabulate

from vqae.io.atomic import write_atomic, write_json
from vqae.rd import jpeg2000
from vqae.rd.bdrate import MIN_SPAN, bd_rate, front, psnr_at, psnr_span, rate_at, shared_span

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


def add_equal_rate_psnrs(rows: list[dict], labels: list[str]) -> None:
    """Each model point: the best JPEG 2000's PSNR at the same bpppb on both axes, and the
    model's gain there in dB; None where JPEG 2000 measured no such rate."""
    for axis in AXES:
        anchor = curve(rows, JPEG2000_MODES, axis)
        for row in rows:
            if row["codec"] in labels:
                point = same_bpppb(row, anchor, axis)
                row[f"jpeg2000_{axis}_same_bpppb"] = point["jpeg2000_psnr"]
                row[f"{axis}_vs_jpeg2000"] = point["gain_db"]


def same_bpppb(row: dict, anchor: list[tuple[float, float]], axis: str) -> dict:
    """A model point against the anchor's front at the point's rate (log-rate interpolated,
    never extrapolated: None outside the rates it measured)."""
    theirs = psnr_at(anchor, row["bpppb"])
    return {"setting": row["setting"], "bpppb": row["bpppb"], "psnr": row[axis],
            "jpeg2000_psnr": theirs, "gain_db": None if theirs is None else row[axis] - theirs}


def bd_rates(rows: list[dict], labels: list[str], axis: str = "psnr",
             window: tuple[float, float] | None = None) -> dict[str, dict]:
    """Each curve's BD-rate on `axis` against the best JPEG 2000 over the PSNR range both reach,
    and, with `window`, over the part of that range inside it (key "window"); "same_bpppb":
    each of its points against JPEG 2000 at the same rate (what compares a single depth)."""
    anchor = curve(rows, JPEG2000_MODES, axis)  # its front is the best of both modes
    out = {}
    for label in labels:
        test = curve(rows, label, axis)
        out[label] = described(bd_rate(test, anchor))
        if window is not None:
            out[label]["window"] = described(bd_rate(test, anchor, within=window))
            out[label]["window"]["asked"] = list(window)
        out[label]["model_psnr"] = list(psnr_span(front(test)))  # the fronts BD-rate uses
        out[label]["jpeg2000_psnr"] = list(psnr_span(front(anchor))) if anchor else None
        out[label]["jpeg2000_ends"] = [list(front(anchor)[i]) for i in (0, -1)] if anchor \
            else None  # its cheapest and costliest (bpppb, PSNR): what an outside point meets
        out[label]["shared_db"] = shared_span(test, anchor)
        out[label]["same_bpppb"] = [same_bpppb(r, anchor, axis) for r in rows
                                    if r["codec"] == label]
    return out


def described(res) -> dict:
    return ({"percent": None, "psnr_range": None} if res is None else
            {"percent": res.percent, "psnr_range": [res.low, res.high]})


def describe_bd(label: str, bd: dict, axis: str = "psnr") -> list[str]:
    """The printed lines of one curve's comparison: its BD-rate, or, where the PSNR ranges
    share too little for one, each point against JPEG 2000 at the point's rate."""
    what = "mean" if axis == "psnr" else "pooled"
    if bd["percent"] is None:
        return [(f"BD-rate {label} vs JPEG 2000 ({what}): none, the PSNR ranges share "
                 f"{bd['shared_db']:.2f} dB and a BD-rate needs {MIN_SPAN} (model "
                 f"{span(bd['model_psnr'])} dB, JPEG 2000 {span(bd['jpeg2000_psnr'])} dB); "
                 "at the model's rates instead:"),
                *(describe_point(p, bd["jpeg2000_ends"]) for p in bd["same_bpppb"])]
    low, high = bd["psnr_range"]
    line = (f"BD-rate {label} vs JPEG 2000 ({what}, best of bands/stack): {bd['percent']:+.1f}% "
            f"over PSNR {low:.2f}-{high:.2f} dB")
    window = bd.get("window")
    if window is None:
        return [line]
    asked = "-".join(f"{v:g}" for v in window["asked"])
    if window["percent"] is None:
        return [f"{line}; within {asked} dB: under {MIN_SPAN} dB shared"]
    low, high = window["psnr_range"]
    return [f"{line}; within {asked} dB: {window['percent']:+.1f}% over {low:.2f}-{high:.2f} dB"]


def span(pair: list[float] | None) -> str:
    return "none" if pair is None else f"{pair[0]:.2f}-{pair[1]:.2f}"


def describe_point(point: dict, ends: list[list[float]] | None) -> str:
    """`  depth1 at 0.0123 bpppb: model 23.10 dB, JPEG 2000 21.30 dB, gain +1.80 dB`; a point
    outside JPEG 2000's rates is set against its nearest end (cheapest or costliest point)."""
    head = f"  {point['setting']} at {point['bpppb']:.4g} bpppb: model {point['psnr']:.2f} dB"
    if point["jpeg2000_psnr"] is not None:
        return (f"{head}, JPEG 2000 {point['jpeg2000_psnr']:.2f} dB, gain "
                f"{point['gain_db']:+.2f} dB")
    if ends is None:
        return f"{head}, no JPEG 2000 point to compare"
    below = point["bpppb"] < ends[0][0]
    rate, quality = ends[0] if below else ends[1]
    return (f"{head}, {'below' if below else 'above'} every rate JPEG 2000 measured (not "
            f"extrapolated); its {'cheapest' if below else 'costliest'} point, {rate:.4g} bpppb "
            f"at {quality:.2f} dB: the model {point['psnr'] - quality:+.2f} dB at "
            f"{point['bpppb'] / rate:.2f}x its rate")


COLUMNS = ["codec", "setting", "patches", "bytes", "bpp_coded", "bpppb", "bpp_entropy",
           *AGGREGATES, "ssim", "sam", "jpeg2000_bpppb_same_psnr", "rate_vs_jpeg2000",
           "jpeg2000_psnr_same_bpppb", "psnr_vs_jpeg2000", "jpeg2000_psnr_pooled_same_bpppb",
           "psnr_pooled_vs_jpeg2000", "target", "patches_reaching_target"]
SHORT = ["codec", "setting", "bpppb", "psnr", "psnr_pooled", "psnr_p10", "psnr_min",
         "patches_below", "ssim", "rate_vs_jpeg2000", "psnr_vs_jpeg2000",
         "patches_reaching_target"]  # the printed table


def write_outputs(out: Path, rows: list[dict], labels: list[str], meta: dict,
                  bands: list[str], bd_window: tuple[float, float] | None = None,
                  fronts: tuple[str, ...] = (), near: list[dict] | None = None) -> dict:
    """rd.csv, rd.json (meta: data, patches, checkpoints, jpeg2000_qualities, ...) and rd.png,
    and the table and BD-rates printed. Target curves are in `labels` but get no BD-rate (their
    points are few and compared at equal target instead). `near` (--max-error): the rows of
    near_lossless.csv, also rd.json's `near_lossless` and points on rd.png; no BD-rate (a
    lossless point sits at the PSNR cap)."""
    from vqae.rd import near_lossless
    from vqae.rd.plot import plot_rd

    curves = [label for label in labels if not any(r.get("target") is not None for r in rows
                                                    if r["codec"] == label)]
    add_equal_rate_psnrs(rows, labels)
    bd = {axis: bd_rates(rows, curves, axis, bd_window) for axis in AXES}
    add_equal_quality_rates(rows, labels)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=[*COLUMNS, *(f"psnr/{b}" for b in bands)],
                            extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "rd.csv", table.getvalue())
    result = {**meta, "bd_rate": bd["psnr"], "bd_rate_pooled": bd["psnr_pooled"], "rows": rows}
    if near is not None:
        result["near_lossless"] = near
    write_json(out / "rd.json", result)
    plot_rd(rows, labels, out / "rd.png", meta["data"], fronts, near or ())
    print(tabulate([[r.get(c) for c in SHORT] for r in rows], headers=SHORT, floatfmt=".4f"))
    print("\n".join(table_legend(rows, meta["psnr_threshold"])))
    for axis in AXES:
        for label in curves:
            print("\n".join(describe_bd(label, bd[axis][label], axis)))
    if near is not None:
        near_lossless.write_table(out, near)
    return result


COLUMN_WORDS = {  # the printed table's comparison columns
    "rate_vs_jpeg2000": "the bpppb / jpeg2000-best's bpppb at the same mean PSNR - 1 (empty "
                        "outside the PSNRs JPEG 2000 reached)",
    "psnr_vs_jpeg2000": "the mean PSNR - jpeg2000-best's at the same bpppb, in dB (+ is better; "
                        "empty outside the rates JPEG 2000 measured)"}


def table_legend(rows: list[dict], threshold: float) -> list[str]:
    """The printed table's columns that need words, each with an example from this run, and
    the JPEG 2000 rows that need them."""
    lines = [f"patches_below: patches under {threshold:g} dB"]
    for column, words in COLUMN_WORDS.items():
        lines.append(f"{column}: {words}{example(rows, column)}")
    if any(r.get("target") is not None for r in rows):
        lines.append("  a target row (psnrDB): rate_vs_jpeg2000 against jpeg2000-target, "
                     "coded to the same per-patch target")
    return lines + beaten_modes(rows)


def example(rows: list[dict], column: str) -> str:
    """`; debug/best depth1: -0.8511, 85% fewer bits`: the column's first value, read out."""
    row = next((r for r in rows if r.get(column) is not None), None)
    if row is None:
        return "; empty in this run"
    value = row[column]
    said = (f"{abs(value):.0%} {'fewer' if value < 0 else 'more'} bits"
            if column == "rate_vs_jpeg2000" else f"{value:+.2f} dB")
    return f"; {row['codec']} {row['setting']}: {value:.4f}, {said}"

# why a JPEG 2000 mode can lose to the other at a lower rate (vqae.rd.jpeg2000)
WHY_BEATEN = {
    "jpeg2000-bands": "each native band is its own codestream (a header each) at one OpenJPEG "
                      "level, too coarse for bands of little content at low levels",
    "jpeg2000-stack": "one codestream of the upsampled stack also codes the 20 m and 60 m bands "
                      "at 10 m, which costs more at high levels"}


def beaten_modes(rows: list[dict]) -> list[str]:
    """A line per JPEG 2000 mode with points off jpeg2000-best (beaten for fewer bits, so in
    no comparison): which, its lowest with what beats it, and why a mode loses there."""
    best = [r for r in rows if r["codec"] == BEST]
    lines = []
    for mode in JPEG2000_MODES:
        beaten = [r for r in rows if r["codec"] == mode and not any(
            b["setting"] == f"{mode.removeprefix('jpeg2000-')} {r['setting']}" for b in best)]
        if not beaten:
            continue
        worst = min(beaten, key=lambda r: r["psnr"])
        rival = max((b for b in best if b["bpppb"] <= worst["bpppb"]), key=lambda b: b["psnr"])
        lines.append(f"{mode} {' '.join(r['setting'] for r in beaten)}: off jpeg2000-best, "
                     f"beaten for fewer bits (its lowest, {worst['setting']}: "
                     f"{worst['bpppb']:.4f} bpppb at {worst['psnr']:.1f} dB, worst patch "
                     f"{worst['psnr_min']:.1f} dB; jpeg2000-best takes {rival['setting']} there: "
                     f"{rival['bpppb']:.4f} bpppb at {rival['psnr']:.1f} dB): {WHY_BEATEN[mode]}")
    return lines
