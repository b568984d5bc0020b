"""Train/validation/test splits: BigEarthNet v2 parquet, v1 CSV lists, or a stable name hash."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vqae.errors import ConfigError, DataError, cut, one_line
from vqae.io.limits import open_regular, read_small

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
CSV_MAX_BYTES = 256 << 20  # a v1 split CSV: ~600,000 names of ~60 bytes at most
# A v2 metadata parquet, bounded from its footer before reading: BigEarthNet v2 has ~550,000
# rows and ~100 MB in the columns read; a 654 KB file of 60M identical rows would need GBs.
PARQUET_MAX_ROWS = 10_000_000
PARQUET_MAX_BYTES = 1 << 30  # uncompressed bytes of patch_id, split, s1_name
PARQUET_MAX_FOOTER_BYTES = 64 << 20  # BigEarthNet v2's is a few KB
ALIASES = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
COLUMNS = ["patch_id", "split", "s1_name"]  # what is read of a v2 metadata parquet
SNOW_CLOUD_FILE = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
V1_CSV = {"train": "train.csv", "validation": "val.csv", "test": "test.csv"}


@dataclass
class SplitTable:
    split: dict[str, str]  # patch -> train | validation | test
    s1_name: dict[str, str]  # S2 patch -> paired S1 patch (v2 metadata only)


def canonical_split(name: str, every: str | None = None) -> str:
    """train, validation or test for a split name or alias; `every`: the name that also
    means every patch where the caller takes one (listed among the choices)."""
    if name not in ALIASES:
        more = f", or {every} (every patch)" if every else ""
        raise ConfigError(f"unknown split {cut(repr(name), 60)}; choose one of train, "
                          f"validation (val), test{more}")
    return ALIASES[name]


def _fail(path: Path, why: str) -> DataError:
    return DataError(f"metadata parquet {path} {why}; pass BigEarthNet v2's metadata.parquet "
                     "(patch_id, split, s1_name, ...)")


def _footer_size(f, path: Path) -> int:
    """The footer length from a parquet file's last 8 bytes, checked before pyarrow reads it."""
    size = os.fstat(f.fileno()).st_size
    if size < 12:
        raise _fail(path, f"is {size} bytes, too short for a parquet file")
    f.seek(size - 8)
    tail = f.read(8)
    if tail[4:] != b"PAR1":
        raise _fail(path, "does not end in the parquet magic PAR1: it is not a parquet file")
    footer = int.from_bytes(tail[:4], "little")
    if footer > PARQUET_MAX_FOOTER_BYTES or footer > size - 12:
        raise _fail(path, f"declares a {footer:,}-byte footer, more than the file holds or the "
                    f"{PARQUET_MAX_FOOTER_BYTES:,} a split table needs")
    return footer


def _check_declared(meta: pq.FileMetaData, cols: list[str], path: Path) -> None:
    """Refuse a table that would not fit in memory, from the sizes its footer declares: the
    rows and the uncompressed bytes of the columns read (dictionary pages included)."""
    leaves = [j for j in range(meta.num_columns) if meta.schema.column(j).path in cols]
    rows = size = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        rows += max(group.num_rows, 0)
        size += sum(max(group.column(j).total_uncompressed_size, 0) for j in leaves)
    rows = max(rows, meta.num_rows)
    if rows > PARQUET_MAX_ROWS:
        raise _fail(path, f"declares {rows:,} rows, more than the {PARQUET_MAX_ROWS:,} a split "
                    "table may have (BigEarthNet v2 has ~550,000)")
    if size > PARQUET_MAX_BYTES:
        raise _fail(path, f"declares {size:,} uncompressed bytes in columns {', '.join(cols)}, "
                    f"more than the {PARQUET_MAX_BYTES:,} a split table may have")


def _is_text(typ: pa.DataType) -> bool:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _to_list(column: pa.ChunkedArray) -> list:
    """Python values of a dictionary-encoded column; equal values share one str object, so a
    column of millions of copies of one long value costs 8 bytes a row, not a copy each."""
    out: list = []
    for chunk in column.chunks:
        values = np.array(chunk.dictionary.to_pylist() + [None], dtype=object)
        indices = chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)  # -1: None
        out.extend(values[indices].tolist())
    return out


def _read_parquet(path: Path) -> dict[str, list]:
    """Columns patch_id, split (and s1_name when present) of a v2 metadata parquet. A regular
    file whose footer declares at most PARQUET_MAX_ROWS rows and PARQUET_MAX_BYTES in these
    columns, checked before they are read; they are read dictionary-encoded (a column of one
    value repeated is a bomb when decoded), else a one-line DataError naming the file."""
    with open_regular(path, "metadata parquet") as f:
        try:
            _footer_size(f, path)
            f.seek(0)
            pfile = pq.ParquetFile(f)
            names = pfile.schema_arrow.names
            missing = {"patch_id", "split"} - set(names)
            if missing:
                raise _fail(path, f"lacks column(s) {sorted(missing)}")
            cols = [c for c in COLUMNS if c in names]
            bad = [c for c in cols if not _is_text(pfile.schema_arrow.field(c).type)]
            if bad:
                raise _fail(path, f"has column(s) {bad} that are not text")
            _check_declared(pfile.metadata, cols, path)
            f.seek(0)  # the footer read once: passed on with the columns to read encoded
            pfile = pq.ParquetFile(f, metadata=pfile.metadata, read_dictionary=cols)
            table = pfile.read(columns=cols, use_threads=False)
        except (OSError, pa.ArrowException) as err:
            why = one_line(err)
            raise DataError(f"cannot read metadata parquet {path}: {why}") from err
    return {c: _to_list(table.column(c)) for c in cols}


def read_v2_metadata(path: Path, exclude_snow_cloud: bool) -> SplitTable:
    files = [path]
    extra = path.parent / SNOW_CLOUD_FILE
    has_extra = os.path.lexists(extra)  # present but no regular file: an error, not skipped
    if has_extra and not exclude_snow_cloud:
        files.append(extra)  # v2 keeps snow/cloud/shadow patches out of metadata.parquet
    table = SplitTable({}, {})
    for f in files:
        cols = _read_parquet(f)
        for i, patch in enumerate(cols["patch_id"]):
            try:
                table.split[patch] = canonical_split(cols["split"][i])
            except ConfigError as err:
                raise _fail(f, f"row {i}: {err}") from None
            if "s1_name" in cols:
                table.s1_name[patch] = cols["s1_name"][i]
    if exclude_snow_cloud and has_extra:
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
        if os.path.lexists(p / "metadata.parquet"):
            return read_v2_metadata(p / "metadata.parquet", exclude_snow_cloud)
        return read_v1_csvs(p)
    if p.suffix == ".parquet" and os.path.lexists(p):
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
