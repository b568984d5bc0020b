"""What `vqae train` writes into its run folder, and what `--run.overwrite=true` may remove.

An earlier run's outputs are removed only when each entry holds nothing but what a run writes,
checked entry by entry before anything is deleted:
- `checkpoints/`: ckpt-<step>.pt, best.pt, best.json and their temporary files;
- `images/`: the tracker's PNG panels, `<name>_step<N>.png`, each starting with the PNG magic;
- `wandb/`: wandb's run folders (`run-`/`offline-run-<date>_<time>-<id>` holding files, logs,
  tmp, run-<id>.wandb) and its debug logs and `latest-run` link;
- metrics.jsonl, summary.json, config.yaml, wandb_run_id.txt: regular files.
No entry may be, hold or lie inside an input (data path, splits, stats, config files). Anything
else is a one-line ConfigError naming the entry, and nothing is deleted.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from vqae.errors import ConfigError, DataError, cut
from vqae.io.outputs import check_apart

# What a run writes into its folder; --run.overwrite=true removes these after the checks below.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "images", "summary.json", "config.yaml",
               "wandb", "wandb_run_id.txt")
FILES = ("metrics.jsonl", "summary.json", "config.yaml", "wandb_run_id.txt")
_CKPT = r"ckpt-\d{8,}\.pt|best\.pt|best\.json"
CHECKPOINT_NAME = re.compile(rf"^(?:{_CKPT})$|^\.(?:{_CKPT})\.[0-9a-f]{{8,32}}\.tmp$")
IMAGE_NAME = re.compile(r"^[\w.-]+_step\d+\.png$")  # JsonlTracker.image_path
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WANDB_RUN = re.compile(r"^(?:offline-)?run-\d{8}_\d{6}-(?P<id>[a-z0-9]+)$")
WANDB_FILE = re.compile(r"^(?:latest-run|settings|debug(?:-internal|-core|-cli\.[\w.-]+)?\.log)$")
WANDB_RUN_PARTS = ("files", "logs", "tmp", "run-{id}.wandb", "run-{id}.wandb.synced")


class NotOurs(Exception):
    """Why an entry is not only what a run writes."""


def _mode(path: Path) -> int:
    return os.lstat(path).st_mode  # links not followed: a run writes none of these as a link


def _what(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a folder" if stat.S_ISDIR(mode) else "not a regular file"


def _folder(path: Path) -> list[Path]:
    mode = _mode(path)
    if not stat.S_ISDIR(mode):
        raise NotOurs(f"is {_what(mode)}, where a run writes a folder")
    return sorted(path.iterdir())


def _regular(path: Path) -> None:
    mode = _mode(path)
    if not stat.S_ISREG(mode):
        raise NotOurs(f"is {_what(mode)}, where a run writes a file")


def _stranger(child: Path, mode: int | None = None) -> NotOurs:
    kind = "" if mode is None or stat.S_ISREG(mode) else f" ({_what(mode)})"
    return NotOurs(f"holds {cut(child.name, 60)!r}{kind}, which a run does not write there")


def _check_checkpoints(path: Path) -> None:
    for child in _folder(path):
        mode = _mode(child)
        if not (stat.S_ISREG(mode) and CHECKPOINT_NAME.match(child.name)):
            raise _stranger(child, mode)


def _check_images(path: Path) -> None:
    for child in _folder(path):
        mode = _mode(child)
        if not (stat.S_ISREG(mode) and IMAGE_NAME.match(child.name)):
            raise _stranger(child, mode)
        with open(child, "rb") as f:
            if f.read(len(PNG_MAGIC)) != PNG_MAGIC:
                raise NotOurs(f"holds {cut(child.name, 60)!r}, which is not a PNG")


def _check_wandb(path: Path) -> None:
    for child in _folder(path):
        mode = _mode(child)
        if WANDB_FILE.match(child.name) and (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            continue  # a link is removed, never followed
        run = WANDB_RUN.match(child.name)
        if not (run and stat.S_ISDIR(mode)):
            raise _stranger(child, mode)
        allowed = {part.format(id=run["id"]) for part in WANDB_RUN_PARTS}
        others = [p.name for p in child.iterdir() if p.name not in allowed]
        if others:
            raise NotOurs(f"holds {child.name}/{cut(others[0], 60)!r}, which wandb does not "
                          "write into a run folder")


CHECKS = {"checkpoints": _check_checkpoints, "images": _check_images, "wandb": _check_wandb}


def _apart(entry: Path, inputs: list) -> None:
    """The policy of vqae.io.outputs.check_apart: no entry is, holds or lies inside an input."""
    for given in inputs:
        try:
            check_apart(entry, [given], flag="--run.dir")
        except DataError:
            e, i = entry.resolve(), Path(given).resolve()
            how = "is" if e == i else "holds" if e in i.parents else "lies inside"
            raise NotOurs(f"{how} the input {given} of this run") from None


def check_removable(entries: Iterable[Path], inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse (ConfigError, one line, nothing deleted) unless every entry is only what a run
    writes and none is, holds or lies inside an input."""
    inputs = [i for i in inputs if i]
    for entry in entries:
        try:
            _apart(entry, inputs)
            CHECKS.get(entry.name, _regular)(entry)
        except NotOurs as err:
            raise ConfigError(f"--run.overwrite=true: {entry} {err}; overwrite removes only what "
                              "a run writes and deleted nothing: move it away or choose another "
                              "--run.dir") from None
        except OSError as err:
            raise ConfigError(f"--run.overwrite=true: cannot check {entry} "
                              f"({err.strerror or err}); nothing was deleted") from err


def earlier_outputs(run_dir: Path, resume: str, overwrite: bool,
                    inputs: Iterable[str | os.PathLike | None]) -> list[Path]:
    """Outputs of an earlier run in `run_dir` that a fresh run would mix with; refuses unless
    `overwrite` (then they are checked with check_removable and returned for removal)."""
    found = [run_dir / name for name in RUN_OUTPUTS if os.path.lexists(run_dir / name)]
    ckpts = run_dir / "checkpoints"
    has_ckpts = ckpts.is_dir() and any(ckpts.glob("*.pt"))
    if resume or not (has_ckpts or os.path.lexists(run_dir / "metrics.jsonl")):
        return []
    if not overwrite:
        raise ConfigError(f"run folder {run_dir} already holds an earlier run (checkpoints or "
                          "metrics.jsonl); continue it with --run.resume=auto, replace it with "
                          "--run.overwrite=true, or choose a new --run.dir")
    check_removable(found, inputs)
    return found


def remove(entries: Iterable[Path]) -> None:
    """Delete entries that check_removable accepted (links and files unlinked, folders removed
    without following any link inside)."""
    for path in entries:
        if stat.S_ISDIR(_mode(path)):
            shutil.rmtree(path)
        else:
            path.unlink()
