"""`vqae verify-encoded OUT --against ROOT [ROOT ...]`: check an LMDB against its GeoTIFFs.

Reports missing and extra keys, band sets, dtypes, shapes and values; exit status 1 on any
difference. Each ROOT is a BigEarthNet S2 or S1 tree or a HySpecNet-11k folder (detected).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabulate import tabulate

from vqae.commands.common import int_in
from vqae.commands.encode import default_workers
from vqae.data.shards import part_of
from vqae.data.verify import detect_jobs, verify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="LMDB folder written by `vqae encode`")
    parser.add_argument("--against", nargs="+", required=True, metavar="ROOT",
                        help="the source roots that were encoded (S2, S1 and/or HySpecNet)")
    parser.add_argument("--workers", type=int_in(1, 1024), default=default_workers(),
                        help="reader processes (default: the usable cores)")
    parser.add_argument("--show", type=int_in(0), default=50,
                        help="print at most this many differences")


def run(args: argparse.Namespace) -> int:
    shard = part_of(Path(args.out))  # one part of a sharded encode holds its patches only
    if shard is not None:
        print(f"{args.out} is part {shard.describe()} of a sharded encode: checking its patches")

    def listed() -> list:  # run by verify after its reader workers fork
        jobs = [job for root in args.against for job in detect_jobs(root)]
        return jobs if shard is None else [job for job in jobs if shard.holds(job.key)]

    report = verify(args.out, listed, workers=args.workers)
    for line in report.differences[: args.show]:
        print(line)
    hidden = len(report.differences) - args.show
    if hidden > 0:
        print(f"... and {hidden} more differences")
    rows = [("source patches", report.sources), ("patches compared", report.checked),
            ("differences", len(report.differences))]
    print(tabulate(rows, tablefmt="simple"))
    print("OK: identical" if not report.differences else f"FAILED: {args.out} differs")
    return 1 if report.differences else 0
