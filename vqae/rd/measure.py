"""`vqae rd`: rate-distortion of models and JPEG 2000 on the same patches.

Each model is measured at every RVQ depth and band filter through real `.vqz` bytes, made and
read by `Codec` exactly as `vqae compress` and `vqae decompress` do; JPEG 2000 per native band
and as one multi-component stack over a sweep of qualities. Metrics are DESIGN.md's
(`vqae.metrics`). Writes rd.csv, rd.json and rd.png and prints each curve's BD-rate against the
best JPEG 2000 (the front of both modes) and, per model point, the JPEG 2000 rate at its PSNR.
`front=NAME` also joins the models into one curve (one model per rate, as learned codecs are
compared).
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from tqdm import tqdm

from vqae.atomic import write_atomic, write_json
from vqae.codec.codec import Codec
from vqae.data.bands import is_s1, to_uint16
from vqae.data.source import source_at
from vqae.errors import DataError
from vqae.metrics import MetricAccumulator, bpp_coded, bpp_entropy, bpppb
from vqae.outputs import Output
from vqae.rd import jpeg2000
from vqae.rd.bdrate import MIN_SPAN, bd_rate, front, psnr_span, rate_at

log = logging.getLogger(__name__)
BEST = "jpeg2000-best"


@dataclass
class Setting:
    """One point of a curve: bytes, ideal bits and distortion accumulated over the patches."""

    acc: MetricAccumulator
    bytes: int = 0
    ideal_bits: float | None = None  # models only: information content under the prior


@dataclass
class Sweep:
    bands: list[str]
    offsets: torch.Tensor
    points: dict[tuple[str, str], Setting] = field(default_factory=dict)

    def add(self, codec: str, setting: str, x: torch.Tensor, recon: torch.Tensor, nbytes: int,
            ideal_bits: float | None = None) -> None:
        """x, recon (B, C, H, W) digital numbers; nbytes: all B files together."""
        point = self.points.setdefault(
            (codec, setting), Setting(MetricAccumulator(self.bands, 1, self.offsets)))
        point.acc.update(x, recon)
        point.bytes += nbytes
        if ideal_bits is not None:
            point.ideal_bits = (point.ideal_bits or 0.0) + ideal_bits

    def rows(self, size: int) -> list[dict]:
        out = []
        for (codec, setting), p in self.points.items():
            n = p.acc.num_patches
            bpp = bpp_coded(p.bytes, size, size, n)
            row = {"codec": codec, "setting": setting, "patches": n, "bytes": p.bytes,
                   "bpp_coded": bpp, "bpppb": bpppb(bpp, len(self.bands)),
                   "bpp_entropy": None if p.ideal_bits is None else
                   bpp_entropy(p.ideal_bits, size, size, n)}
            row.update(p.acc.compute())
            out.append(row)
        return out


def model_label(ckpt: str, taken: set[str]) -> str:
    """runs/<run>/checkpoints/best.pt -> <run>/best; a file elsewhere -> its stem."""
    path = Path(ckpt)
    label = (f"{path.parent.parent.name}/{path.stem}" if path.parent.name == "checkpoints"
             else path.stem)
    base, i = label, 2
    while label in taken:
        label, i = f"{base}#{i}", i + 1
    taken.add(label)
    return label


def curve_names(label: str, filters: list[str]) -> list[str]:
    """A model's curve per band filter: its label alone for a single filter, else label+kind."""
    return [label] if len(filters) == 1 else [f"{label}+{kind}" for kind in filters]


@torch.no_grad()
def measure_model(sweep: Sweep, label: str, codec: Codec, x: torch.Tensor, names: list[str],
                  filters: list[str]) -> None:
    """Every depth and band filter of one model on a batch x (B, C, H, W), through the bytes
    of real files: compressed as `vqae compress` does, decoded as `vqae decompress` does."""
    x_dev = x.to(codec.device)
    analysed = codec.analyse(x_dev)  # full depth once: a prefix of the stages is shallower
    for d in range(1, codec.depth + 1):
        for kind, curve_name in zip(filters, curve_names(label, filters)):
            files = codec.compress_images(x_dev, d, kind, analysed)
            parsed = [codec.parse(f.data, source=n) for f, n in zip(files, names)]
            back = np.stack([p.indices for p in parsed])
            assert np.array_equal(back, analysed[0][:, :d]), "indices changed through the file"
            dn = np.stack([codec.pixels(p) for p in parsed])  # (B, C, H, W)
            recon = torch.from_numpy(to_uint16(dn).astype(np.float32))
            sweep.add(curve_name, f"depth{d}", x, recon, sum(len(f.data) for f in files),
                      sum(f.ideal_bits for f in files))


