"""`vqae sample-data`: fetch (once) the real 24-patch BigEarthNet v2 sample and print its path."""

from __future__ import annotations

from vqae.data.sample import LMDB_NAME, ensure_sample


def add_arguments(parser) -> None:
    parser.add_argument("--lmdb", action="store_true", help="print the LMDB path instead")


def run(args) -> int:
    folder = ensure_sample()
    print(folder / LMDB_NAME if args.lmdb else folder)
    return 0
