"""`vqae rd`: rate-distortion of models and JPEG 2000 on the same patches.

Every model is measured at every RVQ depth through the real `.vqz` bytes (coded, decoded and
checked to give back the indices, pixels rounded to uint16 as `vqae decompress` writes them);
JPEG 2000 per native band and as one multi-component stack over a sweep of qualities. Metrics
are DESIGN.md's (`vqae.metrics`), with the first model's per-band offset. Writes rd.csv,
rd.json and rd.png to OUT and prints the table and each model's BD-rate against the best JPEG
2000 curve (the front of both modes), plus, for each model point, the JPEG 2000 rate at the same
PSNR (which still compares a model whose depths span less PSNR than a BD-rate needs).

Each model's files carry the band filter(s) asked for (one curve per filter when several, named
MODEL+KIND), fitted at each depth the way `vqae compress --depth d --band-filter KIND` fits it.
`bd_window` (LOW, HIGH) also reports each BD-rate within that PSNR window.

`front=NAME` also treats all the models as one codec NAME, the front of their points: models
trained for different rates (downsampling factor, codebook, rate weight) make one RD curve, as
learned codecs are compared (one model per lambda), and that curve gets a BD-rate too.
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
from vqae.codec import bandfilter, jpeg2000
from vqae.codec.bdrate import MIN_SPAN, bd_rate, front, psnr_span, rate_at
from vqae.codec.pipeline import load, open_data
from vqae.data.bands import is_s1, to_uint16
from vqae.distributed import single_device
from vqae.errors import DataError
from vqae.metrics import MetricAccumulator

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

    def rows(self, pixels: int) -> list[dict]:
        out = []
        for (codec, setting), p in self.points.items():
            n = p.acc.num_patches
            bpp = 8.0 * p.bytes / (n * pixels)
            row = {"codec": codec, "setting": setting, "patches": n, "bytes": p.bytes,
                   "bpp_coded": bpp, "bpppb": bpp / len(self.bands),
                   "bpp_entropy": None if p.ideal_bits is None else p.ideal_bits / (n * pixels)}
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
def measure_model(sweep: Sweep, label: str, codec, x: torch.Tensor, names: list[str],
                  device: torch.device, filters: list[str]) -> None:
    """Every depth of one model on a batch, through the bytes of real files, with each band
    filter fitted at each depth."""
    # (B, depth, h, w), greedy: prefixes = shallower; side information (B, C or 0)
    grids, centres = codec.encode_images(x.to(device))
    pivot = codec.pivot(centres)
    for d in range(1, grids.shape[1] + 1):
        plain = codec.decode_images(grids[:, :d], device, centres)  # what the decoder sees
        for kind, curve_name in zip(filters, curve_names(label, filters)):
            fitted = bandfilter.fit(kind, x.numpy(), plain, pivot)  # (B, n)
            files = [codec.encode_indices(g[:d], c, kind, f)
                     for g, c, f in zip(grids, centres, fitted)]
            decoded = [codec.decode_file(f.data, n) for f, n in zip(files, names)]
            back = np.stack([grid for grid, _ in decoded])
            assert np.array_equal(back, grids[:, :d]), "indices changed through the file"
            sides = np.array([h.centres for _, h in decoded]).reshape(len(back), -1)
            assert np.array_equal(sides, centres), "side information changed through the file"
            stored = np.array([h.filter_codes for _, h in decoded]).reshape(len(back), -1)
            assert {h.filter_kind for _, h in decoded} == {kind} and np.array_equal(
                stored, fitted), "the band filter changed through the file"
            # the same indices and centres decode to `plain`; the file's filter goes on top
            dn = bandfilter.apply(plain, codec.pivot(sides), kind, stored)  # (B, C, H, W)
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


def check_out(out: Path, overwrite: bool) -> None:
    """Before measuring: refuse to replace an earlier run's outputs unless asked."""
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; pass a folder")
    found = [name for name in OUTPUTS if (out / name).exists()]
    if found and not overwrite:
        raise DataError(f"--out {out} already holds {', '.join(found)} of an earlier run; pass "
                        "--overwrite to replace them or choose another --out")


def run_rd(ckpts: list[str], data: str, split: str | None, out: str, device_name: str = "auto",
           options: RdOptions | None = None, overwrite: bool = False) -> dict:
    opts = options or RdOptions()
    check_out(Path(out), overwrite)
    device = single_device(device_name)
    filters, front_name = list(dict.fromkeys(opts.filters)), opts.front_name
    models, taken = [], set()
    for ckpt in ckpts:
        _, cfg, codec = load(ckpt, device)
        models.append((model_label(ckpt, taken), codec, cfg))
    curves = {name: ckpt for (label, _, _), ckpt in zip(models, ckpts)
              for name in curve_names(label, filters)}  # curve name -> its checkpoint
    if front_name in set(curves) | {BEST} or (front_name or "").startswith("jpeg2000-"):
        raise DataError(f"--front {front_name} is already a curve's name; choose another")
    bands = check_bands(models, ckpts)
    rows, description, count = measure_all(models, data, split, bands, filters, opts, device)
    rows += best_jpeg2000(rows)
    labels = list(curves)
    if front_name:
        rows += front_rows(rows, labels, front_name)
        labels.append(front_name)
    meta = {"data": description, "patches": count, "checkpoints": curves,
            "jpeg2000_qualities": opts.qualities}
    return write_outputs(Path(out), rows, labels, meta, bands, opts.bd_window,
                         (front_name,) if front_name else ())


def measure_all(models, data: str, split: str | None, bands: list[str], filters: list[str],
                opts: RdOptions, device: torch.device) -> tuple[list[dict], str, int]:
    """Every model (each band filter, every depth) and JPEG 2000 on the same patches: (rows,
    the data's description, patches)."""
    first = models[0][1].model
    sweep = Sweep(bands, first.normalize.offsets().cpu())
    with open_data(models[0][2], data) as source:
        description = source.describe(split)
        print(f"rate-distortion on {description}")
        ds = source.dataset(split)
        count = min(len(ds), opts.max_patches) if opts.max_patches else len(ds)
        for start in tqdm(range(0, count, opts.batch_size), desc="rd", disable=not opts.progress):
            items = [ds[i] for i in range(start, min(start + opts.batch_size, count))]
            x = torch.stack([it["image"] for it in items])  # (B, C, H, W) digital numbers
            names = [it["name"] for it in items]
            for label, codec, _ in models:
                measure_model(sweep, label, codec, x, names, device, filters)
            for i, patch in enumerate(x):
                measure_jpeg2000(sweep, ds, start + i, patch, opts.qualities)
    return sweep.rows(first.image_size ** 2), description, count


def check_bands(models, ckpts) -> list[str]:
    bands = list(models[0][1].bands)
    for (_, codec, _), ckpt in zip(models, ckpts):
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
    from vqae.codec.plot import plot_rd

    out.mkdir(parents=True, exist_ok=True)
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
    print(f"wrote {out / 'rd.csv'}, {out / 'rd.json'} and {out / 'rd.png'}")
    return result
