"""`vqae encode`: GeoTIFF trees -> LMDB of safetensors, compatible with rico-hdl.

Same flags as rico-hdl (rs-tensor-encoder); S1 and S2 roots together encode BigEarthNet-MM.
Exit status 1 when --skip-bad skipped patches (listed in OUT.skipped.tsv), 2 on an error.
"""

from __future__ import annotations

import argparse
import logging
import os
from functools import partial
from pathlib import Path

from tabulate import tabulate

from vqae.commands.common import add_out_mode, int_in, shard_arg
from vqae.data.encode import EncodeOptions, EncodeReport, collect_jobs, encode, skipped_path
from vqae.errors import DataError

log = logging.getLogger(__name__)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="LMDB folder to write")
    parser.add_argument("--bigearthnet-s2-root", metavar="DIR", help="BigEarthNet-S2 GeoTIFFs")
    parser.add_argument("--bigearthnet-s1-root", metavar="DIR", help="BigEarthNet-S1 GeoTIFFs")
    parser.add_argument("--hyspecnet", "--hyspecnet-root", "--hyspecnet-11k", dest="hyspecnet",
                        metavar="DIR", help="HySpecNet-11k patches (*-SPECTRAL_IMAGE.TIF)")
    parser.add_argument("--workers", type=int_in(1, 1024), default=default_workers(),
                        help="reader processes (default: the usable cores)")
    parser.add_argument("--batch-size", type=int_in(1, 65536), default=64,
                        help="patches per write transaction (default: 64)")
    add_out_mode(parser, "encode", "of the same roots")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable patches, list them in OUT.skipped.tsv, exit 1")
    parser.add_argument("--shard", type=shard_arg, metavar="I/N",
                        help="encode only part I of N (by name hash), e.g. in a Slurm array "
                        "--array=1-N: --shard $SLURM_ARRAY_TASK_ID/N OUT/part-$SLURM_ARRAY_TASK_ID;"
                        " the folder of the N LMDBs is then read as one dataset")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def summary(report: EncodeReport) -> str:
    rate = report.written / report.seconds if report.seconds else 0.0
    rows = [
        ("patches written", report.written),
        ("patches already present", report.present),
        ("patches skipped (bad)", len(report.skipped)),
        ("bands", report.bands),
        ("bytes", f"{report.bytes:,} ({report.bytes / 2**20:.1f} MiB)"),
        ("seconds", f"{report.seconds:.2f}"),
        ("patches/s", f"{rate:.1f}"),
    ]
    return tabulate(rows, tablefmt="simple", disable_numparse=True)


def run(args: argparse.Namespace) -> int:
    if not (args.bigearthnet_s2_root or args.bigearthnet_s1_root or args.hyspecnet):
        raise DataError("give at least one root: --bigearthnet-s2-root, --bigearthnet-s1-root "
                        "or --hyspecnet")
    if args.workers < 1 or args.batch_size < 1:
        raise DataError("--workers and --batch-size must be at least 1")
    roots = [args.bigearthnet_s2_root, args.bigearthnet_s1_root, args.hyspecnet]
    opts = EncodeOptions(workers=args.workers, batch_size=args.batch_size,
                         skip_bad=args.skip_bad, progress=not args.no_progress)
    # listed inside encode, after its reader workers fork: they do not inherit the list
    report = encode(partial(collect_jobs, *roots), args.out, opts, resume=args.resume,
                    overwrite=args.overwrite, inputs=roots, shard=args.shard)
    print(summary(report))
    if report.skipped:
        log.warning("skipped %d bad patch(es), listed in %s", len(report.skipped),
                    skipped_path(Path(args.out).resolve()))
        return 1
    return 0
