"""A folder of patches -> a folder (or LMDB) of `.vqz` files: the pipeline of `vqae compress`.

`compress(ckpt, data, out, CompressOptions(...))` reads INPUT's patches a batch at a time,
codes each (at a fixed depth and band filter, or to a per-patch target through
vqae.codec.ratecontrol), writes the files and OUT's patches.csv, and returns the figures it
prints. OUT follows vqae.io.outputs (manifest, --overwrite, --resume); TERM/USR1/INT stop after
the current batch (exit status 75) with the patches written kept.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

# what a resumed OUT must share with the run that completes it
# max_error before version: a different bound is what a user changed, not the format
SETTINGS = ("fingerprint", "depth", "band_filter", "target", "max_error", "residual", "version",
            "data", "split", "shard")
# settings an older vqae did not write: absent means none
NEWER = ("target", "shard", "max_error", "residual")


@dataclass
class CompressOptions:
    depth: int | None = None  # RVQ stages to store (None: all)
    device: str = "auto"
    lmdb: bool = False  # an LMDB of bitstreams (also for an OUT named *.lmdb)
    split: str | None = "all"
    batch_size: int = 16
    workers: int = 0  # DataLoader worker processes
    overwrite: bool = False  # replace an earlier output of vqae compress
    resume: bool = False  # complete an interrupted output of the same settings
    progress: bool = True
    band_filter: str | None = None  # bandfilter.KINDS; None: gain, or every kind for a target
    target_psnr: float | None = None  # per patch, the smallest file reaching this PSNR (dB)
    target_bpppb: float | None = None  # per patch, the best PSNR within this rate
    psnr_threshold: float | None = None  # patches_below counts patches under it (None: 30 dB)
    shard: object = None  # a vqae.data.shards.Shard: only its part of the patches
    max_error: int | None = None  # an enhancement layer to this bound (DN; 0: lossless)

    def target(self):
        from vqae.codec.ratecontrol import Target

        if self.target_psnr is None and self.target_bpppb is None:
            return None
        return Target(self.target_psnr, self.target_bpppb)

    def filters(self) -> tuple[str, ...]:
        """The band filters tried: the one asked for, else gain, or every kind for a target."""
        from vqae.codec.bandfilter import KINDS

        if self.band_filter is not None:
            return (self.band_filter,)
        return KINDS if self.target() else ("gain",)


@dataclass
class Totals:
    patches: int = 0
    bytes: int = 0
    header_bytes: int = 0
    ideal_bits: float = 0.0
    seconds: float = 0.0
    stages: int = 0  # RVQ stages stored, over all files
    reached: int = 0  # files that reached the target
    quality: object = None  # a MetricAccumulator of this run's patches
    max_abs_error: int | None = None  # the largest over every native pixel of the run
    enhanced: int = 0  # files with an enhancement layer

    def add(self, file, reached: bool = True, worst: int | None = None) -> None:
        """Count one `Compressed` file (`worst`: its measured max abs error)."""
        if worst is not None:
            self.max_abs_error = max(worst, self.max_abs_error or 0)
        self.enhanced += file.max_error is not None
        self.patches += 1
        self.bytes += len(file.data)
        self.header_bytes += file.header_bytes
        self.ideal_bits += file.ideal_bits
        self.stages += file.depth
        self.reached += reached


def compress(ckpt: str, data: str, out: str, opts: CompressOptions | None = None) -> dict:
    """Compress every patch of `data` (of `opts.split`) into OUT; returns the summary figures.
    A TERM/USR1/INT stops after the current batch with the patches so far kept (resumable
    with `resume`)."""
    from vqae.codec.codec import Codec
    from vqae.codec.store import REPORT, BitstreamSink, PatchReport, guarded
    from vqae.data.bands import is_s1
    from vqae.data.shards import pick
    from vqae.data.source import source_at
    from vqae.errors import DataError

    opts = opts or CompressOptions()
    codec = Codec.from_checkpoint(ckpt, opts.device)
    depth = codec.check_depth(opts.depth, "--depth")
    target, filters = opts.target(), opts.filters()
    if opts.max_error is not None:
        codec.check_max_error(opts.max_error)
    if target is not None and any(is_s1(b) for b in codec.bands):
        raise DataError(f"{ckpt} codes S1 bands, which DESIGN.md's PSNR (S2 digital numbers, "
                        "0..10000) does not measure; --target-psnr and --target-bpppb need an "
                        "S2-only model")
    out_path, totals = Path(out), Totals(quality=quality_accumulator(codec, opts))
    fields = manifest(ckpt, codec, depth, 0) | {
        "band_filter": filters[0] if len(filters) == 1 else list(filters),
        "target": None if target is None else asdict(target),
        "data": str(Path(data).resolve()), "split": opts.split, "report": REPORT,
        "shard": None if opts.shard is None else [opts.shard.index, opts.shard.count],
        "max_error": opts.max_error,
        "residual": None if codec.residual is None or (opts.max_error is None and target is None)
        else codec.residual.fingerprint().hex()}
    if opts.max_error is not None:
        fields["version"] = 6  # every file carries a layer
    with source_at(codec.config.data, data, "INPUT") as source:
        ds = source.dataset(opts.split)
        if opts.shard is not None:
            ds.names = pick(ds.names, opts.shard)
        lmdb = opts.lmdb or out_path.suffix == ".lmdb"
        if opts.resume and (rows := finished(out_path, lmdb, ds.names, fields)) is not None:
            return report_finished(rows, codec, filters, target, out_path, opts)
        print(f"compressing {source.describe(opts.split)}"
              + ("" if opts.shard is None else
                 f", part {opts.shard.describe()}: {len(ds)} patches")
              + ("" if target is None else f", each patch to {target.describe()}"))
        sink = BitstreamSink(out_path, lmdb,
                             overwrite=opts.overwrite, resume=opts.resume,
                             inputs=[data, source.path, ckpt], fields=fields,
                             resumable=lambda found: same_settings(found, fields, out_path),
                             extra=(REPORT,))
        before, reported = 0, set()
        if opts.resume:  # a patch is done when its file and its report row are both there
            reported = PatchReport.keep(sink.target / REPORT, sink.present())
            ds, before = remaining(ds, reported, out_path)
        with guarded(sink, fields, lambda: before + totals.patches, len(ds), "compress") as stop, \
                PatchReport(sink.target / REPORT) as report:
            run = CompressRun(codec, sink, opts, depth, totals, report, stop)
            totals.seconds = run.encode_all(ds)
            report.close()
            if not stop.requested:
                sink.close(fields | {"patches": before + totals.patches})
    return summarize(totals, codec, depth, filters, target)


def quality_accumulator(codec, opts: CompressOptions):
    from vqae.metrics import MetricAccumulator

    kwargs = {} if opts.psnr_threshold is None else {"psnr_threshold": opts.psnr_threshold}
    return MetricAccumulator(codec.bands, 1, codec.model.normalize.offsets().cpu(), **kwargs)


@dataclass
class CompressRun:
    """What every step of one compress run shares (instead of eight arguments each)."""

    codec: object  # vqae.codec.codec.Codec
    sink: object  # vqae.codec.store.BitstreamSink
    opts: CompressOptions
    depth: int
    totals: Totals
    report: object  # vqae.codec.store.PatchReport
    stop: object  # vqae.io.stops.StopFlag

    def encode_all(self, ds) -> float:
        """Compress and write every patch of `ds`, a batch at a time, until done or stopped;
        the seconds it took."""
        from tqdm import tqdm

        from vqae.data.loader import Loader

        opts = self.opts
        loader = Loader(ds, batch_size=opts.batch_size, shuffle=False, num_workers=opts.workers)
        source = getattr(ds, "dataset", ds)  # a resumed run's Subset reads from its dataset
        start = time.perf_counter()
        try:
            for batch in tqdm(loader, desc="compress", unit="batch", disable=not opts.progress):
                x = batch["image"].to(self.codec.device)  # (B, C, H, W) digital numbers
                natives = self.natives(source, batch["name"])
                self.write_batch(batch["name"], x, self.code_batch(x, natives), natives, source)
                if self.stop.requested:
                    break
        finally:
            loader.shutdown()  # the workers ignore TERM: stopped here, not left to exit hooks
        return time.perf_counter() - start

    def natives(self, source, names) -> list | None:
        """Each patch's {band: native array} (what max errors are measured on), for S2 models."""
        from vqae.data.bands import is_s1

        if any(is_s1(b) for b in self.codec.bands):
            return None
        return [source.load_raw(name, list(self.codec.bands)) for name in names]

    def code_batch(self, x, natives=None) -> list[tuple[object, bool]]:
        """Each patch's (Compressed with pixels, whether it reached the target)."""
        codec, target, filters = self.codec, self.opts.target(), self.opts.filters()
        if target is None:
            return [(f, True) for f in codec.compress_ways(
                x, self.depth, filters[:1], pixels=True, natives=natives,
                max_error=self.opts.max_error)[filters[0]]]
        from vqae.codec.ratecontrol import compress_to_target

        size, bands = codec.model.image_size, len(codec.bands)
        offsets = codec.model.normalize.offsets().cpu()
        ladder = natives if codec.residual is not None else None
        return [(f, target.reached(choice, bands, size))
                for f, choice in compress_to_target(codec, x, target, self.depth, filters,
                                                    offsets, ladder)]

    def write_batch(self, names, x, coded, natives=None, source=None) -> None:
        """Write a batch's files (with each patch's georeferencing where its source has one),
        then their rows; count them."""
        import numpy as np
        import torch

        from vqae.metrics import bpp_coded, bpppb

        size, bands = self.codec.model.image_size, len(self.codec.bands)
        recon = torch.from_numpy(np.stack([f.pixels for f, _ in coded]))  # (B, C, H, W)
        psnrs = self.totals.quality.update(x.float().cpu(), recon).tolist()
        for i, (name, (file, reached), quality) in enumerate(zip(names, coded, psnrs)):
            worst = file.max_abs_error
            if worst is None and natives is not None:
                worst = native_max_error(self.codec, file.pixels, natives[i])
            file = georeferenced(file, source, name, self.codec.bands)
            self.sink.write(name, file.data)
            self.totals.add(file, reached, worst)
            self.report.write(name, file.depth, file.band_filter, len(file.data),
                              bpppb(bpp_coded(len(file.data), size, size), bands), quality,
                              file.max_error, worst)
        self.report.flush()


