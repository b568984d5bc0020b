"""`vqae preview`: the patches of each split and the value range of each band."""

from __future__ import annotations

import numpy as np
from tabulate import tabulate

from vqae.commands.common import ACCEPTS_OVERRIDES, add_config_arguments, config_from_args, int_in
from vqae.data.source import DataSource

__all__ = ["ACCEPTS_OVERRIDES", "add_arguments", "run"]


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--limit", type=int_in(0), default=8, help="patches to show")


def run(args) -> int:
    cfg = config_from_args(args)
    with DataSource(cfg.data) as source:
        for split in ("train", "validation", "test"):
            print(source.describe(split))
        show(source.dataset(), args.limit)
    return 0


def show(ds, limit: int) -> None:
    rows = []
    for i in range(min(limit, len(ds))):
        x = ds.read_dn(i)  # (C, 120, 120)
        lo, hi = x.min(axis=(1, 2)), x.max(axis=(1, 2))
        rows.append([ds.names[i], f"{lo.min():.0f}..{hi.max():.0f}", int(np.isnan(x).sum())])
    print(tabulate(rows, headers=["patch", "DN range (all bands)", "NaN"]))
