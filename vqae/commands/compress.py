"""`vqae compress CKPT INPUT -o OUT [--depth n]`: patches -> entropy-coded `.vqz` bitstreams.

INPUT is a patch folder, a GeoTIFF tree, an archive or an LMDB (every patch by default). OUT is
a folder of `<patch>.vqz`, or with `--lmdb` (or a name ending in .lmdb) an LMDB of bitstreams
keyed by patch name; either holds a manifest.json that `vqae decompress` reads. `--depth n`
(or `--levels n`) keeps the first n RVQ stages; a full-depth file cut after chunk n
decodes like a depth-n file. TERM/USR1/INT stop after the current batch (exit status 75) with
the patches written kept; `--resume` completes OUT. Each file carries a band filter fitted by the encoder for its
patch (`--band-filter`; vqae/codec/bandfilter.py): per-band gains by default (8 bits per band),
a full band mix (8 bits per band pair, worth it from about 0.02 bits per pixel per band) or none.
"""

from __future__ import annotations

from vqae.codec.bandfilter import KINDS
from vqae.commands.common import add_out_mode, int_in
from vqae.commands.fit_prior import DEVICES


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint with a fitted prior (`vqae fit-prior`)")
    parser.add_argument("input", help="GeoTIFF folder, .tar/.tar.gz archive or LMDB")
    parser.add_argument("-o", "--out", required=True, help="output folder (or LMDB)")
    parser.add_argument("--depth", "--levels", type=int_in(1, 255), dest="depth",
                        help="RVQ stages to store (default: all)")
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
                             "and stored in the header: gain (default, each band's contrast), "
                             "mix (each band from all bands; for rates above ~0.02 bpppb) or "
                             "none (also saves the encoder's decoder pass)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from vqae.codec.pipeline import CompressOptions, compress

    compress(args.checkpoint, args.input, args.out, CompressOptions(
        args.depth, args.device, args.lmdb, args.split, args.batch_size, args.workers,
        args.overwrite, args.resume, not args.no_progress, args.band_filter))
    return 0
