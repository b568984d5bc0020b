"""Options shared by the commands that read data."""

from __future__ import annotations

import argparse

from vqae.config import Config, load_config

ACCEPTS_OVERRIDES = True


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="YAML file(s) with config changes, applied in order")
    parser.add_argument("--data", help="data path (GeoTIFF folder, archive or LMDB); "
                        "default: the real BigEarthNet sample")


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults <- --config files <- --section.key=value overrides <- --data."""
    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.path={args.data}")
    return load_config(args.config, overrides)
