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

A sweep holds at most MAX_JOBS jobs (grid points, or the sample of them, x variants x seeds),
counted before any job is built; a sample is drawn as indices into the grid, so a huge grid is
never built whole.

Job names come from the values that vary (`codebook_size-32_lr-0.001_seed-0`), so they are
stable and readable. Names (the sweep's and the jobs') use only letters, digits and `_.+-`;
keys are `section.key`; any other value reaches `vqae train` as exactly one argument
(`--section.key=value`), whatever characters it holds. Every job's config is validated before
anything runs. Imports no torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from vqae.config import load_config
from vqae.errors import ConfigError
from vqae.io.safe_yaml import load_file
from vqae.io.shell import check_name
from vqae.sweeps.jobs_file import MAX_JOBS, Job, write_jobs  # each job is validated here (~5 ms)

__all__ = ["MAX_JOBS", "Job", "Sweep", "check_size", "expand", "job_names",
           "load_sweep", "points", "write_jobs"]

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")  # section.key
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SLUG_MAX = 40  # longer values are cut and told apart by a hash


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
    _check_keys(path, raw)
    _check_paths(path, raw)
    seeds = raw.get("seeds", 1)
    if not (isinstance(seeds, int) and seeds >= 1 or isinstance(seeds, list) and seeds
            and all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise _fail(path, f"seeds must be a count >= 1 or a list of seeds, got {seeds!r}")
    try:
        check_size(Sweep(**{**raw, "name": "", "folder": ""}))
    except ConfigError as err:
        raise _fail(path, str(err)) from None


def _check_keys(path: Path, raw: dict) -> None:
    """Override keys are dotted config keys, as `--section.key=value` takes them."""
    where = [("overrides", raw.get("overrides", {})), ("grid", raw.get("grid", {}))]
    where += [(f"variants[{i}]", v) for i, v in enumerate(raw.get("variants", []))]
    for section, mapping in where:
        for key in mapping:
            if not (isinstance(key, str) and KEY.fullmatch(key)):
                raise _fail(path, f"{section} key {key!r} is not a config key: write "
                                  "section.key (letters, digits, '_'), e.g. train.steps")


def _check_paths(path: Path, raw: dict) -> None:
    paths = [("base", b) for b in raw.get("base", [])]
    if "folder" in raw:
        paths.append(("folder", raw["folder"]))
    for key, text in paths:
        if not isinstance(text, str) or not text or CONTROL.search(text):
            raise _fail(path, f"{key}: {text!r} is not a path (a non-empty string without "
                              "control characters)")


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
    if isinstance(raw["name"], int) and not isinstance(raw["name"], bool):
        raw["name"] = str(raw["name"])  # `name: 2024` needs no quotes
    try:
        check_name(raw["name"], "name")
    except ConfigError as err:
        default = "" if "name" in raw else f" (the file's name; set name: in {path.name})"
        raise _fail(path, f"{err}{default}") from None
    raw.setdefault("folder", f"runs/sweeps/{raw['name']}")
    return Sweep(**raw)


# ---- expansion ----------------------------------------------------------------------------

def _factors(sweep: Sweep) -> tuple[int, int, int, int]:
    """(grid points, grid points run, variants, seeds): counted, nothing built."""
    size = 1
    for values in sweep.grid.values():
        size *= len(values)
    run = min(size, sweep.sample) if sweep.sample else size
    seeds = len(sweep.seeds) if isinstance(sweep.seeds, list) else sweep.seeds
    return size, run, len(sweep.variants) or 1, seeds


def check_size(sweep: Sweep) -> int:
    """The number of jobs; a one-line ConfigError naming the key to change when it is more than
    MAX_JOBS (before anything is built: `seeds: 3000000000` would be a list of 3e9 ints)."""
    size, run, variants, seeds = _factors(sweep)
    count = run * variants * seeds
    if count <= MAX_JOBS:
        return count
    grid = f"{_count(run)} of {_count(size, 'grid point')}" if run < size else \
        _count(size, "grid point")
    blame = max([(run, "sample" if sweep.sample else "grid"), (variants, "variants"),
                 (seeds, "seeds")], key=lambda t: t[0])[1]
    hint = " or set sample: N (a random subset of the grid)" if blame == "grid" else ""
    raise ConfigError(f"{_count(count, 'job')} ({grid} x {_count(variants, 'variant')} x "
                      f"{_count(seeds, 'seed')}) are more than the {MAX_JOBS:,} a sweep may "
                      f"hold; lower {blame}{hint}")


def _count(n: int, noun: str = "") -> str:
    """3000 -> "3,000"; a number too long to read -> "about 10^40"; with its noun."""
    text = f"{n:,}" if n < 10**15 else f"about 10^{len(str(n)) - 1}"
    return f"{text} {noun}{'s' * (n != 1)}" if noun else text


def _grid_point(sweep: Sweep, index: int) -> dict[str, Any]:
    """Point `index` of the grid's product, in itertools.product order (the last key varies
    fastest), without building the product."""
    point = {}
    for key, values in reversed(sweep.grid.items()):
        index, digit = divmod(index, len(values))
        point[key] = values[digit]
    return dict(reversed(point.items()))


def _sample(size: int, k: int, seed: int) -> list[int]:
    """k distinct indices below size, sorted, the same for the same seed."""
    rng = random.Random(seed)
    if size <= sys.maxsize:  # random.sample of a range builds nothing big (as it always did)
        return sorted(rng.sample(range(size), k))
    keep: set[int] = set()  # len(range(size)) overflows; collisions are rare at this size
    while len(keep) < k:
        keep.add(rng.randrange(size))
    return sorted(keep)


def grid_points(sweep: Sweep) -> list[dict[str, Any]]:
    size, run, _, _ = _factors(sweep)
    indices = _sample(size, run, sweep.sample_seed) if run < size else range(size)
    return [_grid_point(sweep, i) for i in indices]


def points(sweep: Sweep) -> list[dict[str, Any]]:
    """Every job's varying overrides: grid points x variants x seeds, in that order."""
    try:
        check_size(sweep)
    except ConfigError as err:
        raise ConfigError(f"sweep {sweep.name}: {err}") from None
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
    """A value as a name part: letters, digits and `.+-`, at most SLUG_MAX characters."""
    text = "x".join(map(str, value)) if isinstance(value, list) else str(value)
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "empty"
    if len(slug) > SLUG_MAX:
        digest = hashlib.sha1(repr(value).encode()).hexdigest()[:8]
        slug = f"{slug[:SLUG_MAX - 9].rstrip('-')}-{digest}"
    return slug


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
        try:
            names.append(check_name(name, "job name"))
        except ConfigError as err:
            keys = ", ".join(k for k in varying if k in j)
            raise ConfigError(f"{err} (made from the varying keys {keys}): vary fewer keys or "
                              "shorten their values") from None
    return names


def expand(sweep: Sweep) -> list[Job]:
    """The sweep's jobs; raises ConfigError naming the job whose config `vqae` would reject."""
    check_name(sweep.name, "sweep name")  # load_sweep checked it; a Sweep built in code too
    folder = Path(sweep.folder).absolute()
    base = [str(Path(b).absolute()) for b in sweep.base]
    varying = points(sweep)
    jobs = []
    for name, point in zip(job_names(varying), varying):
        settings = {**sweep.overrides, **point}
        overrides = [f"{k}={cli_value(v)}" for k, v in settings.items()]
        bad = [o for o in overrides if "\0" in o]
        if bad:
            raise ConfigError(f"sweep {sweep.name}, job {name}: {bad[0]!r} holds a NUL "
                              "character, which no command argument can hold")
        run = [f"run.dir={folder / name}", "run.resume=auto", f"run.name={sweep.name}-{name}"]
        try:
            load_config(base, overrides + run)
        except ConfigError as err:
            raise ConfigError(f"sweep {sweep.name}, job {name}: {err}") from err
        args = [f"--config={b}" for b in base] + [f"--{o}" for o in overrides + run]
        jobs.append(Job(name, folder / name, args))
    return jobs

