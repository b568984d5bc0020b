"""rd.png: PSNR against bits per pixel per band (log axis), one curve per codec, in two panels:
the mean of per-patch PSNR and the PSNR of the pooled MSE (where the worst tiles show). With
`vqae rd --max-error`, each model's enhanced points continue its curve; an exact point (at the
PSNR cap, 180 dB) is drawn at the top edge, CEILING_DB above the best finite PSNR, annotated,
so the axis stays on the PSNRs the codecs reach."""

from __future__ import annotations

from pathlib import Path

from vqae.metrics import PSNR_MAX
from vqae.rd.bdrate import front

# a line style and marker per band filter (a model of one depth draws dots: the marker tells);
# None: one curve a model; target: its rate-controlled curve (vqae rd --target-psnr)
FILTER_LINES = {"none": ":", "gain": "--", "mix": "-", "target": "-.", None: "-"}
FILTER_MARKERS = {"none": "v", "gain": "s", "mix": "^", "target": "D", None: "o"}
KIND_NAMES = {"none": "band filter none", "gain": "band filter gain", "mix": "band filter mix",
              "target": "per-patch target", None: "every depth"}
PANELS = (("psnr", "mean of per-patch PSNR"), ("psnr_pooled", "PSNR of the pooled MSE"))
JPEG2000_STYLES = {"jpeg2000-bands": {"color": "0.55", "marker": ".", "lw": 1},
                   "jpeg2000-stack": {"color": "0.3", "marker": ".", "lw": 1},
                   "jpeg2000-best": {"color": "k", "ls": "--", "lw": 1.5},
                   "jpeg2000-target": {"color": "k", "ls": "-.", "marker": "s", "ms": 4, "lw": 1}}
NEAR_MARKER = "*"  # an enhanced point (--max-error)
NEAR_NAME = "max error E DN (enhancement layer)"
NEAR_GID = "near"  # its lines: the legend gives them one entry
CEILING_DB = 5.0  # an exact point's height above the best finite PSNR of its panel


def plot_rd(rows: list[dict], labels: list[str], path: Path, title: str,
            fronts: tuple[str, ...] = (), near: list[dict] = ()) -> None:
    draw_rd(rows, labels, title, fronts, near).savefig(path)


