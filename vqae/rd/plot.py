"""rd.png: PSNR against bits per pixel per band (log axis), one curve per codec, in two panels:
the mean of per-patch PSNR and the PSNR of the pooled MSE (where the worst tiles show)."""

from __future__ import annotations

from pathlib import Path

from vqae.rd.bdrate import front

FILTER_LINES = {"none": ":", "gain": "--", "mix": "-", "target": "-.", None: "-"}
# None: one curve a model; target: its rate-controlled curve (vqae rd --target-psnr)
PANELS = (("psnr", "mean of per-patch PSNR"), ("psnr_pooled", "PSNR of the pooled MSE"))


def plot_rd(rows: list[dict], labels: list[str], path: Path, title: str,
            fronts: tuple[str, ...] = ()) -> None:
    """`fronts`: labels that join other curves (`vqae rd --front`), drawn as a wide pale line
    under the models so both stay visible. A model's curves per band filter (MODEL+KIND) share
    its colour, one line style per filter. The axes span the models' points; the legend sits
    to the right."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    wide = 2.4 if len(labels) > 4 else 1.6
    fig, axes = plt.subplots(1, 2, figsize=(11.0 + wide, 4.4), dpi=110)
    styles = {"jpeg2000-bands": {"color": "0.55", "marker": ".", "lw": 1},
              "jpeg2000-stack": {"color": "0.3", "marker": ".", "lw": 1},
              "jpeg2000-best": {"color": "k", "ls": "--", "lw": 1.5},
              "jpeg2000-target": {"color": "k", "ls": "-.", "marker": "s", "ms": 4, "lw": 1}}
    styles.update({name: {"color": "gold", "lw": 8, "alpha": 0.45, "zorder": 1} for name in fronts})
    styles.update(model_styles([name for name in labels if name not in fronts and
                                name not in styles]))
    for ax, (axis, what) in zip(axes, PANELS):
        for codec in dict.fromkeys([*labels, *styles]):  # a front is in both: draw it once
            points = sorted((r["bpppb"], r[axis]) for r in rows if r["codec"] == codec)
            if codec == "jpeg2000-best":  # the front on this panel's axis, of both modes
                points = front([(r["bpppb"], r[axis]) for r in rows
                                if r["codec"] in ("jpeg2000-bands", "jpeg2000-stack")])
            if points:
                x, y = zip(*points)
                ax.plot(x, y, label=codec, **styles[codec])
        ax.set_xscale("log")
        zoom(ax, [(r["bpppb"], r[axis]) for r in rows if r["codec"] in labels])
        ax.set_xlabel("bits per pixel per band (bpppb, whole file)")
        ax.set_ylabel(f"{what} (dB, peak 10000)")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title if len(title) < 110 else title[:107] + "...", fontsize=8)
    axes[1].legend(fontsize=6 if len(labels) > 8 else 8, loc="upper left",
                   bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def model_styles(names: list[str]) -> dict[str, dict]:
    """A colour per model (MODEL+KIND curves share it) and a line style per band filter."""
    import matplotlib.pyplot as plt

    split = [name.rsplit("+", 1) if name.rsplit("+", 1)[-1] in FILTER_LINES else [name, None]
             for name in names]
    models = list(dict.fromkeys(model for model, _ in split))
    palette = plt.get_cmap("tab10" if len(models) <= 10 else "tab20").colors
    return {name: {"color": palette[models.index(model) % len(palette)], "marker": "o",
                   "ms": 4, "lw": 1.6, "ls": FILTER_LINES[kind]}
            for name, (model, kind) in zip(names, split)}


def zoom(ax, points: list[tuple[float, float]]) -> None:
    """Axes around the models' points (JPEG 2000 runs on past them), with a margin."""
    if not points:
        return
    rates, psnrs = zip(*points)
    ax.set_xlim(min(rates) / 1.6, max(rates) * 2.5)
    ax.set_ylim(min(psnrs) - 4, max(psnrs) + 3)
