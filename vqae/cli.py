"""The one entry point: `vqae` == `python -m vqae` == `vqae.cli.main(argv)`.

Each subcommand lives in `vqae.commands.<name>` with `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their command runs, so `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from vqae import __version__
from vqae.errors import VqaeError
from vqae.io.stops import Stopped

# name -> (module under vqae.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "sample-data": ("sample_data", "download (once) and print the path of the real BigEarthNet sample"),
    "stats": ("stats", "per-band mean/std/percentiles of a dataset in one streaming pass"),
    "stage": ("stage", "extract a .tar/.tar.gz GeoTIFF archive to local disk (once per node)"),
    "train": ("train", "train a VQ autoencoder (config files + --section.key=value overrides)"),
    "evaluate": ("evaluate", "evaluate a checkpoint on a split: metrics table and JSON"),
    "preview": ("preview", "list the patches of a dataset and the value range of each band"),
    "encode": ("encode", "encode GeoTIFF trees (BigEarthNet S1/S2, HySpecNet-11k) into an LMDB"),
    "verify-encoded": ("verify_encoded", "compare an encoded LMDB with its source GeoTIFFs"),
    "config": ("config", "print the resolved config (or one key) that train would use"),
    "job-status": ("job_status", "record a launched job's state in <run dir>/status.json"),
    "sweep-job": ("sweep_job", "print job I of a sweep's jobs file, NUL-separated (launchers)"),
    "fit-prior": ("fit_prior", "fit a checkpoint's entropy-coding prior on a split"),
    "fit-residual": ("fit_residual", "fit the enhancement layer's residual model (--max-error)"),
    "compress": ("compress", "compress patches into entropy-coded .vqz bitstreams"),
    "decompress": ("decompress", "decompress .vqz bitstreams into GeoTIFFs or an LMDB"),
    "rd": ("rd", "rate-distortion of models vs JPEG 2000: rd.csv, rd.json, rd.png, BD-rate"),
    "convert-checkpoint": ("convert_checkpoint", ("rewrite an older vqae's checkpoint (a "
                                                  "torch pickle) as safetensors, which loads "
                                                  "without running code")),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqae", description="Vector-quantized autoencoders for Sentinel-2 compression."
    )
    parser.add_argument("--version", action="version", version=f"vqae {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, text) in COMMANDS.items():
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(_module=module)
        # Commands declare their own options; importing here would load torch for `--help`,
        # so parsers are completed lazily in main() for the chosen command only.
    return parser


def _command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    module_name, text = COMMANDS[name]
    module = importlib.import_module(f"vqae.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"vqae {name}", description=text)
    module.add_arguments(parser)
    return parser, module


def _is_override(token: str) -> bool:
    return token.startswith("--") and "." in token.split("=", 1)[0]


def _overrides(parser: argparse.ArgumentParser, unknown: list[str], accepted: bool) -> list[str]:
    """Leftover `--section.key=value` or `--section.key value` arguments are config overrides,
    if the command takes them; anything else is an error."""
    out, bad, rest = [], [], list(unknown)
    while rest:
        token = rest.pop(0)
        if not (accepted and _is_override(token)):
            bad.append(token)
        elif "=" in token:
            out.append(token[2:])
        elif rest and not rest[0].startswith("--"):
            out.append(f"{token[2:]}={rest.pop(0)}")
        else:
            bad.append(f"{token} (no value given)")
    if bad:
        hint = " (config overrides look like --section.key=value)" if accepted else ""
        parser.error(f"unrecognized arguments: {' '.join(bad)}{hint}")
    return out


def parse(argv: list[str]) -> tuple[str, object, argparse.Namespace] | None:
    """(command name, its module, its arguments) for `vqae [-v] COMMAND ...`; None after
    printing the top-level help. Usage errors exit with status 2, as argparse does."""
    top = build_parser()
    head, rest = [], list(argv)
    while rest and rest[0].startswith("-"):  # `vqae [-v] COMMAND rest...`
        head.append(rest.pop(0))
    args_top = top.parse_args(head)  # handles --help / --version
    if not rest:
        top.print_help()
        return None
    name, rest = rest[0], rest[1:]
    if name not in COMMANDS:
        top.error(f"unknown command '{name}'; choose from {', '.join(COMMANDS)}")
    parser, module = _command_parser(name)
    args, unknown = parser.parse_known_args(rest)
    args.overrides = _overrides(parser, unknown, getattr(module, "ACCEPTS_OVERRIDES", False))
    args.verbose = args_top.verbose
    return name, module, args


def _disk_error(name: str, err: OSError) -> str:
    """A failed write or read outside our own checks, as one line naming the file."""
    where = f" {err.filename}" if err.filename else ""
    return (f"vqae {name}: error: cannot access{where}: {err.strerror or err}; free space or "
            "choose a writable folder, then run again (runs resume with --run.resume=auto)")


def main(argv: list[str] | None = None) -> int:
    parsed = parse(list(sys.argv[1:] if argv is None else argv))
    if parsed is None:
        return 2
    name, module, args = parsed
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(module.run(args) or 0)
    except Stopped as err:  # on a signal, by request: not an error
        print(f"vqae {name}: {err}", file=sys.stderr)
        return err.exit_code
    except VqaeError as err:
        print(f"vqae {name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(_disk_error(name, err), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"vqae {name}: interrupted", file=sys.stderr)
        return 130
