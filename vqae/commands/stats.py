"""`vqae stats`: per-band statistics of a dataset, for normalization (`--data.stats=FILE`)."""

from __future__ import annotations

from tabulate import tabulate

from vqae.commands.common import ACCEPTS_OVERRIDES, add_config_arguments, config_from_args
from vqae.data.bands import band_offsets
from vqae.data.source import DataSource
from vqae.io.atomic import write_json

__all__ = ["ACCEPTS_OVERRIDES", "add_arguments", "run"]


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--split", help="only this split (train, validation, test); "
                        "default: every patch")
    parser.add_argument("--out", help="write the statistics JSON here")


def run(args) -> int:
    from vqae.data.stats import compute_stats

    cfg = config_from_args(args)
    with DataSource(cfg.data) as source:
        ds = source.dataset(args.split)
        stats = compute_stats(ds, band_offsets(ds.bands, cfg.data.subtract_offset))
    rows = [[b, *s.values()] for b, s in stats["bands"].items()]
    headers = ["band", *next(iter(stats["bands"].values())).keys()]
    print(f"{stats['patches']} patches")
    print(tabulate(rows, headers=headers, floatfmt=".1f"))
    if args.out:
        write_json(args.out, stats)  # never a half-written stats file
        print(f"wrote {args.out}")
    return 0