def georeferenced(file, source, name: str, bands) -> object:
    """`file` (a Compressed) with its patch's georeferencing in its header, where the source
    (a GeoTIFF tree) has one; an LMDB's patches have none."""
    from dataclasses import replace

    from vqae.codec import bitstream
    from vqae.codec.georef import Georef

    fields = source.georef(name, list(bands)) if hasattr(source, "georef") else None
    if fields is None:
        return file
    data = bitstream.attach_georef(file.data, Georef.from_fields(fields, name).pack(), name)
    return replace(file, data=data, header_bytes=file.header_bytes + len(data) - len(file.data))


def native_max_error(codec, pixels, native) -> int:
    """The largest |decoded - original| over every native pixel of a lossy file (its pixels
    as `vqae decompress --native` gives them)."""
    import numpy as np

    decoded = codec.band_arrays(pixels, native=True)
    return max(int(np.abs(decoded[b].astype(np.int64) - np.asarray(native[b], np.int64)).max())
               for b in codec.bands)


def same_settings(previous: dict, fields: dict, out: Path) -> None:
    """Refuse to resume an OUT compressed with another model or settings."""
    from vqae.errors import DataError

    for k in SETTINGS:  # a key an older vqae did not write counts as None
        if previous.get(k) != fields[k] and (k in previous or k in NEWER):
            raise DataError(f"OUT {out} was compressed with {k} {previous.get(k)!r}, this run has "
                            f"{fields[k]!r}; --resume continues the same settings: pass the "
                            "same options, or --overwrite to replace it")


