"""Hyperparameter sweeps: a sweep YAML expanded into named `vqae train` jobs.

A sweep file (configs/sweeps/*.yaml):

    name: debug-codebooks            # default: the file's stem
    folder: runs/sweeps/debug        # each job runs in <folder>/<job name>
    base: [configs/debug.yaml]       # config files, applied in order
    overrides: {train.steps: 200}    # the same for every job
    grid:                            # every combination of these values...
      quantizer.codebook_size: [32, 64]
      optim.lr: [1.0e-3, 2.0e-3]
    variants:                        # ...times each of these override sets
      - {quantizer.name: vq}
      - {quantizer.name: fsq}
    seeds: 2                         # run.seed 0..1 (or a list: [0, 7])
    sample: 3                        # optional: a random subset of 3 grid points
    sample_seed: 0
    max_parallel: 4                  # default for --max-parallel

Job names come from the values that vary (`codebook_size-32_lr-0.001_seed-0`), so they are
stable and readable. Every job's config is validated before anything runs. Imports no torch.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vqae.config import load_config
from vqae.errors import ConfigError
from vqae.safe_yaml import load_file

JOBS_FILE = "jobs.tsv"  # line i+1: job i as name <TAB> run folder <TAB> shell-quoted arguments


@dataclass
class Sweep:
    name: str
    folder: str
    base: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, list] = field(default_factory=dict)
    variants: list[dict[str, Any]] = field(default_factory=list)
    seeds: int | list[int] = 1
    sample: int = 0
    sample_seed: int = 0
    max_parallel: int = 4


@dataclass
class Job:
    name: str
    run_dir: Path
    args: list[str]  # `vqae train` arguments

    def line(self) -> str:
        return "\t".join([self.name, str(self.run_dir), shlex.join(self.args)])


# ---- reading ------------------------------------------------------------------------------

def _fail(path: Path, message: str) -> ConfigError:
    return ConfigError(f"sweep {path}: {message}")


def _check_types(path: Path, raw: dict) -> None:
    valid = {f.name for f in dataclasses.fields(Sweep)}
    unknown = sorted(set(raw) - valid)
    if unknown:
        raise _fail(path, f"unknown key(s) {', '.join(unknown)}; valid keys: "
                          f"{', '.join(sorted(valid))}")
    shapes = {"base": list, "overrides": dict, "grid": dict, "variants": list}
    for key, kind in shapes.items():
        if key in raw and not isinstance(raw[key], kind):
            raise _fail(path, f"{key} must be a {kind.__name__}, got {raw[key]!r}")
    for key, values in raw.get("grid", {}).items():
        if not isinstance(values, list) or not values:
            raise _fail(path, f"grid.{key} must be a non-empty list of values, got {values!r}")
    if not all(isinstance(v, dict) and v for v in raw.get("variants", [])):
        raise _fail(path, "variants must be a list of non-empty mappings of overrides")
    for key in ("sample", "sample_seed", "max_parallel"):
        if key in raw and (not isinstance(raw[key], int) or raw[key] < (key == "max_parallel")):
            raise _fail(path, f"{key} must be a non-negative integer (max_parallel >= 1)")
    seeds = raw.get("seeds", 1)
    if not (isinstance(seeds, int) and seeds >= 1 or isinstance(seeds, list) and seeds
            and all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise _fail(path, f"seeds must be a count >= 1 or a list of seeds, got {seeds!r}")


def load_sweep(path: str | Path) -> Sweep:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path} does not exist")
    raw = load_file(path, "sweep file") or {}  # no aliases, bounded size and depth, UTF-8
    if not isinstance(raw, dict):
        raise _fail(path, "expected a mapping of keys (name, folder, base, grid, ...)")
    _check_types(path, raw)
    missing = [b for b in raw.get("base", []) if not Path(b).is_file()]
    if missing:
        raise _fail(path, f"base config(s) {', '.join(map(str, missing))} not found (relative "
                          f"paths start at the folder you run from, {Path.cwd()})")
    raw.setdefault("name", path.stem)
    raw.setdefault("folder", f"runs/sweeps/{raw['name']}")
    return Sweep(**raw)


# ---- expansion ----------------------------------------------------------------------------

def grid_points(sweep: Sweep) -> list[dict[str, Any]]:
    keys = list(sweep.grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*sweep.grid.values())]
    if sweep.sample and sweep.sample < len(points):
        keep = sorted(random.Random(sweep.sample_seed).sample(range(len(points)), sweep.sample))
        points = [points[i] for i in keep]
    return points


def points(sweep: Sweep) -> list[dict[str, Any]]:
    """Every job's varying overrides: grid points x variants x seeds, in that order."""
    seeds = sweep.seeds if isinstance(sweep.seeds, list) else list(range(sweep.seeds))
    return [{**g, **v, "run.seed": s} for g in grid_points(sweep)
            for v in (sweep.variants or [{}]) for s in seeds]


def cli_value(value: Any) -> str:
    """A YAML value as `vqae` reads it back from `--key=value`."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix(
        "\n...").strip()


def _slug(value: Any) -> str:
    text = "x".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "empty"


def job_names(jobs: list[dict[str, Any]]) -> list[str]:
    """Names from the keys whose values differ between jobs (the last part of a dotted key,
    unless two varying keys share it); unique, filesystem-safe."""
    varying = [k for k in dict.fromkeys(k for j in jobs for k in j)
               if len({repr(j.get(k)) for j in jobs}) > 1]
    varying.sort(key=lambda k: k == "run.seed")  # the seed last, whatever a variant adds
    short = {k: k.split(".")[-1] for k in varying}
    if len(set(short.values())) < len(short):
        short = {k: k for k in varying}
    names, seen = [], set()
    for j in jobs:
        name = "_".join(f"{short[k]}-{_slug(j.get(k))}" for k in varying if k in j) or "run"
        base, n = name, 2
        while name in seen:
            name, n = f"{base}-{n}", n + 1
        seen.add(name)
        names.append(name)
    return names


def expand(sweep: Sweep) -> list[Job]:
    """The sweep's jobs; raises ConfigError naming the job whose config `vqae` would reject."""
    folder = Path(sweep.folder).absolute()
    base = [str(Path(b).absolute()) for b in sweep.base]
    varying = points(sweep)
    jobs = []
    for name, point in zip(job_names(varying), varying):
        settings = {**sweep.overrides, **point}
        overrides = [f"{k}={cli_value(v)}" for k, v in settings.items()]
        run = [f"run.dir={folder / name}", "run.resume=auto", f"run.name={sweep.name}-{name}"]
        try:
            load_config(base, overrides + run)
        except ConfigError as err:
            raise ConfigError(f"sweep {sweep.name}, job {name}: {err}") from err
        args = [a for b in base for a in ("--config", b)] + [f"--{o}" for o in overrides + run]
        jobs.append(Job(name, folder / name, args))
    return jobs


def write_jobs(jobs: list[Job], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / JOBS_FILE
    path.write_text("".join(job.line() + "\n" for job in jobs))
    return path