def measure_jpeg2000(sweep: Sweep, ds, index: int, x: torch.Tensor,
                     qualities: list[float]) -> None:
    """Both JPEG 2000 modes at every quality on one patch x (C, H, W)."""
    raw = ds.load_raw(ds.names[index], ds.s2_bands)
    image = x.numpy()
    for mode in jpeg2000.MODES:
        for q in qualities:
            n, recon = jpeg2000.code_patch(mode, image, raw, ds.s2_bands, q, ds.flag)
            sweep.add(f"jpeg2000-{mode}", f"q{q:g}", x[None], torch.from_numpy(recon)[None], n)


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
    return front_rows(rows, [f"jpeg2000-{mode}" for mode in jpeg2000.MODES], BEST)


def curve(rows: list[dict], codec: str) -> list[tuple[float, float]]:
    return [(r["bpppb"], r["psnr"]) for r in rows if r["codec"] == codec]


def add_equal_quality_rates(rows: list[dict], labels: list[str]) -> None:
    """Each model point: the best JPEG 2000 bpppb at the same PSNR, and the rate change."""
    anchor = curve(rows, BEST)
    for row in rows:
        if row["codec"] in labels:
            rate = rate_at(anchor, row["psnr"])
            row["jpeg2000_bpppb_same_psnr"] = rate
            row["rate_vs_jpeg2000"] = None if rate is None else row["bpppb"] / rate - 1.0


def bd_rates(rows: list[dict], labels: list[str],
             window: tuple[float, float] | None = None) -> dict[str, dict]:
    """Each curve's BD-rate against the best JPEG 2000 over the PSNR range both reach, and,
    with `window`, over the part of that range inside it (key "window")."""
    anchor = curve(rows, BEST)
    out = {}
    for label in labels:
        out[label] = described(bd_rate(curve(rows, label), anchor))
        if window is not None:
            out[label]["window"] = described(bd_rate(curve(rows, label), anchor, within=window))
            out[label]["window"]["asked"] = list(window)
        out[label]["model_psnr"] = list(psnr_span(curve(rows, label)))
        out[label]["jpeg2000_psnr"] = list(psnr_span(anchor)) if anchor else None
    return out


def described(res) -> dict:
    return ({"percent": None, "psnr_range": None} if res is None else
            {"percent": res.percent, "psnr_range": [res.low, res.high]})


def describe_bd(label: str, bd: dict) -> str:
    if bd["percent"] is None:
        return (f"BD-rate {label} vs JPEG 2000: the PSNR ranges share less than {MIN_SPAN} dB "
                f"(model {bd['model_psnr'][0]:.2f}-{bd['model_psnr'][1]:.2f} dB, JPEG 2000 "
                f"{bd['jpeg2000_psnr'][0]:.2f}-{bd['jpeg2000_psnr'][1]:.2f} dB)")
    low, high = bd["psnr_range"]
    line = (f"BD-rate {label} vs JPEG 2000 (best of bands/stack): {bd['percent']:+.1f}% "
            f"over PSNR {low:.2f}-{high:.2f} dB")
    window = bd.get("window")
    if window is None:
        return line
    asked = "-".join(f"{v:g}" for v in window["asked"])
    if window["percent"] is None:
        return f"{line}; within {asked} dB: under {MIN_SPAN} dB shared"
    low, high = window["psnr_range"]
    return f"{line}; within {asked} dB: {window['percent']:+.1f}% over {low:.2f}-{high:.2f} dB"


@dataclass
class RdOptions:
    qualities: list[float] = field(default_factory=lambda: list(jpeg2000.DEFAULT_QUALITIES))
    batch_size: int = 8  # patches per model batch
    max_patches: int = 0  # 0: all
    progress: bool = True
    front_name: str | None = None  # also join the models into one curve of this name
    filters: list[str] = field(default_factory=lambda: ["gain"])  # band filters, a curve each
    bd_window: tuple[float, float] | None = None  # also a BD-rate within this PSNR window


OUTPUTS = ("rd.csv", "rd.json", "rd.png")


