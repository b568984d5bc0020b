"""rd.png: PSNR against bits per pixel per band (log axis), one curve per codec."""

from __future__ import annotations

from pathlib import Path


def plot_rd(rows: list[dict], labels: list[str], path: Path, title: str,
            fronts: tuple[str, ...] = ()) -> None:
    """`fronts`: labels that join other curves (`vqae rd --front`), drawn as a wide pale line
    under the models so both stay visible."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    styles = {"jpeg2000-bands": {"color": "0.55", "marker": ".", "lw": 1},
              "jpeg2000-stack": {"color": "0.3", "marker": ".", "lw": 1},
              "jpeg2000-best": {"color": "k", "ls": "--", "lw": 1.5}}
    styles.update({name: {"color": "gold", "lw": 8, "alpha": 0.45, "zorder": 1} for name in fronts})
    for codec in dict.fromkeys([*labels, *styles]):  # a front is in both: draw it once
        points = sorted((r["bpppb"], r["psnr"]) for r in rows if r["codec"] == codec)
        if points:
            x, y = zip(*points)
            ax.plot(x, y, label=codec, **styles.get(codec, {"marker": "o", "lw": 2}))
    ax.set_xscale("log")
    ax.set_xlabel("bits per pixel per band (bpppb, whole file)")
    ax.set_ylabel("PSNR (dB, peak 10000)")
    ax.set_title(title if len(title) < 70 else title[:67] + "...", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
