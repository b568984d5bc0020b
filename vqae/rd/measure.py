"""`vqae rd`: rate-distortion of models and JPEG 2000 on the same patches.

Each model is measured at every RVQ depth and band filter through real `.vqz` bytes, made and
read by `Codec` exactly as `vqae compress` and `vqae decompress` do; JPEG 2000 per native band
and as one multi-component stack over a sweep of qualities. Metrics are DESIGN.md's
(`vqae.metrics`), the mean, pooled and worst-patch aggregates side by side. `front=NAME` also
joins the models into one curve (one model per rate, as learned codecs are compared);
`targets` adds a rate-controlled curve per model and for JPEG 2000 (vqae.rd.targets). Every
patch of every point is a row of rd_patches.csv, written as it is measured.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vqae.codec.codec import Codec
from vqae.codec.ratecontrol import Choice, pick
from vqae.data.bands import is_s1, to_uint16
from vqae.data.source import source_at
from vqae.errors import DataError
from vqae.io.outputs import Output
from vqae.metrics import PSNR_THRESHOLD, MetricAccumulator, bpp_coded, bpp_entropy, bpppb
from vqae.rd import jpeg2000
from vqae.rd.report import BEST, JPEG2000_TARGET, best_jpeg2000, front_rows, write_outputs
from vqae.rd.targets import jpeg2000_to_target

log = logging.getLogger(__name__)


@dataclass
class Setting:
    """One point of a curve: bytes, ideal bits and distortion accumulated over the patches."""

    acc: MetricAccumulator
    bytes: int = 0
    ideal_bits: float | None = None  # models only: information content under the prior
    target: float | None = None  # a rate-controlled point: its PSNR target
    reached: int = 0  # its patches at or above the target


class PatchLog:
    """rd_patches.csv: a row per patch and point, written as measured (nothing kept)."""

    COLUMNS = ("codec", "setting", "patch", "bytes", "bpppb", "psnr", "coded_as")

    def __init__(self, path: Path, size: int, bands: int):
        self.file = open(path, "w", newline="")  # noqa: SIM115 (closed by measure_all)
        self.writer = csv.writer(self.file)
        self.writer.writerow(self.COLUMNS)
        self.size, self.bands = size, bands

    def write(self, codec: str, setting: str, names: list[str], sizes: list[int],
              psnrs: list[float], coded_as: list[str] | None = None) -> None:
        for i, (name, n, quality) in enumerate(zip(names, sizes, psnrs)):
            rate = bpppb(bpp_coded(n, self.size, self.size), self.bands)
            self.writer.writerow([codec, setting, name, n, f"{rate:.6g}", f"{quality:.4f}",
                                  "" if coded_as is None else coded_as[i]])

    def close(self) -> None:
        self.file.close()


@dataclass
class RdPoints:
    """Every (curve, setting) point measured so far, with its per-patch log."""

    bands: list[str]
    offsets: torch.Tensor
    log: PatchLog
    threshold: float = PSNR_THRESHOLD
    points: dict[tuple[str, str], Setting] = field(default_factory=dict)

    def add(self, codec: str, setting: str, x: torch.Tensor, recon: torch.Tensor,
            names: list[str], sizes: list[int], ideal_bits: float | None = None,
            coded_as: list[str] | None = None, target: float | None = None) -> list[float]:
        """x, recon (B, C, H, W) digital numbers; sizes: each file's bytes. Returns each
        patch's PSNR."""
        point = self.points.setdefault((codec, setting), Setting(
            MetricAccumulator(self.bands, 1, self.offsets, psnr_threshold=self.threshold),
            target=target))
        psnrs = point.acc.update(x, recon).tolist()
        if target is not None:
            point.reached += sum(q >= target for q in psnrs)
        point.bytes += sum(sizes)
        if ideal_bits is not None:
            point.ideal_bits = (point.ideal_bits or 0.0) + ideal_bits
        self.log.write(codec, setting, names, sizes, psnrs, coded_as)
        return psnrs

    def rows(self, size: int) -> list[dict]:
        out = []
        for (codec, setting), p in self.points.items():
            n = p.acc.num_patches
            bpp = bpp_coded(p.bytes, size, size, n)
            row = {"codec": codec, "setting": setting, "patches": n, "bytes": p.bytes,
                   "bpp_coded": bpp, "bpppb": bpppb(bpp, len(self.bands)),
                   "bpp_entropy": None if p.ideal_bits is None else
                   bpp_entropy(p.ideal_bits, size, size, n)}
            if p.target is not None:
                row["target"], row["patches_reaching_target"] = p.target, p.reached
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


