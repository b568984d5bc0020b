"""`vqae stage ARCHIVE DEST`: extract a GeoTIFF archive once, safely, even from many processes."""

from __future__ import annotations

from vqae.data.stage import stage_archive


def add_arguments(parser) -> None:
    parser.add_argument("archive", help=".tar / .tar.gz / .tgz of a BigEarthNet GeoTIFF tree")
    parser.add_argument("dest", help="folder to extract into (node-local disk): new, empty, or "
                        "an earlier staging of the same archive; anything else is refused")


def run(args) -> int:
    print(stage_archive(args.archive, args.dest))
    return 0