def draw_rd(rows: list[dict], labels: list[str], title: str, fronts: tuple[str, ...] = (),
            near: list[dict] = ()):
    """The figure of rd.png. `fronts`: labels that join other curves (`vqae rd --front`),
    drawn as a wide pale line under the models so both stay visible. A model's curves per band
    filter (MODEL+KIND) share its colour, one line style per filter; the legend names each
    model once and each style once. `near`: near_lossless.csv's rows, a model's (those with a
    `curve`) drawn on from that curve. The axes span every curve drawn."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no display

    styles = {**JPEG2000_STYLES,
              **{name: {"color": "gold", "lw": 8, "alpha": 0.45, "zorder": 1} for name in fronts}}
    models = [name for name in labels if name not in styles]
    styles.update(model_styles(models))
    fig = Figure(figsize=(13.4, 4.6), dpi=110)
    axes = fig.subplots(1, 2)
    for ax, (axis, what) in zip(axes, PANELS):
        for codec in dict.fromkeys([*labels, *styles]):  # a front is in both: draw it once
            points = panel_points(rows, codec, axis)
            if points:
                ax.plot(*zip(*points), label=codec, **styles[codec])
        draw_near(ax, rows, [r for r in near if r.get("curve") in styles], axis, styles)
        ax.set_xscale("log")  # autoscaled: the limits hold every line drawn
        ax.set_xlabel("bits per pixel per band (bpppb, whole file)")
        ax.set_ylabel(f"{what} (dB, peak 10000)")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title if len(title) < 110 else title[:107] + "...", fontsize=8)
    handles = legend_handles(axes[1], models, styles, bool(near))
    axes[1].legend(handles=handles, fontsize=6 if len(handles) > 10 else 8, loc="upper left",
                   bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    return fig


def draw_near(ax, rows: list[dict], near: list[dict], axis: str, styles: dict[str, dict]) -> None:
    """Each model's enhanced points on from its costliest lossy point; a point at the PSNR cap
    at the top edge instead, CEILING_DB above the best finite PSNR of the panel."""
    if not near:
        return
    cap = PSNR_MAX - 1e-6
    finite = [r[axis] for r in near if r[axis] < cap]
    ceiling = max([y for line in ax.get_lines() for y in line.get_ydata()] + finite) + CEILING_DB
    for curve in dict.fromkeys(r["curve"] for r in near):
        mine = sorted((r["bpppb"], r[axis], r["max_error"]) for r in near if r["curve"] == curve)
        start = panel_points(rows, curve, axis)[-1:]
        continue_curve(ax, styles[curve], start, [p for p in mine if p[1] < cap])
        for rate, _, e in (p for p in mine if p[1] >= cap):
            mark_exact(ax, styles[curve]["color"], rate, ceiling, e)


def continue_curve(ax, style: dict, start: list, points: list[tuple[float, float, int]]) -> None:
    """Enhanced points (bpppb, PSNR, E) joined on from `start` (the curve's costliest point,
    drawn without a marker) in the curve's colour and line, marker NEAR_MARKER, each
    annotated with its E."""
    if not points:
        return
    line, = ax.plot(*zip(*start, *(p[:2] for p in points)), color=style["color"],
                    ls=style["ls"], lw=style["lw"], marker=NEAR_MARKER, ms=7,
                    markevery=list(range(len(start), len(start) + len(points))))
    line.set_gid(NEAR_GID)
    for rate, quality, e in points:  # right of the point: below a rising curve
        ax.annotate(f"E={e}", (rate, quality), textcoords="offset points", xytext=(6, -2),
                    ha="left", va="top", fontsize=6, color=style["color"])


def mark_exact(ax, colour, rate: float, ceiling: float, e: int) -> None:
    """A point at the PSNR cap, drawn at `ceiling` and annotated: at 180 dB it would squash
    every curve into the bottom of the axis."""
    line, = ax.plot([rate], [ceiling], color=colour, ls="none", marker=NEAR_MARKER, ms=10)
    line.set_gid(NEAR_GID)
    words = f"lossless\n({PSNR_MAX:.0f} dB cap)" if e == 0 else f"E={e}, exact"
    ax.annotate(words, (rate, ceiling), textcoords="offset points", xytext=(-8, 0), ha="right",
                va="center", fontsize=6, color=colour)


def panel_points(rows: list[dict], codec: str, axis: str) -> list[tuple[float, float]]:
    """A curve's (bpppb, PSNR on `axis`) by rate; jpeg2000-best is the front of both modes on
    this panel's axis (its rows are the front on the mean)."""
    if codec == "jpeg2000-best":
        return front([(r["bpppb"], r[axis]) for r in rows
                      if r["codec"] in ("jpeg2000-bands", "jpeg2000-stack")])
    return sorted((r["bpppb"], r[axis]) for r in rows if r["codec"] == codec)


def split_name(name: str) -> tuple[str, str | None]:
    """MODEL+KIND -> (MODEL, KIND); a model's only curve -> (name, None)."""
    model, _, kind = name.rpartition("+")
    return (model, kind) if model and kind in FILTER_LINES else (name, None)


def model_styles(names: list[str]) -> dict[str, dict]:
    """A colour per model (MODEL+KIND curves share it), a line style and marker per filter."""
    from matplotlib import colormaps

    models = list(dict.fromkeys(split_name(name)[0] for name in names))
    palette = colormaps["tab10" if len(models) <= 10 else "tab20"].colors
    out = {}
    for name in names:
        model, kind = split_name(name)
        out[name] = {"color": palette[models.index(model) % len(palette)], "ms": 4, "lw": 1.6,
                     "ls": FILTER_LINES[kind], "marker": FILTER_MARKERS[kind]}
    return out


def legend_handles(ax, models: list[str], styles: dict[str, dict], near: bool = False) -> list:
    """JPEG 2000 and fronts by name; the models' curves as one entry per model (its colour)
    and, where they differ, one per line style (grey): a legend of M + K, not M x K, rows;
    `near`: one more for every enhanced point (grey)."""
    from matplotlib.lines import Line2D

    lines = [line for line in ax.get_lines() if line.get_gid() != NEAR_GID]
    extra = [Line2D([], [], color="0.35", ls="none", marker=NEAR_MARKER, ms=7,
                    label=NEAR_NAME)] if near else []
    kinds = list(dict.fromkeys(split_name(name)[1] for name in models))
    if len(kinds) < 2:  # each model has one curve: its own line says all
        return lines + extra
    colours = {split_name(name)[0]: styles[name]["color"] for name in models}
    return ([line for line in lines if line.get_label() not in models]
            + [Line2D([], [], color=c, lw=4, label=m) for m, c in colours.items()]
            + [Line2D([], [], color="0.35", lw=1.6, ls=FILTER_LINES[k], marker=FILTER_MARKERS[k],
                      ms=4, label=KIND_NAMES[k]) for k in kinds] + extra)
