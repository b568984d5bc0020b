"""`vqae rd`: rate-distortion of models and JPEG 2000 on the same patches.

Each model is measured at every RVQ depth and band filter through real `.vqz` bytes, made and
read by `Codec` exactly as `vqae compress` and `vqae decompress` do; JPEG 2000 per native band
and as one multi-component stack over a sweep of qualities. Metrics are DESIGN.md's
(`vqae.metrics`), the mean, pooled and worst-patch aggregates side by side. `front=NAME` also
joins the models into one curve (one model per rate, as learned codecs are compared);
`targets` adds a rate-controlled curve per model and for JPEG 2000 (vqae.rd.targets);
`max_errors` near-lossless and lossless points beside the classical anchors
(vqae.rd.near_lossless). Every patch of every point is a row of rd_patches.csv, written as it
is measured.
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
from vqae.codec.folder_compress import native_max_error
from vqae.codec.ratecontrol import Choice, pick
from vqae.data.bands import is_s1, to_uint16
from vqae.data.resample import stack_bands
from vqae.data.source import source_at
from vqae.errors import DataError
from vqae.io.outputs import Output
from vqae.metrics import PSNR_THRESHOLD, MetricAccumulator, bpp_coded, bpp_entropy, bpppb
from vqae.rd import jpeg2000, near_lossless
from vqae.rd.lossless_anchors import anchor_rows
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
    max_error: int | None = None  # an enhanced point (--max-error): its bound, DN
    max_abs_error: int | None = None  # the largest measured over every native pixel


class PatchLog:
    """rd_patches.csv: a row per patch and point, written as measured (nothing kept); `near`
    (--max-error) adds each row's max_error and measured max_abs_error (empty where unknown)."""

    COLUMNS = ("codec", "setting", "patch", "bytes", "bpppb", "psnr", "coded_as")
    NEAR_COLUMNS = ("max_error", "max_abs_error")

    def __init__(self, path: Path, size: int, bands: int, near: bool = False):
        self.file = open(path, "w", newline="")  # noqa: SIM115 (closed by measure_all)
        self.writer = csv.writer(self.file)
        self.writer.writerow(self.COLUMNS + (self.NEAR_COLUMNS if near else ()))
        self.size, self.bands, self.near = size, bands, near

    def write(self, codec: str, setting: str, names: list[str], sizes: list[int],
              psnrs: list[float | None], coded_as: list[str] | None = None,
              errors: list[int | None] | None = None, max_error: int | None = None) -> None:
        for i, (name, n, quality) in enumerate(zip(names, sizes, psnrs)):
            rate = bpppb(bpp_coded(n, self.size, self.size), self.bands)
            row = [codec, setting, name, n, f"{rate:.6g}",
                   "" if quality is None else f"{quality:.4f}",
                   "" if coded_as is None else coded_as[i]]
            if self.near:
                row += [blank(max_error), blank(None if errors is None else errors[i])]
            self.writer.writerow(row)

    def close(self) -> None:
        self.file.close()


def blank(value) -> str:
    return "" if value is None else str(value)


