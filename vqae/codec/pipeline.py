"""What `vqae fit-prior`, `vqae compress` and `vqae decompress` do, over whole datasets."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tabulate import tabulate
from tqdm import tqdm

from vqae.codec import bitstream
from vqae.codec.api import Codec, Encoded, band_arrays
from vqae.codec.store import BitstreamSink, RicoLmdbSink, TiffSink, bitstream_source, read_manifest
from vqae.data.lmdb_store import is_lmdb
from vqae.data.loader import Loader
from vqae.data.source import ALL, DataSource, point_at
from vqae.distributed import single_device
from vqae.errors import DataError
from vqae.signals import StopFlag, Stopped

log = logging.getLogger(__name__)


def load(ckpt: str, device: torch.device):
    """(model, config, codec) of a checkpoint."""
    from vqae.checkpoint import load_model

    model, cfg = load_model(ckpt, device)
    return model, cfg, Codec(model, str(ckpt))


def check_depth(depth: int | None, model) -> int:
    full = model.quantizer.depth
    if depth is None:
        return full
    if not 1 <= depth <= full:
        raise DataError(f"--depth {depth} is outside 1..{full}, the model's RVQ stages")
    return depth


def open_data(cfg, data: str | None):
    """A DataSource over `data` (else the checkpoint's own data) with the model's bands."""
    cfg.data = point_at(cfg.data, data)
    return DataSource(cfg.data)


# ---- fit-prior --------------------------------------------------------------------------

def fit_checkpoint(ckpt: str, out: str | None, data: str | None, split: str, device_name: str,
                   batch_size: int, workers: int, progress: bool = True) -> Path:
    """Fit the prior of a checkpoint's model on a split and write the checkpoint (atomically)."""
    from vqae.checkpoint import model_from_state, read_checkpoint, save_checkpoint
    from vqae.codec.fit import fit_prior, report

    device = single_device(device_name)
    state = read_checkpoint(ckpt)  # read once: the file rewritten is the file fitted
    model, cfg = model_from_state(ckpt, state, device)
    if out is not None:
        check_checkpoint_out(Path(out), [ckpt, data])  # before the long part
    with open_data(cfg, data) as source:
        print(f"fitting the prior on {source.describe(split)}")
        ds = source.dataset(split)
        if len(ds) < 2:
            raise DataError(f"split '{split}' of {source.path} has {len(ds)} patch(es); fitting "
                            "a prior needs at least 2: pass --split all or more data")
        fits = fit_prior(model, ds, device, batch_size, workers, progress)
    _, h, w = model.latent_shape()
    print(report(fits, model.quantizer.codebook_size, h * w, model.image_size ** 2))
    state["model"] = {k: v.cpu() for k, v in model.state_dict().items()}
    return save_checkpoint(out or ckpt, state)


def check_checkpoint_out(out: Path, inputs: list) -> None:
    """-o of fit-prior: never an input nor a folder; an existing file only if it is a vqae
    checkpoint (replacing it is what -o asks), never a file of the user's."""
    from vqae.checkpoint import read_checkpoint
    from vqae.outputs import check_apart

    if out.is_dir():
        raise DataError(f"-o {out} is a folder; give the checkpoint file to write, e.g. "
                        f"{out / 'fitted.pt'}")
    check_apart(out, inputs)
    if out.exists() or out.is_symlink():
        try:
            read_checkpoint(out)
        except DataError as err:
            raise DataError(f"-o {out} exists and is not a vqae checkpoint; it is never "
                            "replaced: choose another -o") from err


def fit_after_training(model, train_ds, ckpts, state_fn, step: int, cfg,
                       device: torch.device, stop=None) -> None:
    """Rank 0 at the end of `vqae train`: fit the prior on the train split and rewrite the final
    checkpoint; best.pt too (refitted on its own weights when it is from an earlier step).
    `stop` (a callable) cuts a fit short with Stopped; a checkpoint is rewritten whole or not."""
    from vqae.checkpoint import model_from_state, read_checkpoint, save_checkpoint
    from vqae.codec.fit import fit_prior, report

    if len(train_ds) < 2:
        log.warning("train split has %d patch(es): no prior fitted", len(train_ds))
        return
    args = (train_ds, device, cfg.data.batch_size, cfg.data.num_workers, False, stop)
    fits = fit_prior(model, *args)
    _, h, w = model.latent_shape()
    log.info("prior fitted on %d train patches:\n%s", len(train_ds),
             report(fits, model.quantizer.codebook_size, h * w, model.image_size ** 2))
    state = state_fn()
    save_checkpoint(ckpts.path_for(step), state)
    best = ckpts.best()
    if best is None or not ckpts.best_path.is_file():
        return
    if best["step"] == step:
        save_checkpoint(ckpts.best_path, state)
        return
    best_state = read_checkpoint(ckpts.best_path)
    best_model, _ = model_from_state(ckpts.best_path, best_state, device)
    fit_prior(best_model, *args)
    best_state["model"] = {k: v.cpu() for k, v in best_model.state_dict().items()}
    save_checkpoint(ckpts.best_path, best_state)


# ---- compress ---------------------------------------------------------------------------

@dataclass
class Totals:
    patches: int = 0
    bytes: int = 0
    header_bytes: int = 0
    ideal_bits: float = 0.0
    seconds: float = 0.0

    def add(self, enc: Encoded) -> None:
        self.patches += 1
        self.bytes += len(enc.data)
        self.header_bytes += enc.header_bytes
        self.ideal_bits += enc.ideal_bits

    def rates(self, pixels: int, bpp_index: float) -> dict[str, float]:
        n = max(self.patches, 1) * pixels
        return {"bpp_coded": 8 * self.bytes / n, "bpp_entropy": self.ideal_bits / n,
                "bpp_index": bpp_index}


@dataclass
class CompressOptions:
    depth: int | None = None  # RVQ stages to store (None: all)
    device: str = "auto"
    lmdb: bool = False  # an LMDB of bitstreams (also for an OUT named *.lmdb)
    split: str | None = ALL
    batch_size: int = 16
    workers: int = 0  # DataLoader worker processes
    overwrite: bool = False  # replace an earlier output of vqae compress
    resume: bool = False  # complete an interrupted output of the same settings
    progress: bool = True
    band_filter: str = "gain"  # bandfilter.KINDS


def compress(ckpt: str, data: str, out: str, opts: CompressOptions | None = None) -> dict:
    """Compress every patch of `data` (of `opts.split`) into OUT; returns the summary figures.
    A TERM/USR1/INT stops after the current batch with the patches so far kept (resumable
    with `resume`); the summary then has `"stopped": True`."""
    opts = opts or CompressOptions()
    device = single_device(opts.device)
    model, cfg, codec = load(ckpt, device)
    codec.require_fitted()
    depth = check_depth(opts.depth, model)
    out_path, totals = Path(out), Totals()
    fields = manifest(ckpt, codec, depth, 0) | {
        "band_filter": opts.band_filter, "data": str(Path(data).resolve()), "split": opts.split}
    with open_data(cfg, data) as source:
        print(f"compressing {source.describe(opts.split)}")
        ds = source.dataset(opts.split)
        sink = BitstreamSink(out_path, opts.lmdb or out_path.suffix == ".lmdb",
                             overwrite=opts.overwrite, resume=opts.resume,
                             inputs=[data, source.path, ckpt], fields=fields,
                             resumable=lambda found: same_settings(found, fields, out_path))
        before = 0
        if opts.resume:
            ds, before = remaining(ds, sink, out_path)
        with guarded(sink, fields, lambda: before + totals.patches, len(ds), "compress") as stop:
            totals.seconds = encode_all(ds, codec, sink, totals, depth, opts, stop, device)
            if not stop.requested:
                sink.close(fields | {"patches": before + totals.patches})
    return summarize(totals, model, depth, codec.side_bits(opts.band_filter))


def encode_all(ds, codec: Codec, sink, totals: Totals, depth: int, opts: CompressOptions,
               stop: StopFlag, device: torch.device) -> float:
    """Encode and write every patch of `ds`, a batch at a time, until done or stopped; the
    seconds it took."""
    loader = Loader(ds, batch_size=opts.batch_size, shuffle=False, num_workers=opts.workers)
    start = time.perf_counter()
    try:
        for batch in tqdm(loader, desc="compress", unit="batch", disable=not opts.progress):
            x = batch["image"].to(device)
            indices, centres = codec.encode_images(x, depth)
            fitted = codec.fit_filter(opts.band_filter, x, indices, centres, device)  # (B, n)
            for name, grid, side, codes in zip(batch["name"], indices, centres, fitted):
                enc = codec.encode_indices(grid, side, opts.band_filter, codes)  # (depth, h, w)
                sink.write(name, enc.data)
                totals.add(enc)
            if stop.requested:
                break
    finally:
        loader.shutdown()  # the workers ignore TERM: stopped here, not left to exit hooks
    return time.perf_counter() - start


@contextmanager
def guarded(sink, fields: dict, done: Callable[[], int], total: int, command: str):
    """Run a command's loop and its commit under a StopFlag (yielded); after an error or a
    stop the sink keeps what is consistent (sink.stop), and a stop raises Stopped (exit status
    75). A stop that arrives once the sink is committed is moot: the work is done."""
    with StopFlag("stopping after this batch") as stop:
        try:
            yield stop
        except BaseException:
            if not sink.committed:
                sink.stop(fields | {"patches": done()})
            raise
        if stop.requested and not sink.committed:
            sink.stop(fields | {"patches": done()})
            raise Stopped(stopped_message(stop, done(), total, sink, command))


def stopped_message(stop: StopFlag, done: int, total: int, sink, command: str) -> str:
    where = sink.output
    if where.replacing:
        kept = f"{where.out} was left as it was; run the command again"
    else:
        kept = (f"the {done} patch(es) written are kept in {where.out}, marked incomplete"
                + ("; continue with --resume" if command == "compress" else
                   "; run again with --overwrite"))
    return f"stopped on {stop.signal_name} after {done} of {total} patches; {kept}"


# what a resumed OUT must share with the run that completes it
SETTINGS = ("fingerprint", "depth", "band_filter", "version", "data", "split")


def same_settings(previous: dict, fields: dict, out: Path) -> None:
    """Refuse to resume an OUT compressed with another model or settings."""
    for k in SETTINGS:
        if k in previous and previous[k] != fields[k]:
            raise DataError(f"OUT {out} was compressed with {k} {previous[k]!r}, this run has "
                            f"{fields[k]!r}; --resume continues the same settings: pass the "
                            "same options, or --overwrite to replace it")


def remaining(ds, sink: BitstreamSink, out: Path):
    """(the patches of `ds` that a resumed OUT lacks, how many it holds)."""
    from torch.utils.data import Subset

    present = sink.present()
    keep = [i for i, name in enumerate(ds.names) if name not in present]
    subset = Subset(ds, keep)
    subset.names = [ds.names[i] for i in keep]
    print(f"resuming: {len(ds) - len(keep)} patch(es) already in {out}, {len(keep)} to go")
    return subset, len(ds) - len(keep)


def manifest(ckpt: str, codec: Codec, depth: int, patches: int) -> dict:
    return {"format": "vqz", "version": bitstream.VERSION,
            "checkpoint": str(Path(ckpt).absolute()), "fingerprint": codec.fingerprint.hex(),
            "depth": depth, "bands": list(codec.bands), "patches": patches}


def summarize(totals: Totals, model, depth: int, side_bits: int) -> dict:
    _, h, w = model.latent_shape()
    from vqae.metrics import bpp_index

    pixels = model.image_size ** 2
    fixed = bpp_index(h * w, depth, model.quantizer.codebook_size, *(model.image_size,) * 2)
    figures = {"patches": totals.patches, "bytes": totals.bytes,
               **totals.rates(pixels, fixed),
               **({"bpp_side": side_bits / pixels} if side_bits else {}),
               "header_bytes/patch": totals.header_bytes / max(totals.patches, 1),
               "patches/s": totals.patches / max(totals.seconds, 1e-9)}
    rows = [(k, f"{v:,}" if isinstance(v, int) else f"{v:.4f}") for k, v in figures.items()]
    print(tabulate(rows, tablefmt="simple", disable_numparse=True))
    return figures


# ---- decompress -------------------------------------------------------------------------

def model_for(path: Path, ckpt: str | None) -> tuple[str, dict | None]:
    """(the checkpoint to decode `path` with, its manifest or None). The manifest is a hint:
    a relative checkpoint path in it resolves against its own folder."""
    found = read_manifest(path)
    if ckpt:
        return ckpt, found
    named = (found or {}).get("checkpoint")
    if not isinstance(named, str) or not named:
        raise DataError(f"{path} has no manifest.json naming its checkpoint; pass --ckpt CKPT "
                        "(the checkpoint that compressed it)")
    folder = path if path.is_dir() else path.parent
    return str(folder / named), found  # an absolute `named` stays as it is


def check_manifest(path: Path, found: dict | None, codec: Codec, count: int) -> None:
    """Refuse a manifest whose fingerprint is not the checkpoint's; warn about an output that
    an interrupted `vqae compress` left, or one whose completeness nothing records."""
    fp = (found or {}).get("fingerprint")
    if isinstance(fp, str) and fp != codec.fingerprint.hex():
        raise DataError(f"{path}'s manifest.json gives model fingerprint {fp[:16]!r}, but "
                        f"{codec.source} has {codec.fingerprint.hex()}; pass --ckpt with the "
                        "checkpoint that compressed these files")
    if found is None:
        if is_lmdb(path) or path.is_dir():
            log.warning("%s has no manifest.json: nothing says whether it holds every patch "
                        "(an interrupted `vqae compress` leaves a part); decoding the %d found",
                        path, count)
    elif found.get("complete") is False:
        log.warning("%s is INCOMPLETE: an interrupted `vqae compress` wrote %d patch(es) and "
                    "did not finish; complete it with `vqae compress ... --resume`, then "
                    "decompress again", path, count)


def decompress(data: str, out: str, ckpt: str | None = None, depth: int | None = None,
               native: bool = False, device_name: str = "auto", overwrite: bool = False,
               progress: bool = True) -> dict:
    """Decode every bitstream of `data` into GeoTIFFs (or, from an LMDB, a rico-hdl LMDB).
    A TERM/USR1/INT stops after the current patch (the output stays consistent)."""
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a .vqz file, a folder of them or an "
                        "LMDB written by `vqae compress`")
    device = single_device(device_name)
    named, found = model_for(path, ckpt)
    model, _, codec = load(named, device)
    names, records = bitstream_source(path, codec.check_header)
    check_manifest(path, found, codec, len(names))
    depth = None if depth is None else check_depth(depth, model)
    to_lmdb = is_lmdb(path)
    fields = {"source": str(path.absolute()), "fingerprint": codec.fingerprint.hex(),
              "depth": depth, "native": native or to_lmdb}
    sink = (RicoLmdbSink if to_lmdb else TiffSink)(Path(out), overwrite, [data, named], fields)
    native = native or to_lmdb  # rico-hdl stores every band at its native size
    counts = {"patches": 0, "cut": 0, "shallow": 0}
    start = time.perf_counter()
    with guarded(sink, fields, lambda: counts["patches"], len(names), "decompress") as stop:
        decode_all(path, records, len(names), codec, sink, depth, native, device, counts,
                   stop, progress)
        if not stop.requested:
            sink.close(fields | {"patches": counts["patches"]})
    warn_short(counts["cut"], counts["shallow"], depth)
    seconds = time.perf_counter() - start
    print(f"decompressed {len(names)} patches into {out} ({len(names) / seconds:.1f} patches/s)")
    return {**counts, "seconds": seconds}


def decode_all(path: Path, records, total: int, codec: Codec, sink, depth: int | None,
               native: bool, device: torch.device, counts: dict, stop: StopFlag,
               progress: bool) -> None:
    to_lmdb = is_lmdb(path)
    for name, blob in tqdm(records, total=total, desc="decompress", unit="patch",
                           disable=not progress):
        where = f"{path}[{name}]" if to_lmdb else str(
            path / f"{name}.vqz" if path.is_dir() else path)
        grid, header = codec.decode_file(blob, where, depth)  # (n, h, w)
        counts["cut"] += len(grid) < min(depth or header.depth, header.depth)
        counts["shallow"] += depth is not None and header.depth < depth
        dn = codec.decode_patch(grid, header, device)  # (C, H, W)
        sink.write(name, band_arrays(dn, codec.bands, native))
        counts["patches"] += 1
        if stop.requested:
            return


def warn_short(cut: int, shallow: int, depth: int | None) -> None:
    if cut:
        log.warning("%d file(s) were cut between chunks and were decoded at the complete stages "
                    "they hold", cut)
    if shallow:
        log.warning("%d file(s) were compressed with fewer than --depth %d stages and were "
                    "decoded at all their stages", shallow, depth)
