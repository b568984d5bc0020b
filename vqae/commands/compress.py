"""`vqae compress CKPT INPUT -o OUT [--depth n]`: patches -> entropy-coded `.vqz` files.

INPUT is a patch folder, a GeoTIFF tree, an archive or an LMDB (every patch by default). OUT is
a folder of `<patch>.vqz`, or with `--lmdb` (or a name ending in .lmdb) an LMDB of files keyed
by patch name; either holds a manifest.json that `vqae decompress` reads. `--depth n` keeps the
first n RVQ stages. Each file carries a band filter the encoder fitted (`--band-filter`).
TERM/USR1/INT stop after the current batch (exit status 75) with the patches written kept;
`--resume` completes OUT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from vqae.commands.common import add_out_mode, int_in
from vqae.config import DEVICES

# what a resumed OUT must share with the run that completes it
SETTINGS = ("fingerprint", "depth", "band_filter", "version", "data", "split")


def add_arguments(parser) -> None:
    from vqae.codec.bandfilter import KINDS

    parser.add_argument("checkpoint", help="a checkpoint with a fitted prior (`vqae fit-prior`)")
    parser.add_argument("input", help="GeoTIFF folder, .tar/.tar.gz archive or LMDB")
    parser.add_argument("-o", "--out", required=True, help="output folder (or LMDB)")
    parser.add_argument("--depth", type=int_in(1, 255), help="RVQ stages to store (default: all)")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="where the encoder runs; entropy coding is always on the CPU")
    parser.add_argument("--lmdb", action="store_true", help="write an LMDB of bitstreams")
    parser.add_argument("--split", default="all",
                        help="all (default: every patch), train, validation or test")
    parser.add_argument("--batch-size", type=int_in(1, 65536), default=16,
                        help="patches per batch")
    parser.add_argument("--workers", type=int_in(0, 1024), default=0,
                        help="DataLoader worker processes")
    add_out_mode(parser, "compress", "with the same checkpoint, depth and band filter")
    parser.add_argument("--band-filter", choices=KINDS, default="gain",
                        help="per-patch correction of the decoded bands, fitted by the encoder "
                             "and stored in the header: gain (default, each band's contrast, 8 "
                             "bits a band), mix (each band from all bands, 8 bits a band pair) "
                             "or none (also saves the encoder's decoder pass)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    compress(args.checkpoint, args.input, args.out, CompressOptions(
        depth=args.depth, device=args.device, lmdb=args.lmdb, split=args.split,
        batch_size=args.batch_size, workers=args.workers, overwrite=args.overwrite,
        resume=args.resume, progress=not args.no_progress, band_filter=args.band_filter))
    return 0


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
    band_filter: str = "gain"  # bandfilter.KINDS


@dataclass
class Totals:
    patches: int = 0
    bytes: int = 0
    header_bytes: int = 0
    ideal_bits: float = 0.0
    seconds: float = 0.0

    def add(self, file) -> None:
        """Count one `Compressed` file."""
        self.patches += 1
        self.bytes += len(file.data)
        self.header_bytes += file.header_bytes
        self.ideal_bits += file.ideal_bits


def compress(ckpt: str, data: str, out: str, opts: CompressOptions | None = None) -> dict:
    """Compress every patch of `data` (of `opts.split`) into OUT; returns the summary figures.
    A TERM/USR1/INT stops after the current batch with the patches so far kept (resumable
    with `resume`)."""
    from vqae.codec.codec import Codec
    from vqae.codec.store import BitstreamSink, guarded
    from vqae.data.source import source_at

    opts = opts or CompressOptions()
    codec = Codec.from_checkpoint(ckpt, opts.device)
    depth = codec.check_depth(opts.depth, "--depth")
    out_path, totals = Path(out), Totals()
    fields = manifest(ckpt, codec, depth, 0) | {
        "band_filter": opts.band_filter, "data": str(Path(data).resolve()), "split": opts.split}
    with source_at(codec.config.data, data) as source:
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
            totals.seconds = encode_all(ds, codec, sink, totals, depth, opts, stop)
            if not stop.requested:
                sink.close(fields | {"patches": before + totals.patches})
    return summarize(totals, codec, depth, opts.band_filter)


def encode_all(ds, codec, sink, totals: Totals, depth: int, opts: CompressOptions,
               stop) -> float:
    """Compress and write every patch of `ds`, a batch at a time, until done or stopped; the
    seconds it took."""
    from tqdm import tqdm

    from vqae.data.loader import Loader

    loader = Loader(ds, batch_size=opts.batch_size, shuffle=False, num_workers=opts.workers)
    start = time.perf_counter()
    try:
        for batch in tqdm(loader, desc="compress", unit="batch", disable=not opts.progress):
            x = batch["image"].to(codec.device)  # (B, C, H, W) digital numbers
            for name, file in zip(batch["name"],
                                  codec.compress_images(x, depth, opts.band_filter)):
                sink.write(name, file.data)
                totals.add(file)
            if stop.requested:
                break
    finally:
        loader.shutdown()  # the workers ignore TERM: stopped here, not left to exit hooks
    return time.perf_counter() - start


def same_settings(previous: dict, fields: dict, out: Path) -> None:
    """Refuse to resume an OUT compressed with another model or settings."""
    from vqae.errors import DataError

    for k in SETTINGS:
        if k in previous and previous[k] != fields[k]:
            raise DataError(f"OUT {out} was compressed with {k} {previous[k]!r}, this run has "
                            f"{fields[k]!r}; --resume continues the same settings: pass the "
                            "same options, or --overwrite to replace it")


def remaining(ds, sink, out: Path):
    """(the patches of `ds` that a resumed OUT lacks, how many it holds)."""
    from torch.utils.data import Subset

    present = sink.present()
    keep = [i for i, name in enumerate(ds.names) if name not in present]
    subset = Subset(ds, keep)
    subset.names = [ds.names[i] for i in keep]
    print(f"resuming: {len(ds) - len(keep)} patch(es) already in {out}, {len(keep)} to go")
    return subset, len(ds) - len(keep)


def manifest(ckpt: str, codec, depth: int, patches: int) -> dict:
    from vqae.codec import bitstream

    return {"format": "vqz", "version": bitstream.VERSION,
            "checkpoint": str(Path(ckpt).absolute()), "fingerprint": codec.fingerprint.hex(),
            "depth": depth, "bands": list(codec.bands), "patches": patches}


def summarize(totals: Totals, codec, depth: int, band_filter: str) -> dict:
    """Print and return the figures of a run (DESIGN.md's rates, from vqae.metrics)."""
    from tabulate import tabulate

    from vqae.metrics import bpp_coded, bpp_entropy, bpp_index

    model, (_, h, w) = codec.model, codec.model.latent_shape()
    size, n = model.image_size, max(totals.patches, 1)
    side = codec.side_bits(band_filter)
    figures = {"patches": totals.patches, "bytes": totals.bytes,
               "bpp_coded": bpp_coded(totals.bytes, size, size, n),
               "bpp_entropy": bpp_entropy(totals.ideal_bits, size, size, n),
               "bpp_index": bpp_index(h * w, depth, model.quantizer.codebook_size, size, size),
               **({"bpp_side": side / size**2} if side else {}),
               "header_bytes/patch": totals.header_bytes / n,
               "patches/s": totals.patches / max(totals.seconds, 1e-9)}
    rows = [(k, f"{v:,}" if isinstance(v, int) else f"{v:.4f}") for k, v in figures.items()]
    print(tabulate(rows, tablefmt="simple", disable_numparse=True))
    return figures