def remaining(ds, done: set[str], out: Path):
    """(the patches of `ds` that a resumed OUT lacks, how many it holds)."""
    from torch.utils.data import Subset

    keep = [i for i, name in enumerate(ds.names) if name not in done]
    subset = Subset(ds, keep)
    subset.names = [ds.names[i] for i in keep]
    print(f"resuming: {len(ds) - len(keep)} patch(es) already in {out}, {len(keep)} to go")
    return subset, len(ds) - len(keep)


def manifest(ckpt: str, codec, depth: int, patches: int) -> dict:
    return {"format": "vqz", "version": codec.format_version,
            "checkpoint": str(Path(ckpt).absolute()), "fingerprint": codec.fingerprint.hex(),
            "depth": depth, "bands": list(codec.bands), "patches": patches}


def finished(out: Path, lmdb: bool, names: list[str], fields: dict) -> list | None:
    """patches.csv's rows when OUT is a complete output of these settings holding every patch
    of `names`, so that --resume has nothing to do; else None (work to do)."""
    from vqae.codec.store import REPORT, PatchReport, complete_manifest, stored_names

    found = complete_manifest(out, "vqz-lmdb" if lmdb else "vqz")
    if found is None:
        return None
    same_settings(found, fields, out)
    rows = list(PatchReport.rows(out / REPORT, stored_names(out, lmdb)))
    return rows if set(names) <= {row[0] for row in rows} else None


