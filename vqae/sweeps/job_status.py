"""`<run folder>/status.json`: where a launched job stands, for `spawner.py --status`.

Written by the launchers around `vqae train` (the batch script of a Slurm job, the shell of a
tmux window), so a job that dies without a word still ends up failed. Read as a regular file of
at most MAX_BYTES holding a JSON object with a known state (a FIFO there is never opened, so
nothing hangs on it); anything else is damaged: StatusError, one line naming the file. Writing
replaces the file whole (a new file renamed over it), never writes through it. Imports no torch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from vqae.errors import ConfigError, one_line
from vqae.io.atomic import write_json
from vqae.io.limits import open_regular, require_regular

STATES = ("queued", "running", "done", "failed", "requeued")
DAMAGED = "damaged"  # what `spawner.py --status` shows for a status file it cannot read
FILE = "status.json"
MAX_BYTES = 64 << 10  # what write_status writes is a few hundred bytes
TEXT_FIELDS = ("start", "end", "slurm_job", "tmux_window", "job")


class StatusError(ConfigError):
    """A status.json that is not one write_status wrote (too big, not a JSON object, an
    unknown state); a regular file, which `write_status(..., replace_damaged=True)` replaces."""


class StatusNotAFile(StatusError):
    """A status.json that is not a regular file (a FIFO, a folder): never read, never
    replaced."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _damaged(path: Path, what: str) -> StatusError:
    return StatusError(f"status file {path} is damaged: {what}; remove it, or deploy with "
                       "--force to replace it")


def _check(path: Path, status: object) -> dict:
    """`status` when it has the shape write_status writes."""
    if not isinstance(status, dict):
        raise _damaged(path, f"expected a JSON object, got {type(status).__name__}")
    if status.get("state") not in STATES:
        raise _damaged(path, f"no state of {', '.join(STATES)}")
    if not (status.get("exit_code") is None or type(status["exit_code"]) is int):
        raise _damaged(path, "exit_code is not an integer")
    for key in TEXT_FIELDS:
        if not isinstance(status.get(key), (str, type(None))):
            raise _damaged(path, f"{key} is not a string")
    return status


def read_status(run_dir: str | Path) -> dict:
    """The job's status, {} when none was written yet; StatusError when the file is damaged,
    StatusNotAFile when it is not a regular file."""
    path = Path(run_dir) / FILE
    if not os.path.lexists(path):
        return {}
    require_regular(path, "status file", StatusNotAFile, "remove it (the job writes a new one)")
    try:
        with open_regular(path, "status file", StatusError) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as err:
        raise StatusError(f"status file {path} cannot be read: {err.strerror or err}") from None
    if len(data) > MAX_BYTES:
        raise _damaged(path, f"more than {MAX_BYTES:,} bytes")
    try:
        status = json.loads(data)
    except RecursionError:
        raise _damaged(path, "nested too deeply") from None
    except ValueError as err:  # not JSON, not UTF-8, an int of 5000 digits
        raise _damaged(path, one_line(err)) from None
    return _check(path, status)


def write_status(run_dir: str | Path, state: str, *, replace_damaged: bool = False,
                 **fields) -> dict:
    """Update the status: `state`, a start time when it starts running, an end time when it ends;
    other fields (exit_code, slurm_job, tmux_window, job) are merged in. Atomic. A damaged
    status file is an error (StatusError), or is replaced by a fresh status with
    `replace_damaged`; one that is not a regular file is always an error."""
    if state not in STATES:
        raise ValueError(f"state {state!r} unknown; valid: {', '.join(STATES)}")
    run_dir = Path(run_dir)
    try:
        old = read_status(run_dir)
    except StatusNotAFile:
        raise
    except StatusError:
        if not replace_damaged:
            raise
        old = {}
    status = {**old, **{k: v for k, v in fields.items() if v is not None}}
    status["state"] = state
    if state == "queued":
        status.pop("exit_code", None)
        status["end"] = None
    if state == "running":
        status.update(start=now(), end=None)
        status.pop("exit_code", None)
    if state in ("done", "failed", "requeued"):
        status["end"] = now()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / FILE, status)
    except OSError as err:
        raise ConfigError(f"cannot write status file {run_dir / FILE}: "
                          f"{err.strerror or err}") from None
    return status