@dataclass
class RdPoints:
    """Every (curve, setting) point measured so far, with its per-patch log."""

    bands: list[str]
    offsets: torch.Tensor
    log: PatchLog
    threshold: float = PSNR_THRESHOLD
    points: dict[tuple[str, str], Setting] = field(default_factory=dict)
    anchors: list[dict] = field(default_factory=list)  # lossless_anchors.anchor_rows, a patch each

    def add(self, codec: str, setting: str, x: torch.Tensor, recon: torch.Tensor,
            names: list[str], sizes: list[int], ideal_bits: float | None = None,
            coded_as: list[str] | None = None, target: float | None = None,
            errors: list[int | None] | None = None, max_error: int | None = None) -> list[float]:
        """x, recon (B, C, H, W) digital numbers; sizes: each file's bytes; errors: each
        patch's measured max abs error (--max-error). Returns each patch's PSNR."""
        point = self.points.setdefault((codec, setting), Setting(
            MetricAccumulator(self.bands, 1, self.offsets, psnr_threshold=self.threshold),
            target=target, max_error=max_error))
        psnrs = point.acc.update(x, recon).tolist()
        if target is not None:
            point.reached += sum(q >= target for q in psnrs)
        point.bytes += sum(sizes)
        if ideal_bits is not None:
            point.ideal_bits = (point.ideal_bits or 0.0) + ideal_bits
        known = [e for e in errors or () if e is not None]
        if known:
            point.max_abs_error = max(point.max_abs_error or 0, *known)
        self.log.write(codec, setting, names, sizes, psnrs, coded_as, errors, max_error)
        return psnrs

    def add_anchors(self, name: str, native: dict[str, np.ndarray], errors: list[int]) -> None:
        """The classical anchors on one patch's native bands, at each max error they offer."""
        for row in anchor_rows(name, native, errors):
            self.anchors.append(row)
            self.log.write(row["codec"], near_lossless.setting(row["max_error"]), [name],
                           [row["bits"] // 8], [None], errors=[row["measured_max_error"]],
                           max_error=row["max_error"])

    def rows(self, size: int, enhanced: bool = False) -> list[dict]:
        """rd.csv's rows; `enhanced`: the points with an enhancement layer instead."""
        out = []
        for (codec, setting), p in self.points.items():
            if (p.max_error is not None) != enhanced:
                continue
            n = p.acc.num_patches
            bpp = bpp_coded(p.bytes, size, size, n)
            row = {"codec": codec, "setting": setting, "patches": n, "bytes": p.bytes,
                   "bpp_coded": bpp, "bpppb": bpppb(bpp, len(self.bands)),
                   "bpp_entropy": None if p.ideal_bits is None else
                   bpp_entropy(p.ideal_bits, size, size, n)}
            if p.target is not None:
                row["target"], row["patches_reaching_target"] = p.target, p.reached
            if p.max_error is not None:  # near_lossless.csv's names
                row["max_error"], row["measured_max_error"] = p.max_error, p.max_abs_error
            elif p.max_abs_error is not None:
                row["max_abs_error"] = p.max_abs_error
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
    errors: list[int] | None = None  # each patch's max abs error over its native pixels


@torch.no_grad()
def measure_model(rd: RdPoints, label: str, codec: Codec, x: torch.Tensor, names: list[str],
                  filters: list[str], targets: list[float] = (), natives: list | None = None,
                  max_errors: list[int] = ()) -> None:
    """Every depth and band filter of one model on a batch x (B, C, H, W), through the bytes
    of real files: compressed as `vqae compress` does, decoded as `vqae decompress` does; then
    each target's per-patch pick among them, and each max error's enhanced files. `natives`
    (each patch's {band: native array}, with --max-error) also measure each file's max abs
    error."""
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
            errors = None if natives is None else [
                native_max_error(codec, r, n) for r, n in zip(recon.numpy(), natives)]
            psnrs = rd.add(curve_name, f"depth{d}", x, recon, names,
                           [len(f.data) for f in files], sum(f.ideal_bits for f in files),
                           errors=errors)
            trials.append(Trial(f"depth{d} {kind}", files, recon, psnrs, errors))
    ladder = natives is not None and codec.residual is not None
    stages = [codec.code_stages(g) for g in analysed[0]] if max_errors or ladder else None
    for target in targets:
        enhanced = [enhanced_trial(codec, x, target, analysed, i, stages[i], natives[i])
                    for i in range(len(x))] if ladder else None
        add_target(rd, target_name(label), target, x, names, trials, enhanced)
    for e in max_errors:  # the stages' chunks are the same at every max error: coded once
        add_enhanced(rd, label, codec, x, names, analysed, stages, natives, e)


def add_enhanced(rd: RdPoints, label: str, codec: Codec, x: torch.Tensor, names: list[str],
                 analysed, stages: list, natives: list, max_error: int) -> None:
    """Full depth, band filter gain, with an enhancement layer to `max_error` against each
    patch's native bands; each file decoded as `vqae decompress` does, its PSNR and max abs
    error measured on what it decodes to (an encoder the decoder disagrees with is an error,
    never a row)."""
    files = codec.compress_ways(x.to(codec.device), codec.depth, ("gain",), analysed, True,
                                stages, natives, max_error)["gain"]
    pixels, errors = [], []
    for f, native, name in zip(files, natives, names):
        back = codec.decompress(f.data, source=name)  # {band: native uint16}, through the layer
        errors.append(near_lossless.max_abs_error(native, back))
        if not errors[-1] == f.max_abs_error <= max_error:
            raise AssertionError(f"{name} at max error {max_error}: decoded with a max error "
                                 f"of {errors[-1]}, the encoder measured {f.max_abs_error}")
        pixels.append(codec.image(back))
    rd.add(near_lossless.model_name(label), near_lossless.setting(max_error), x,
           torch.stack(pixels), names, [len(f.data) for f in files],
           sum(f.ideal_bits for f in files), errors=errors, max_error=max_error)


def enhanced_trial(codec: Codec, x: torch.Tensor, target: float, analysed, i: int, stages,
                   native) -> Trial:
    """Patch i's best full-depth file with an enhancement layer for `target`
    (vqae.codec.ratecontrol.best_enhanced), as a one-patch Trial."""
    from vqae.codec.ratecontrol import Target, best_enhanced

    offsets = codec.model.normalize.offsets().cpu()
    file, choice = best_enhanced(codec, x[i].float(), Target(psnr=target), analysed, i,
                                 codec.depth, "gain", stages, native, offsets)
    return Trial(choice.setting, [file], torch.from_numpy(file.pixels[None]), [choice.psnr],
                 [file.max_abs_error])


def add_target(rd: RdPoints, name: str, target: float, x: torch.Tensor, names: list[str],
               trials: list[Trial], enhanced: list[Trial] | None = None) -> None:
    """Each patch coded the cheapest way that reaches `target` (vqae.rd.targets.pick), also
    among its `enhanced` trial (one per patch) when the model has a residual model."""
    chosen = []
    for i in range(len(x)):
        choices = [Choice(len(t.files[i].data), t.psnrs[i], t.setting) for t in trials]
        picked = trials[pick(choices, target)]
        if enhanced is not None:
            e = enhanced[i]
            both = [Choice(len(picked.files[i].data), picked.psnrs[i], picked.setting),
                    Choice(len(e.files[0].data), e.psnrs[0], e.setting)]
            if pick(both, target) == 1:  # a one-patch trial: index 0 stands for patch i
                picked = Trial(e.setting, {i: e.files[0]}, {i: e.recon[0]}, {i: e.psnrs[0]},
                               {i: e.errors[0]})
        chosen.append(picked)
    recon = torch.stack([t.recon[i] for i, t in enumerate(chosen)])
    errors = None if trials[0].errors is None and enhanced is None else [
        None if t.errors is None else t.errors[i] for i, t in enumerate(chosen)]
    rd.add(name, target_setting(target), x, recon, names,
           [len(t.files[i].data) for i, t in enumerate(chosen)],
           sum(t.files[i].ideal_bits for i, t in enumerate(chosen)),
           [t.setting for t in chosen], target, errors)


def measure_jpeg2000(rd: RdPoints, ds, index: int, x: torch.Tensor, qualities: list[float],
                     targets: list[float] = (), near: bool = False) -> None:
    """Both JPEG 2000 modes at every quality on one patch x (C, H, W), and each target;
    `near` (--max-error) also measures the max abs error where the mode decodes native bands
    (bands; the stack decodes the upsampled grid, and the target search keeps no bands)."""
    name = ds.names[index]
    raw = ds.load_raw(name, ds.s2_bands)
    image = x.numpy()
    for mode in jpeg2000.MODES:
        for q in qualities:
            n, recon, error = code_jpeg2000(mode, image, raw, ds, q, near)
            rd.add(f"jpeg2000-{mode}", f"q{q:g}", x[None], torch.from_numpy(recon)[None],
                   [name], [n], errors=[error])
    for target in targets:
        choice, recon = jpeg2000_to_target(image, raw, ds.s2_bands, ds.flag, rd.offsets,
                                           target)
        rd.add(JPEG2000_TARGET, target_setting(target), x[None],
               torch.from_numpy(recon)[None], [name], [choice.bytes],
               coded_as=[choice.setting], target=target)


def code_jpeg2000(mode: str, image: np.ndarray, raw: dict, ds, quality: float,
                  near: bool) -> tuple[int, np.ndarray, int | None]:
    """One JPEG 2000 point: (bytes, reconstruction (C, H, W), max abs error or None)."""
    if not (near and mode == "bands"):
        return *jpeg2000.code_patch(mode, image, raw, ds.s2_bands, quality, ds.flag), None
    n, decoded = jpeg2000.code_native(raw, ds.s2_bands, quality)
    return (n, stack_bands(decoded, ds.s2_bands, ds.flag),
            near_lossless.max_abs_error(raw, decoded))


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
    max_errors: list[int] = field(default_factory=list)  # enhanced points, beside the anchors


OUTPUTS = ("rd.csv", "rd.json", "rd.png", "rd_patches.csv")
NEAR_OUTPUTS = (near_lossless.OUTPUT,)  # with --max-error


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
    errors = sorted(set(opts.max_errors))
    for _, codec in models:
        for e in errors:
            codec.check_max_error(e)  # one line naming the checkpoint and `vqae fit-residual`
    written = OUTPUTS + (NEAR_OUTPUTS if errors else ())
    # before measuring: OUT follows every command's policy (vqae.io.outputs)
    output = Output.open(out, "rd", inputs=[data, *ckpts], overwrite=overwrite,
                         ours=lambda p: p.name in OUTPUTS + NEAR_OUTPUTS,
                         fields={"command": "rd"})
    try:
        rows, near, description, count = measure_all(models, data, split, bands, filters,
                                                     opts, output.target / "rd_patches.csv")
        rows += best_jpeg2000(rows)
        labels = list(curves)
        if front_name:
            rows += front_rows(rows, labels, front_name)
            labels.append(front_name)
        labels += targets + ([JPEG2000_TARGET] if targets else [])
        meta = {"data": description, "patches": count, "checkpoints": curves,
                "jpeg2000_qualities": opts.qualities, "targets": opts.targets,
                "psnr_threshold": opts.psnr_threshold}
        if errors:
            meta["max_errors"] = errors
        result = write_outputs(output.target, rows, labels, meta, bands, opts.bd_window,
                               (front_name,) if front_name else (), near)
    except BaseException:
        output.abort(0)
        raise
    output.commit({"command": "rd", "patches": count})
    print(f"wrote {', '.join(written)} into {out}")
    return result


def measure_all(models, data: str, split: str | None, bands: list[str], filters: list[str],
                opts: RdOptions, patch_log: Path) -> tuple[list[dict], list[dict] | None, str,
                                                           int]:
    """Every model (each band filter, every depth, each target, each max error) and JPEG 2000
    (and, with max errors, the classical anchors) on the same patches: (rows, near_lossless.csv's
    rows or None, the data's description, patches)."""
    first = models[0][1]
    size = first.model.image_size
    errors = sorted(set(opts.max_errors))
    rd = RdPoints(bands, first.model.normalize.offsets().cpu(),
                  PatchLog(patch_log, size, len(bands), bool(errors)), opts.psnr_threshold)
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
                ladder = opts.targets and any(c.residual is not None for _, c in models)
                natives = native_bands(ds, names, bands) if errors or ladder else None
                for label, codec in models:
                    measure_model(rd, label, codec, x, names, filters, opts.targets, natives,
                                  errors)
                for i, patch in enumerate(x):
                    measure_jpeg2000(rd, ds, start + i, patch, opts.qualities, opts.targets,
                                     bool(errors))
                    if errors:
                        rd.add_anchors(names[i], natives[i], errors)
    finally:
        rd.log.close()
    near = None
    if errors:
        curves = {near_lossless.model_name(label): gain_curve(label, filters)
                  for label, _ in models}
        near = near_lossless.table(rd.rows(size, enhanced=True), rd.anchors, len(bands), curves)
    return rd.rows(size), near, description, count


def native_bands(ds, names: list[str], bands: list[str]) -> list[dict[str, np.ndarray]]:
    """Each patch's {band: native uint16}, as stored: what max errors are measured on."""
    base = getattr(ds, "dataset", ds)  # a Subset reads from its dataset
    return [base.load_raw(name, list(bands)) for name in names]


def gain_curve(label: str, filters: list[str]) -> str:
    """The lossy curve an enhanced point continues: the model's band filter gain (its files'
    filter), else its first curve."""
    names = curve_names(label, filters)
    return names[filters.index("gain")] if "gain" in filters else names[0]


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
