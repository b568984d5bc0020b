"""Options shared by the commands that read data."""

from __future__ import annotations

import argparse

from vqae.config import INT_MAX, Config, absolute_paths, load_config
from vqae.errors import cut

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


def int_in(low: int, high: int = INT_MAX):
    """argparse type: an integer in [low, high]; anything else is argparse's one-line usage
    error naming the option (not a ValueError from deep inside a DataLoader)."""

    def parse(text: str) -> int:
        digits = text.strip().lstrip("+-").isdigit()
        try:
            value = int(text) if len(text) < 100 else None  # int() of 5000 digits raises
        except ValueError:
            raise argparse.ArgumentTypeError(f"{cut(text, 60)!r} is not an integer") from None
        if value is None and not digits:
            raise argparse.ArgumentTypeError(f"{cut(text, 60)!r} is not an integer")
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{cut(text, 60)} is outside {low}..{high}")
        return value

    parse.__name__ = "int"
    return parse


def add_out_mode(parser: argparse.ArgumentParser, command: str, same: str) -> None:
    """--overwrite | --resume of a command's OUT (the policy is vqae.io.outputs); `same` says
    what a resumed OUT must share with this run."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true",
                      help=f"replace OUT, an earlier output of vqae {command} (it stays intact "
                      "until the new one is complete)")
    mode.add_argument("--resume", action="store_true",
                      help=f"complete OUT, left by an interrupted vqae {command} (killed, "
                      f"signalled or out of disk space) {same}: keep its patches, add the "
                      "missing ones")


def add_threshold(parser) -> None:
    """--psnr-threshold: where `patches_below` counts (vqae.metrics.PSNR_THRESHOLD unless given;
    read there, so that parsing imports no torch)."""
    parser.add_argument("--psnr-threshold", type=decibels, metavar="DB",
                        help="patches_below counts the patches under DB dB (default 30)")


def threshold(args) -> dict:
    """The threshold option as keyword arguments: none when not given (the default applies)."""
    return {} if args.psnr_threshold is None else {"psnr_threshold": args.psnr_threshold}


def _number(text: str, unit: str = "") -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{cut(text, 60)} is not a number{unit}") from None


def decibels(text: str) -> float:
    """A PSNR in dB: a finite number in 0..180 (what DESIGN.md's PSNR can take)."""
    value = _number(text, " of dB")
    if not 0.0 <= value <= 180.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{cut(text, 60)} dB is outside 0..180")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a rate)."""
    value = _number(text)
    if not (0.0 < value < float("inf")):  # NaN fails too
        raise argparse.ArgumentTypeError(f"{cut(text, 60)} must be a positive number")
    return value


def shard_arg(text: str):
    """argparse type of --shard I/N."""
    from vqae.data.shards import parse_shard

    try:
        return parse_shard(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