def target_name(label: str) -> str:
    return f"{label}+target"


def target_setting(target: float) -> str:
    return f"psnr{target:.10g}"


@dataclass
class Trial:
    """One way of coding a batch: its files, pixels (B, C, H, W) and per-patch PSNR."""

    setting: str
    files: list
    recon: torch.Tensor
    psnrs: list[float]


@torch.no_grad()
def measure_model(rd: RdPoints, label: str, codec: Codec, x: torch.Tensor, names: list[str],
                  filters: list[str], targets: list[float] = ()) -> None:
    """Every depth and band filter of one model on a batch x (B, C, H, W), through the bytes
    of real files: compressed as `vqae compress` does, decoded as `vqae decompress` does; then
    each target's per-patch pick among them."""
    x_dev = x.to(codec.device)
    analysed = codec.analyse(x_dev)  # full depth once: a prefix of the stages is shallower
    trials = []
    for d in range(1, codec.depth + 1):
        for kind, curve_name in zip(filters, curve_names(label, filters)):
            files = codec.compress_images(x_dev, d, kind, analysed)
            parsed = [codec.parse(f.data, source=n) for f, n in zip(files, names)]
            back = np.stack([p.indices for p in parsed])
            assert np.array_equal(back, analysed[0][:, :d]), "indices changed through the file"
            dn = np.stack([codec.pixels(p) for p in parsed])  # (B, C, H, W)
            recon = torch.from_numpy(to_uint16(dn).astype(np.float32))
            psnrs = rd.add(curve_name, f"depth{d}", x, recon, names,
                              [len(f.data) for f in files], sum(f.ideal_bits for f in files))
            trials.append(Trial(f"depth{d} {kind}", files, recon, psnrs))
    for target in targets:
        add_target(rd, target_name(label), target, x, names, trials)


def add_target(rd: RdPoints, name: str, target: float, x: torch.Tensor, names: list[str],
               trials: list[Trial]) -> None:
    """Each patch coded the cheapest way that reaches `target` (vqae.rd.targets.pick)."""
    chosen = []
    for i in range(len(x)):
        choices = [Choice(len(t.files[i].data), t.psnrs[i], t.setting) for t in trials]
        chosen.append(trials[pick(choices, target)])
    recon = torch.stack([t.recon[i] for i, t in enumerate(chosen)])
    rd.add(name, target_setting(target), x, recon, names,
              [len(t.files[i].data) for i, t in enumerate(chosen)],
              sum(t.files[i].ideal_bits for i, t in enumerate(chosen)),
              [t.setting for t in chosen], target)


def measure_jpeg2000(rd: RdPoints, ds, index: int, x: torch.Tensor, qualities: list[float],
                     targets: list[float] = ()) -> None:
    """Both JPEG 2000 modes at every quality on one patch x (C, H, W), and each target."""
    name = ds.names[index]
    raw = ds.load_raw(name, ds.s2_bands)
    image = x.numpy()
    for mode in jpeg2000.MODES:
        for q in qualities:
            n, recon = jpeg2000.code_patch(mode, image, raw, ds.s2_bands, q, ds.flag)
            rd.add(f"jpeg2000-{mode}", f"q{q:g}", x[None], torch.from_numpy(recon)[None],
                      [name], [n])
    for target in targets:
        choice, recon = jpeg2000_to_target(image, raw, ds.s2_bands, ds.flag, rd.offsets,
                                           target)
        rd.add(JPEG2000_TARGET, target_setting(target), x[None],
                  torch.from_numpy(recon)[None], [name], [choice.bytes],
                  coded_as=[choice.setting], target=target)


@dataclass
class RdOptions:
    qualities: list[float] = field(default_factory=lambda: list(jpeg2000.DEFAULT_QUALITIES))
    batch_size: int = 8  # patches per model batch
    max_patches: int = 0  # 0: all
    progress: bool = True
    front_name: str | None = None  # also join the models into one curve of this name
    filters: list[str] = field(default_factory=lambda: ["gain"])  # band filters, a curve each
    bd_window: tuple[float, float] | None = None  # also a BD-rate within this PSNR window
    targets: list[float] = field(default_factory=list)  # per-patch PSNR targets, a curve
    psnr_threshold: float = PSNR_THRESHOLD  # `patches_below` counts patches under it (dB)


