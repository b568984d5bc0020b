"""`<run folder>/status.json`: where a launched job stands, for `spawner.py --status`.

Written by the launchers around `vqae train` (the batch script of a Slurm job, the shell of a
tmux window), so a job that dies without a word still ends up failed. Imports no torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from vqae.atomic import write_json

STATES = ("queued", "running", "done", "failed", "requeued")
FILE = "status.json"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_status(run_dir: str | Path) -> dict:
    """The job's status, {} when none was written yet (or the file is torn)."""
    try:
        return json.loads((Path(run_dir) / FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_status(run_dir: str | Path, state: str, **fields) -> dict:
    """Update the status: `state`, a start time when it starts running, an end time when it ends;
    other fields (exit_code, slurm_job, tmux_window, job) are merged in. Atomic."""
    if state not in STATES:
        raise ValueError(f"state {state!r} unknown; valid: {', '.join(STATES)}")
    run_dir = Path(run_dir)
    status = {**read_status(run_dir), **{k: v for k, v in fields.items() if v is not None}}
    status["state"] = state
    if state == "queued":
        status.pop("exit_code", None)
        status["end"] = None
    if state == "running":
        status.update(start=now(), end=None)
        status.pop("exit_code", None)
    if state in ("done", "failed", "requeued"):
        status["end"] = now()
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / FILE, status)
    return status
