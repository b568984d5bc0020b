"""`<sweep folder>/jobs.jsonl`: the jobs of a sweep, one JSON object per line.

Line i+1 holds job i: `{"index": i, "name": ..., "run_dir": ..., "args": [...]}`, the `vqae
train` arguments as a list. JSON escapes newlines and tabs inside strings, so no value can
split a line or a field; the file is written atomically. Launchers never parse it in bash:
`vqae sweep-job FILE I` prints job I's fields NUL-separated (a Slurm array task reads them with
`mapfile -d ''`). Reading checks every record it returns. Stdlib only: no torch, no yaml.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from vqae.atomic import write_atomic
from vqae.errors import ConfigError
from vqae.shell import check_name

FILE = "jobs.jsonl"
FIELDS = ("index", "name", "run_dir", "args")


@dataclass
class Job:
    name: str
    run_dir: Path
    args: list[str]  # `vqae train` arguments, one value each

    def record(self, index: int) -> str:
        return json.dumps({"index": index, "name": self.name, "run_dir": str(self.run_dir),
                           "args": self.args})


def write_jobs(jobs: list[Job], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    write_atomic(path, "".join(job.record(i) + "\n" for i, job in enumerate(jobs)))
    return path


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


def read_job(path: str | Path, index: int) -> Job:
    """Job `index` (line index+1) of the jobs file; a one-line ConfigError naming the file and
    line when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"jobs file {path} does not exist (written by spawner.py)")
    lines = path.read_bytes().split(b"\n")
    complete = len(lines) - 1  # records end with a newline; a last one without is torn
    if index == complete and lines[-1]:
        raise ConfigError(f"jobs file {path} line {index + 1} is torn (no newline at its end); "
                          "run spawner.py again to rewrite it")
    if index < 0 or index >= complete:
        raise ConfigError(f"jobs file {path} has {complete} job(s); job {index} (line "
                          f"{index + 1}) does not exist")
    try:
        return _check(json.loads(lines[index]), index)
    except (ValueError, ConfigError) as err:  # JSONDecodeError and UnicodeDecodeError too
        raise ConfigError(f"jobs file {path} line {index + 1} is not a valid job record "
                          f"({' '.join(str(err).split())}); run spawner.py again to rewrite "
                          "it") from None