def run_rd(ckpts: list[str], data: str, split: str | None, out: str, device: str = "auto",
           options: RdOptions | None = None, overwrite: bool = False) -> dict:
    opts = options or RdOptions()
    filters, front_name = list(dict.fromkeys(opts.filters)), opts.front_name
    models, taken = [], set()
    for ckpt in ckpts:
        models.append((model_label(ckpt, taken), Codec.from_checkpoint(ckpt, device)))
    curves = {name: ckpt for (label, _), ckpt in zip(models, ckpts)
              for name in curve_names(label, filters)}  # curve name -> its checkpoint
    if front_name in set(curves) | {BEST} or (front_name or "").startswith("jpeg2000-"):
        raise DataError(f"--front {front_name} is already a curve's name; choose another")
    bands = check_bands(models, ckpts)
    # before measuring: OUT follows every command's policy (vqae.outputs)
    output = Output.open(out, "rd", inputs=[data, *ckpts], overwrite=overwrite,
                         ours=lambda p: p.name in OUTPUTS, fields={"command": "rd"})
    try:
        rows, description, count = measure_all(models, data, split, bands, filters, opts)
        rows += best_jpeg2000(rows)
        labels = list(curves)
        if front_name:
            rows += front_rows(rows, labels, front_name)
            labels.append(front_name)
        meta = {"data": description, "patches": count, "checkpoints": curves,
                "jpeg2000_qualities": opts.qualities}
        result = write_outputs(output.target, rows, labels, meta, bands, opts.bd_window,
                               (front_name,) if front_name else ())
    except BaseException:
        output.abort(0)
        raise
    output.commit({"command": "rd", "patches": count})
    print(f"wrote {', '.join(OUTPUTS)} into {out}")
    return result


def measure_all(models, data: str, split: str | None, bands: list[str], filters: list[str],
                opts: RdOptions) -> tuple[list[dict], str, int]:
    """Every model (each band filter, every depth) and JPEG 2000 on the same patches: (rows,
    the data's description, patches)."""
    first = models[0][1]
    sweep = Sweep(bands, first.model.normalize.offsets().cpu())
    with source_at(first.config.data, data) as source:
        description = source.describe(split)
        print(f"rate-distortion on {description}")
        ds = source.dataset(split)
        count = min(len(ds), opts.max_patches) if opts.max_patches else len(ds)
        for start in tqdm(range(0, count, opts.batch_size), desc="rd", disable=not opts.progress):
            items = [ds[i] for i in range(start, min(start + opts.batch_size, count))]
            x = torch.stack([it["image"] for it in items])  # (B, C, H, W) digital numbers
            names = [it["name"] for it in items]
            for label, codec in models:
                measure_model(sweep, label, codec, x, names, filters)
            for i, patch in enumerate(x):
                measure_jpeg2000(sweep, ds, start + i, patch, opts.qualities)
    return sweep.rows(first.model.image_size), description, count


def check_bands(models, ckpts) -> list[str]:
    bands = list(models[0][1].bands)
    for (_, codec), ckpt in zip(models, ckpts):
        if list(codec.bands) != bands:
            raise DataError(f"{ckpt} codes bands {list(codec.bands)}, {ckpts[0]} codes {bands}; "
                            "compare models of the same bands")
    if any(is_s1(b) for b in bands):
        raise DataError(f"{ckpts[0]} codes S1 bands; vqae rd compares S2 bands (uint16) only")
    return bands


def write_outputs(out: Path, rows: list[dict], labels: list[str], meta: dict,
                  bands: list[str], bd_window: tuple[float, float] | None = None,
                  fronts: tuple[str, ...] = ()) -> dict:
    """rd.csv, rd.json (meta: data, patches, checkpoints, jpeg2000_qualities) and rd.png, and
    the table and BD-rates printed."""
    from vqae.rd.plot import plot_rd

    bd = bd_rates(rows, labels, bd_window)
    add_equal_quality_rates(rows, labels)
    columns = ["codec", "setting", "patches", "bytes", "bpp_coded", "bpppb", "bpp_entropy",
               "psnr", "ssim", "sam", "jpeg2000_bpppb_same_psnr", "rate_vs_jpeg2000",
               *(f"psnr/{b}" for b in bands)]
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "rd.csv", table.getvalue())
    result = {**meta, "bd_rate": bd, "rows": rows}
    write_json(out / "rd.json", result)
    plot_rd(rows, labels, out / "rd.png", meta["data"], fronts)
    short = ["codec", "setting", "bpp_coded", "bpppb", "psnr", "ssim", "sam",
             "jpeg2000_bpppb_same_psnr", "rate_vs_jpeg2000"]
    print(tabulate([[r.get(c) for c in short] for r in rows], headers=short, floatfmt=".4f"))
    for label in labels:
        print(describe_bd(label, bd[label]))
    return result
