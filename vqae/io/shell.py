"""What may reach a shell: names from a safe set, every other value quoted by `quote`.

Generated scripts (a tmux job's script) and printed commands (`sbatch ...`, `tmuxp load ...`)
pass each value through `quote`/`join`, and through nothing else: a value is one single-quoted
word, whatever it holds (newlines, tabs, `$()`, backticks, quotes, `;`, a leading `-`).
Names that also become file names, tmux windows or Slurm job names (sweeps, jobs) must match
`SAFE_NAME`. Stdlib only: spawner.py imports it without torch.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from vqae.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # no leading '-' or '.'
SAFE_CHARS = "letters, digits, '_', '.', '+', '-' (not starting with '.', '-' or '+')"
MAX_NAME = 128  # a file name, with room for suffixes such as `.sh`


def check_name(name: object, what: str) -> str:
    """`name` if it is a safe name; else a one-line ConfigError naming `what` (its key)."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ConfigError(f"{what} {name!r} is not a valid name: use only {SAFE_CHARS}")
    if len(name) > MAX_NAME:
        raise ConfigError(f"{what} {name[:40]!r}... is {len(name)} characters long; "
                          f"at most {MAX_NAME}")
    return name


def quote(value: object) -> str:
    """`value` as one shell word (POSIX sh and bash); a NUL, which no argument can hold, is
    refused."""
    text = str(value)
    if "\0" in text:
        raise ConfigError(f"{text!r} holds a NUL character, which no command argument can hold")
    return shlex.quote(text)


def join(args: Iterable[object]) -> str:
    """A command line whose words are exactly `args`."""
    return " ".join(quote(a) for a in args)
