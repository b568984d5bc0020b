"""Options shared by the commands that read data."""

from __future__ import annotations

import argparse

from vqae.config import Config, absolute_paths, load_config
from vqae.errors import ConfigError

ACCEPTS_OVERRIDES = True


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="YAML",
                        help="YAML file(s) with config changes, applied in order")
    parser.add_argument("--data", help="data path (GeoTIFF folder, archive or LMDB); "
                        "default: the real BigEarthNet sample")


def config_from_args(args: argparse.Namespace) -> Config:
    """Defaults <- --config files <- --section.key=value overrides <- --data; data paths made
    absolute, so the config saved with a run works from any folder."""
    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.path={args.data}")
    return absolute_paths(load_config(args.config, overrides))


def check_counts(args: argparse.Namespace, **minimum: int) -> None:
    """Refuse a count option below its minimum (`batch_size=1` checks --batch-size >= 1); an
    option left unset (None) is not checked."""
    for name, least in minimum.items():
        value = getattr(args, name)
        if value is not None and value < least:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} must be at least {least}, got {value}")
