"""`vqae config [--config FILE ...] [--section.key=value ...] [--get KEY]`: the resolved config.

Prints what `vqae train` with the same arguments would use (YAML), or one value with --get;
launchers use it to find a run's folder, and users to check a sweep's overrides. Loads no torch.
"""

from __future__ import annotations

import sys

from vqae.commands.common import ACCEPTS_OVERRIDES, add_config_arguments, config_from_args
from vqae.config import dump_yaml, to_dict
from vqae.errors import ConfigError

__all__ = ["ACCEPTS_OVERRIDES", "add_arguments", "run"]


def add_arguments(parser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--get", metavar="SECTION.KEY", help="print only this value")


def run(args) -> int:
    cfg = config_from_args(args)
    if not args.get:
        sys.stdout.write(dump_yaml(cfg))
        return 0
    node = to_dict(cfg)
    for part in args.get.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"no config key '{args.get}'; sections: {', '.join(to_dict(cfg))}")
        node = node[part]
    print(" ".join(map(str, node)) if isinstance(node, list) else node)
    return 0
