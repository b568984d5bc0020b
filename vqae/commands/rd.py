"""`vqae rd --ckpt A [--ckpt B ...] --data PATH [--split all] --out DIR`: rate-distortion of
models (every RVQ depth, through real .vqz files) against JPEG 2000 on the same patches.

Writes DIR/rd.csv, rd.json, rd.png (mean and pooled PSNR vs bpppb, log x) and rd_patches.csv (a
row per patch and point: find the worst tiles), and prints each model's BD-rate on the mean and
on the pooled curve against the better of JPEG 2000 per native band and as one multi-component
stack (over the PSNR range both reach, printed), the JPEG 2000 rate at each model point's
PSNR and its PSNR at the point's rate (what compares a model of one depth, where no BD-rate fits). `--target-psnr` adds rate-controlled curves, compared at equal per-patch target.
`--max-error E ...` adds near-lossless and lossless points (each model's files with an
enhancement layer, beside JPEG-LS, LERC, JPEG XL and JPEG 2000 lossless on the native bands):
DIR/near_lossless.csv, rd.json's `near_lossless`, points on rd.png and rd_patches.csv's
max_error and max_abs_error columns.
"""

from __future__ import annotations

from vqae.commands.common import add_threshold, decibels, int_in, threshold
from vqae.config import DEVICES
from vqae.errors import ConfigError


def add_arguments(parser) -> None:
    from vqae.codec.bandfilter import KINDS

    parser.add_argument("--ckpt", action="append", required=True, metavar="CKPT",
                        help="a checkpoint with a fitted prior; repeat for several models")
    parser.add_argument("--data", required=True, help="GeoTIFF folder, archive or LMDB")
    parser.add_argument("--split", default="all",
                        help="all (default: every patch), train, validation or test")
    parser.add_argument("--out", required=True, help="folder for rd.csv, rd.json, rd.png")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--jpeg2000-quality", type=float, nargs="+", metavar="DB",
                        help="OpenJPEG target PSNRs (dB of the 16-bit range) to sweep")
    parser.add_argument("--batch-size", type=int_in(1, 65536), default=8,
                        help="patches per model batch")
    parser.add_argument("--max-patches", type=int_in(0), default=0,
                        help="use only the first N patches (0: all)")
    parser.add_argument("--front", metavar="NAME",
                        help="also report the models together as one codec NAME: the front "
                             "of all their points (models trained for different rates), "
                             "with its own BD-rate")
    parser.add_argument("--band-filter", nargs="+", choices=KINDS, default=["gain"],
                        metavar="KIND",
                        help="band filter(s) of the models' files (gain, mix, none; default "
                             "gain, as vqae compress); several give each model one curve per "
                             "filter, named MODEL+KIND")
    parser.add_argument("--bd-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="also report each BD-rate within this PSNR window (dB), e.g. 30 40")
    parser.add_argument("--target-psnr", type=decibels, nargs="+", metavar="DB", default=[],
                        help="also a rate-controlled curve per model (MODEL+target) and for "
                             "JPEG 2000 (jpeg2000-target): each patch coded the cheapest way "
                             "that reaches DB, for each DB given (e.g. 30 35 40)")
    parser.add_argument("--max-error", type=int_in(0, 65535), nargs="+", metavar="E",
                        default=[],
                        help="also near-lossless points: each model at full depth (band filter "
                             "gain) with an enhancement layer bringing every native pixel within "
                             "E DN (0: lossless), beside JPEG-LS, LERC, JPEG XL and JPEG 2000 "
                             "lossless on the same native bands, for each E given (e.g. 0 1 2 4 "
                             "8 16 32); writes near_lossless.csv; each checkpoint needs a "
                             "residual model (vqae fit-residual)")
    add_threshold(parser)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the rd outputs (rd.csv, rd.json, rd.png, rd_patches.csv, "
                             "near_lossless.csv) of an earlier run in --out")
    parser.add_argument("--scene", action="store_true",
                        help="DATA is one scene (a folder of band rasters or a multi-band "
                        "GeoTIFF): the report over its tiles, the model through scene files "
                        "at every depth, JPEG 2000 on each whole native band (vqae.rd.scene_rd)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_scene(args) -> int:
    from pathlib import Path

    from tabulate import tabulate

    from vqae.codec.codec import Codec
    from vqae.rd import jpeg2000
    from vqae.rd.scene_rd import scene_report

    if len(args.ckpt) != 1:
        raise ConfigError("--scene takes one --ckpt")
    codec = Codec.from_checkpoint(args.ckpt[0], args.device)
    report = scene_report(codec, args.data, Path(args.out),
                          list(args.jpeg2000_quality or jpeg2000.DEFAULT_QUALITIES),
                          overwrite=args.overwrite)
    print(tabulate(report["points"], headers="keys", floatfmt=".4g"))
    print("BD-rate against JPEG 2000:", report["bd_rate"])
    return 0


def run(args) -> int:
    from vqae.rd import jpeg2000
    from vqae.rd.measure import RdOptions, run_rd

    if args.scene:
        return run_scene(args)

    if args.bd_range and not args.bd_range[0] < args.bd_range[1]:
        raise ConfigError(f"--bd-range {args.bd_range[0]:g} {args.bd_range[1]:g}: LOW must be "
                          "below HIGH")
    options = RdOptions(
        qualities=list(args.jpeg2000_quality or jpeg2000.DEFAULT_QUALITIES),
        batch_size=args.batch_size, max_patches=args.max_patches,
        progress=not args.no_progress, front_name=args.front, filters=args.band_filter,
        bd_window=tuple(args.bd_range) if args.bd_range else None,
        targets=sorted(set(args.target_psnr)), max_errors=sorted(set(args.max_error)),
        **threshold(args))
    run_rd(args.ckpt, args.data, args.split, args.out, args.device, options, args.overwrite)
    return 0
