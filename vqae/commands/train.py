"""`vqae train [--config FILE ...] [--section.key=value ...]`."""

from __future__ import annotations

from vqae.commands.common import ACCEPTS_OVERRIDES, add_config_arguments, config_from_args

__all__ = ["ACCEPTS_OVERRIDES", "add_arguments", "run"]


def add_arguments(parser) -> None:
    add_config_arguments(parser)


def run(args) -> int:
    from vqae.training.trainer import train

    return train(config_from_args(args), args.config)
