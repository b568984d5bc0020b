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
A scene (a folder of single-band rasters of one scene, e.g. a Sentinel-2 IMG_DATA folder, or
one multi-band GeoTIFF) compresses into one file when OUT ends in .vqz: any size, its CRS,
geotransform and nodata kept (vqae.scene; --nodata, --ignore-nodata, --max-pixels).
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
    scene = parser.add_argument_group("scenes (OUT ending in .vqz)")
    scene.add_argument("--nodata", type=int_in(0, 65535), metavar="V",
                       help="the scene's nodata value (default: the one its rasters declare)")
    scene.add_argument("--ignore-nodata", action="store_true",
                       help="code every pixel, nodata ones too (no mask)")
    scene.add_argument("--max-pixels", type=int_in(1, 1 << 40), default=1 << 30, metavar="N",
                       help="refuse a scene of more 10 m pixels than N before reading it "
                       "(default 2^30, nine Sentinel-2 tiles)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")



PATCH_ONLY = ("lmdb", "target_psnr", "target_bpppb", "max_error", "shard", "resume",
              "band_filter")


def run_scene(args) -> int:
    import json

    from vqae.codec.codec import Codec
    from vqae.errors import DataError
    from vqae.scene import compress_scene

    given = [f"--{k.replace('_', '-')}" for k in PATCH_ONLY if getattr(args, k, None)]
    if args.split != "all":
        given.append("--split")
    if given:
        raise DataError(f"{' '.join(given)} apply to patches, not to a scene (OUT ending in "
                        ".vqz); drop them")
    codec = Codec.from_checkpoint(args.checkpoint, args.device)
    summary = compress_scene(codec, args.input, args.out, args.depth, args.nodata,
                             args.ignore_nodata, args.max_pixels, args.overwrite,
                             not args.no_progress)
    if summary["crs"] is None:
        print(f"note: {args.input} has no CRS; {args.out} and its decoded rasters have none")
    print(json.dumps(summary))
    return 0


def run(args) -> int:
    from vqae.codec.folder_compress import CompressOptions, compress

    if str(args.out).endswith(".vqz"):
        return run_scene(args)

    compress(args.checkpoint, args.input, args.out, CompressOptions(
        depth=args.depth, device=args.device, lmdb=args.lmdb, split=args.split,
        batch_size=args.batch_size, workers=args.workers, overwrite=args.overwrite,
        resume=args.resume, progress=not args.no_progress, band_filter=args.band_filter,
        target_psnr=args.target_psnr, target_bpppb=args.target_bpppb, shard=args.shard,
        max_error=args.max_error,
        **threshold(args)))
    return 0
