"""Train/validation/test splits: BigEarthNet v2 parquet, v1 CSV lists, or a stable name hash."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vqae.errors import ConfigError, DataError
from vqae.inputs import read_small

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
CSV_MAX_BYTES = 256 << 20  # a v1 split CSV: ~600,000 names of ~60 bytes at most
ALIASES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
SNOW_CLOUD_FILE = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
V1_CSV = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}


@dataclass
class SplitTable:
    split: dict[str, str]  # patch -> train | validation | test
    s1_name: dict[str, str]  # S2 patch -> paired S1 patch (v2 metadata only)


def canonical_split(name: str) -> str:
    if name not in ALIASES:
        raise ConfigError(f"unknown split {name!r}; choose one of train, validation (val), test")
    return ALIASES[name]


def _read_parquet(path: Path) -> dict[str, list]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"cannot read metadata parquet {path}: {err}") from err
    missing = {"patch_id", "split"} - set(table.column_names)
    if missing:
        raise DataError(f"{path} lacks column(s) {sorted(missing)}; expected BigEarthNet v2 "
                        "metadata.parquet (patch_id, split, s1_name, ...)")
    cols = [c for c in ("patch_id", "split", "s1_name") if c in table.column_names]
    return table.select(cols).to_pydict()


def read_v2_metadata(path: Path, exclude_snow_cloud: bool) -> SplitTable:
    files = [path]
    extra = path.parent / SNOW_CLOUD_FILE
    if extra.is_file() and not exclude_snow_cloud:
        files.append(extra)  # v2 keeps snow/cloud/shadow patches out of metadata.parquet
    table = SplitTable({}, {})
    for f in files:
        cols = _read_parquet(f)
        for i, patch in enumerate(cols["patch_id"]):
            table.split[patch] = canonical_split(cols["split"][i])
            if "s1_name" in cols:
                table.s1_name[patch] = cols["s1_name"][i]
    if exclude_snow_cloud and extra.is_file():
        for patch in _read_parquet(extra)["patch_id"]:  # in case a metadata file lists them too
            table.split.pop(patch, None)
    return table


def read_v1_csvs(folder: Path) -> SplitTable:
    table = SplitTable({}, {})
    for split, filename in V1_CSV.items():
        f = folder / filename
        if not os.path.lexists(f):
            raise DataError(f"split folder {folder} has no {filename}; v1 splits need "
                            f"{', '.join(V1_CSV.values())} with one patch name per line")
        try:
            text = read_small(f, CSV_MAX_BYTES, "split list").decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"split list {f} is not UTF-8 text (byte {err.start}); one patch "
                            "name per line") from None
        for line in text.splitlines():
            name = line.split(",")[0].strip()
            if name:
                table.split[name] = split
    return table


def read_split_table(path: str, exclude_snow_cloud: bool = False) -> SplitTable:
    p = Path(path)
    if p.is_dir():
        if (p / "metadata.parquet").is_file():
            return read_v2_metadata(p / "metadata.parquet", exclude_snow_cloud)
        return read_v1_csvs(p)
    if p.suffix == ".parquet" and p.is_file():
        return read_v2_metadata(p, exclude_snow_cloud)
    raise DataError(f"split source {p} is neither a metadata.parquet nor a folder of "
                    f"{', '.join(V1_CSV.values())}")


def hash_split(name: str, ratios: list[float]) -> str:
    """Stable across runs, machines and dataset sizes: depends on the name alone."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ConfigError(f"data.split_ratios={ratios}: give three non-negative train/val/test "
                          "fractions")
    u = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    total = sum(ratios)
    for split, r in zip(SPLITS, ratios):
        edge += r / total
        if u < edge:
            return split
    return SPLITS[-1]


def select(names: list[str], split: str, table: SplitTable | None, ratios: list[float],
           source: str) -> list[str]:
    """The patches of `names` that belong to `split`."""
    split = canonical_split(split)
    if table is None:
        chosen = [n for n in names if hash_split(n, ratios) == split]
    else:
        chosen = [n for n in names if table.split.get(n) == split]
        unlisted = sum(1 for n in names if n not in table.split)
        if unlisted:
            log.info("%d patches of %s are in no split of the metadata and are left out",
                     unlisted, source)
    if not chosen:
        raise DataError(f"split {split!r} of {source} is empty; check data.splits / "
                        "data.split_ratios / data.exclude_snow_cloud")
    return chosen