OUTPUTS = ("rd.csv", "rd.json", "rd.png", "rd_patches.csv")


def run_rd(ckpts: list[str], data: str, split: str | None, out: str, device: str = "auto",
           options: RdOptions | None = None, overwrite: bool = False) -> dict:
    opts = options or RdOptions()
    filters, front_name = list(dict.fromkeys(opts.filters)), opts.front_name
    models, taken = [], set()
    for ckpt in ckpts:
        models.append((model_label(ckpt, taken), Codec.from_checkpoint(ckpt, device)))
    curves = {name: ckpt for (label, _), ckpt in zip(models, ckpts)
              for name in curve_names(label, filters)}  # curve name -> its checkpoint
    targets = [target_name(label) for label, _ in models] if opts.targets else []
    if front_name in {*curves, *targets, BEST, JPEG2000_TARGET} or (
            front_name or "").startswith("jpeg2000-"):
        raise DataError(f"--front {front_name} is already a curve's name; choose another")
    bands = check_bands(models, ckpts)
    # before measuring: OUT follows every command's policy (vqae.io.outputs)
    output = Output.open(out, "rd", inputs=[data, *ckpts], overwrite=overwrite,
                         ours=lambda p: p.name in OUTPUTS, fields={"command": "rd"})
    try:
        rows, description, count = measure_all(models, data, split, bands, filters, opts,
                                               output.target / "rd_patches.csv")
        rows += best_jpeg2000(rows)
        labels = list(curves)
        if front_name:
            rows += front_rows(rows, labels, front_name)
            labels.append(front_name)
        labels += targets + ([JPEG2000_TARGET] if targets else [])
        meta = {"data": description, "patches": count, "checkpoints": curves,
                "jpeg2000_qualities": opts.qualities, "targets": opts.targets,
                "psnr_threshold": opts.psnr_threshold}
        result = write_outputs(output.target, rows, labels, meta, bands, opts.bd_window,
                               (front_name,) if front_name else ())
    except BaseException:
        output.abort(0)
        raise
    output.commit({"command": "rd", "patches": count})
    print(f"wrote {', '.join(OUTPUTS)} into {out}")
    return result


def measure_all(models, data: str, split: str | None, bands: list[str], filters: list[str],
                opts: RdOptions, patch_log: Path) -> tuple[list[dict], str, int]:
    """Every model (each band filter, every depth, each target) and JPEG 2000 on the same
    patches: (rows, the data's description, patches)."""
    first = models[0][1]
    size = first.model.image_size
    rd = RdPoints(bands, first.model.normalize.offsets().cpu(), PatchLog(patch_log, size,
                                                                       len(bands)),
                  opts.psnr_threshold)
    try:
        with source_at(first.config.data, data) as source:
            ds = source.dataset(split)
            count = min(len(ds), opts.max_patches) if opts.max_patches else len(ds)
            description = patches_used(source.describe(split), count, len(ds))
            print(f"rate-distortion on {description}")
            for start in tqdm(range(0, count, opts.batch_size), desc="rd",
                              disable=not opts.progress):
                items = [ds[i] for i in range(start, min(start + opts.batch_size, count))]
                x = torch.stack([it["image"] for it in items])  # (B, C, H, W) digital numbers
                names = [it["name"] for it in items]
                for label, codec in models:
                    measure_model(rd, label, codec, x, names, filters, opts.targets)
                for i, patch in enumerate(x):
                    measure_jpeg2000(rd, ds, start + i, patch, opts.qualities, opts.targets)
    finally:
        rd.log.close()
    return rd.rows(size), description, count


def patches_used(description: str, count: int, total: int) -> str:
    """The data's description, saying so where --max-patches takes only some of its patches
    (the header line, rd.json's `data` and rd.png's title)."""
    if count == total:
        return description
    return f"the first {count} (--max-patches) of {description}"


def check_bands(models, ckpts) -> list[str]:
    bands = list(models[0][1].bands)
    for (_, codec), ckpt in zip(models, ckpts):
        if list(codec.bands) != bands:
            raise DataError(f"{ckpt} codes bands {list(codec.bands)}, {ckpts[0]} codes {bands}; "
                            "compare models of the same bands")
    if any(is_s1(b) for b in bands):
        raise DataError(f"{ckpts[0]} codes S1 bands; vqae rd compares S2 bands (uint16) only")
    return bands
