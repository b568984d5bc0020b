"""`vqae train [--config FILE ...] [--section.key=value ...]`."""

from __future__ import annotations

from vqae.commands.common import ACCEPTS_OVERRIDES, add_config_arguments, config_from_args
from vqae.io.shell import join

__all__ = ["ACCEPTS_OVERRIDES", "add_arguments", "continue_command", "run"]


def add_arguments(parser) -> None:
    add_config_arguments(parser)


def continue_command(args) -> str:
    """The command as given, shell-quoted, with `--run.resume=auto` in place of any
    --run.resume: what continues the run after a stop. Overrides come back as
    `--section.key=value`, the one form both spellings parse to."""
    words = ["vqae", *(["-v"] if getattr(args, "verbose", False) else []), "train"]
    for path in args.config:
        words += ["--config", path]
    if args.data:
        words += ["--data", args.data]
    words += [f"--{o}" for o in args.overrides if o.split("=", 1)[0] != "run.resume"]
    return join([*words, "--run.resume=auto"])


def run(args) -> int:
    from vqae.training.trainer import train

    return train(config_from_args(args), args.config, continue_command(args))
