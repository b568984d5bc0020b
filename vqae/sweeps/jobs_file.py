"""`<sweep folder>/jobs-<stamp>.jsonl`: the jobs of one deploy of a sweep, one JSON object per
line.

Line i+1 holds job i: `{"index": i, "name": ..., "run_dir": ..., "args": [...]}`, the `vqae
train` arguments as a list. JSON escapes newlines and tabs inside strings, so no value can
split a line or a field. Each deploy writes a new file under a name no other file had (an
exclusive create), read-only, and never touches it again: a job array reads the file it was
submitted with (Slurm keeps the environment that names it across requeues), whatever is
deployed into the same folder later. Launchers never parse it in bash:
`vqae sweep-job FILE I` prints job I's fields NUL-separated (a Slurm array task reads them with
`mapfile -d ''`). Reading checks every record it returns, streams the file up to the line it
needs (a record is at most MAX_LINE bytes, a file at most MAX_JOBS records) and refuses what is
not a regular file. Stdlib only: no torch, no yaml.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from vqae.errors import ConfigError, one_line
from vqae.io.limits import open_regular
from vqae.io.shell import check_name

PREFIX, SUFFIX = "jobs-", ".jsonl"  # jobs-20250101-120000-a1b2c3.jsonl
FIELDS = ("index", "name", "run_dir", "args")
MAX_JOBS = 10_000  # records in a file (Slurm's default MaxArraySize is 1001)
MAX_LINE = 1 << 20  # bytes of one record, newline included (a job's arguments take a few KB)


@dataclass
class Job:
    name: str
    run_dir: Path
    args: list[str]  # `vqae train` arguments, one value each

    def record(self, index: int) -> str:
        return json.dumps({"index": index, "name": self.name, "run_dir": str(self.run_dir),
                           "args": self.args})


def new_name(prefix: str = "", suffix: str = "") -> str:
    """A name for something one deploy writes: its time and a random part."""
    return f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}{suffix}"


def _lines(jobs: list[Job]) -> bytes:
    if len(jobs) > MAX_JOBS:
        raise ConfigError(f"{len(jobs):,} jobs are more than the {MAX_JOBS:,} a jobs file holds")
    lines = [(job.record(i) + "\n").encode() for i, job in enumerate(jobs)]
    long = next((i for i, line in enumerate(lines) if len(line) > MAX_LINE), None)
    if long is not None:
        raise ConfigError(f"job {jobs[long].name}: its record takes {len(lines[long]):,} bytes, "
                          f"more than the {MAX_LINE:,} a jobs file line may hold; shorten its "
                          "values")
    return b"".join(lines)


def write_jobs(jobs: list[Job], folder: Path) -> Path:
    """A new jobs file in `folder` holding `jobs`: created exclusively (an existing file is
    never replaced nor written into), read-only. Returns its path."""
    data = _lines(jobs)
    folder.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = folder / new_name(PREFIX, SUFFIX)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            path.unlink(missing_ok=True)  # ours, half written, named by no array yet
            raise
        return path
    raise ConfigError(f"could not create a new jobs file in {folder}: every name tried exists")


def _check(raw: object, index: int) -> Job:
    """The job of a decoded record; ValueError says what is wrong with it."""
    if not isinstance(raw, dict) or sorted(raw) != sorted(FIELDS):
        raise ValueError(f"expected an object with the keys {', '.join(FIELDS)}")
    if raw["index"] != index:
        raise ValueError(f"holds job {raw['index']!r}, expected job {index}")
    fields = [raw["name"], raw["run_dir"], *(raw["args"] if isinstance(raw["args"], list) else [0])]
    if not all(isinstance(f, str) for f in fields):
        raise ValueError("name and run_dir must be strings, args a list of strings")
    if any("\0" in f for f in fields):
        raise ValueError("a field holds a NUL character")
    check_name(raw["name"], "name")
    if not os.path.isabs(raw["run_dir"]):
        raise ValueError(f"run_dir {raw['run_dir']!r} is not an absolute path")
    return Job(raw["name"], Path(raw["run_dir"]), raw["args"])


def _open(path: Path) -> BinaryIO:
    """The jobs file, opened for reading: a regular file, or a one-line ConfigError."""
    if not os.path.lexists(path):
        raise ConfigError(f"jobs file {path} does not exist (written by spawner.py)")
    return open_regular(path, "jobs file", ConfigError)


def _line(path: Path, index: int) -> bytes:
    """Line index+1 of the file, read line by line up to it, each line bounded."""
    complete = 0  # records end with a newline; a last one without is torn
    with _open(path) as f:
        if index < 0 or index >= MAX_JOBS:
            raise ConfigError(f"jobs file {path}: job {index} does not exist (jobs are "
                              f"numbered from 0, at most {MAX_JOBS:,} of them)")
        while True:
            try:
                line = f.readline(MAX_LINE + 1)
            except OSError as err:
                raise ConfigError(f"jobs file {path} cannot be read: {err.strerror or err}"
                                  ) from None
            if len(line) > MAX_LINE:
                raise ConfigError(f"jobs file {path} line {complete + 1} is longer than "
                                  f"{MAX_LINE:,} bytes, so no job record; run spawner.py again "
                                  "to write a new jobs file")
            if not line.endswith(b"\n"):
                break
            if complete == index:
                return line
            complete += 1
    if line and complete == index:
        raise ConfigError(f"jobs file {path} line {index + 1} is torn (no newline at its end); "
                          "run spawner.py again to write a new jobs file")
    raise ConfigError(f"jobs file {path} has {complete} job(s); job {index} (line "
                      f"{index + 1}) does not exist")


def read_job(path: str | Path, index: int) -> Job:
    """Job `index` (line index+1) of the jobs file; a one-line ConfigError naming the file and
    line when it is missing or damaged. Reads no further than that line."""
    path = Path(path)
    line = _line(path, index)
    try:
        return _check(json.loads(line), index)
    except RecursionError:
        raise ConfigError(f"jobs file {path} line {index + 1} is not a valid job record "
                          "(nested too deeply); run spawner.py again to write a new jobs "
                          "file") from None
    except (ValueError, ConfigError) as err:  # JSONDecodeError and UnicodeDecodeError too
        raise ConfigError(f"jobs file {path} line {index + 1} is not a valid job record "
                          f"({one_line(err)}); run spawner.py again to write a new jobs "
                          "file") from None