def report_finished(rows: list, codec, filters: tuple[str, ...], target, out: Path,
                    opts: CompressOptions) -> dict:
    """Print and return OUT's figures as measured when its files were written (from its
    patches.csv: rates, PSNR aggregates); OUT is left untouched."""
    import torch

    from vqae.codec.store import REPORT
    from vqae.metrics import PSNR_BINS, PSNR_MAX, PSNR_THRESHOLD, percentile_from_bins, psnr_bins

    print(f"OUT {out} is already complete: all {len(rows)} patches compressed with these "
          f"settings, nothing to do; its report, from {out / REPORT}:")
    psnr = torch.tensor([float(r[5]) for r in rows], dtype=torch.float64)  # (N,) per patch
    limit = PSNR_THRESHOLD if opts.psnr_threshold is None else opts.psnr_threshold
    p10 = percentile_from_bins(torch.bincount(psnr_bins(psnr), minlength=PSNR_BINS), 0.10)
    figures = rate_figures(codec, len(rows), sum(int(r[3]) for r in rows),
                           sum(int(r[1]) for r in rows), filters) | {
        "psnr": psnr.mean().item(),
        "psnr_pooled": -10 * torch.log10(torch.pow(10.0, -psnr / 10).mean()).item(),
        "psnr_p10": min(max(p10, psnr.min().item()), PSNR_MAX), "psnr_min": psnr.min().item(),
        "patches_below": int((psnr < limit).sum()), "psnr_threshold": limit}
    worst = [int(r[7]) for r in rows if r[7] != ""]
    if worst:
        figures["max_abs_error"] = max(worst)
    if target is not None:
        reached = (psnr >= target.psnr if target.psnr is not None else
                   torch.tensor([float(r[4]) for r in rows]) <= target.bpppb)
        figures |= {"target": target.describe(), "patches_reaching_target": int(reached.sum())}
    return print_figures(figures)


def rate_figures(codec, patches: int, nbytes: int, stages: int, filters: tuple[str, ...]) -> dict:
    """DESIGN.md's rates of `patches` files of `nbytes` bytes holding `stages` RVQ stages."""
    from vqae.metrics import bpp_coded, bpp_index, bpppb

    model, (_, h, w) = codec.model, codec.model.latent_shape()
    size, n = model.image_size, max(patches, 1)
    coded = bpp_coded(nbytes, size, size, n)
    side = codec.side_bits(filters[0]) if len(filters) == 1 else 0
    return {"patches": patches, "bytes": nbytes, "bpp_coded": coded,
            "bpppb": bpppb(coded, len(codec.bands)),
            "bpp_index": bpp_index(h * w, 1, model.quantizer.codebook_size, size, size)
            * stages / n,
            **({"bpp_side": side / size**2} if side else {}), "depth/patch": stages / n}


def summarize(totals: Totals, codec, depth: int, filters: tuple[str, ...], target) -> dict:
    """Print and return the figures of this run's patches (DESIGN.md's rates and aggregates,
    from vqae.metrics); after --resume, of the patches it added (patches.csv lists all)."""
    from vqae.metrics import bpp_entropy

    size, n = codec.model.image_size, max(totals.patches, 1)
    figures = rate_figures(codec, totals.patches, totals.bytes, totals.stages, filters) | {
        "bpp_entropy": bpp_entropy(totals.ideal_bits, size, size, n),
        "header_bytes/patch": totals.header_bytes / n}
    if totals.patches:
        quality = totals.quality.compute()
        figures |= {k: quality[k] for k in ("psnr", "psnr_pooled", "psnr_p10", "psnr_min",
                                            "patches_below", "ssim", "sam")}
        figures["psnr_threshold"] = totals.quality.psnr_threshold
    if totals.max_abs_error is not None:
        figures["max_abs_error"] = totals.max_abs_error  # DN, over every native pixel
    if totals.enhanced:
        figures["patches_enhanced"] = totals.enhanced
    if target is not None:
        figures["target"] = target.describe()
        figures["patches_reaching_target"] = totals.reached
    figures["patches/s"] = totals.patches / max(totals.seconds, 1e-9)
    return print_figures(figures)


def print_figures(figures: dict) -> dict:
    from tabulate import tabulate

    rows = [(k, f"{v:,}" if isinstance(v, int) else v if isinstance(v, str) else f"{v:.4f}")
            for k, v in figures.items()]
    print(tabulate(rows, tablefmt="simple", disable_numparse=True))
    return figures
