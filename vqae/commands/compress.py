"""`vqae compress CKPT INPUT -o OUT [--depth n]`: patches -> entropy-coded `.vqz` files.

INPUT is a patch folder, a GeoTIFF tree, an archive or an LMDB (every patch by default). OUT is
a folder of `<patch>.vqz`, or with `--lmdb` (or a name ending in .lmdb) an LMDB of files keyed
by patch name; either holds a manifest.json that `vqae decompress` reads. `--depth n` keeps the
first n RVQ stages. Each file carries a band filter the encoder fitted (`--band-filter`).
`--target-psnr DB` (or `--target-bpppb R`) codes each patch at the smallest depth and filter
that reaches the target (vqae.codec.ratecontrol), through the enhancement layer up to
lossless when the checkpoint has a residual model. `--max-error E` adds that layer to every
file: each native pixel within E DN (0: lossless). OUT's patches.csv lists each patch's depth,
filter, bytes, PSNR and max absolute error; the summary gives the mean, pooled and worst-patch
PSNR and the largest error.
TERM/USR1/INT stop after the current batch (exit status 75) with the patches written kept;
`--resume` completes OUT.
"""

from __future__ import annotations

from vqae.commands.common import (
    add_out_mode,
    add_threshold,
    decibels,
    int_in,
    positive_float,
    shard_arg,
    threshold,
)
from vqae.config import DEVICES


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
    parser.add_argument("--band-filter", choices=KINDS,
                        help="per-patch correction of the decoded bands, fitted by the encoder "
                             "and stored in the header: gain (default, each band's contrast, 8 "
                             "bits a band), mix (each band from all bands, 8 bits a band pair) "
                             "or none; with a target, the only filter tried (default: all)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-psnr", type=decibels, metavar="DB",
                        help="per patch, the smallest file (RVQ depth up to --depth, band "
                             "filter) whose PSNR reaches DB; else the best the model does")
    target.add_argument("--target-bpppb", type=positive_float, metavar="R",
                        help="per patch, the best PSNR within R bits per pixel per band")
    target.add_argument("--max-error", type=int_in(0, 65535), metavar="E",
                        help="add an enhancement layer: every native pixel within E digital "
                             "numbers of the original (0: lossless); needs `vqae fit-residual`")
    add_threshold(parser)
    parser.add_argument("--shard", type=shard_arg, metavar="I/N",
                        help="compress only part I of N of the patches (by name hash), e.g. in "
                        "a Slurm array --array=1-N: --shard $SLURM_ARRAY_TASK_ID/N with an OUT "
                        "per task")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from vqae.codec.folder_compress import CompressOptions, compress

    compress(args.checkpoint, args.input, args.out, CompressOptions(
        depth=args.depth, device=args.device, lmdb=args.lmdb, split=args.split,
        batch_size=args.batch_size, workers=args.workers, overwrite=args.overwrite,
        resume=args.resume, progress=not args.no_progress, band_filter=args.band_filter,
        target_psnr=args.target_psnr, target_bpppb=args.target_bpppb, shard=args.shard,
        max_error=args.max_error,
        **threshold(args)))
    return 0
