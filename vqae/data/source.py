"""A data path opened once: the default sample or staged archive, the format, the split table,
the patch list and (for an LMDB) the handle; `dataset(split)` hands out readers that share them.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from vqae.config import DataConfig
from vqae.data.bands import channels
from vqae.data.discover import PatchFiles, find_patches
from vqae.data.lmdb_store import LmdbStore, is_lmdb
from vqae.data.readers import GeoTiffDataset, LmdbDataset, PatchDataset, lmdb_patch_names
from vqae.data.sample import LMDB_NAME, ensure_sample
from vqae.data.shards import ShardedStore, is_shard_set, open_store
from vqae.data.splits import SplitTable, canonical_split, read_split_table, select
from vqae.data.stage import archive_stem, default_scratch, is_archive, stage_archive
from vqae.errors import ConfigError, DataError

log = logging.getLogger(__name__)
ALL = "all"  # the split name that means every patch
DATA_KINDS = ("a GeoTIFF folder, a .tar/.tar.gz archive, an LMDB or a folder of `vqae encode "
              "--shard` LMDBs")


def resolve_path(cfg: DataConfig) -> tuple[Path, str]:
    """(local data path, split source); fetches the sample or stages an archive as needed."""
    if not cfg.path:
        sample = ensure_sample()
        log.debug("no data path given: using the real BigEarthNet sample at %s", sample)
        return sample / LMDB_NAME, cfg.splits or str(sample / "metadata.parquet")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass --data with {DATA_KINDS} (or "
                        "nothing, for the sample)")
    if is_archive(path):
        scratch = Path(cfg.scratch) if cfg.scratch else default_scratch()
        path = stage_archive(path, scratch / "vqae-staged" / archive_stem(path))
    return path, cfg.splits


def detect_format(path: Path, fmt: str) -> str:
    if fmt != "auto":
        return fmt
    if is_lmdb(path) or is_shard_set(path):
        return "lmdb"
    if path.is_dir():
        return "geotiff"
    raise DataError(f"data path {path} is neither a folder of GeoTIFFs, an archive nor an LMDB")


def point_at(cfg: DataConfig, path: str | None, splits: str | None = None,
             arg: str = "--data") -> DataConfig:
    """A checkpoint's data config for other data (evaluate, the codec): the training run's
    split metadata and format do not describe a new folder, so they reset unless given.
    `arg` is the command's own argument for `path`, which a missing path's error names."""
    if path:
        if not Path(path).expanduser().exists():
            raise DataError(f"{arg} {path} does not exist; pass {DATA_KINDS}")
        cfg = dataclasses.replace(cfg, path=str(Path(path).absolute()), splits="", format="auto")
    elif cfg.path and not Path(cfg.path).expanduser().exists():
        raise DataError(f"the checkpoint's data path {cfg.path} (from its training config) does "
                        f"not exist; pass {arg} with {DATA_KINDS}")
    return cfg if splits is None else dataclasses.replace(cfg, splits=splits)


def read_patch(path: str | Path, name: str | None = None) -> dict[str, np.ndarray]:
    """One patch of a GeoTIFF tree, archive or LMDB (the first, or `name`) as a reader loads
    it: {S2 band: array at its native size, as stored}."""
    with DataSource(DataConfig(path=str(path))) as source:
        ds = source.dataset(ALL)
        if not ds.names or (name is not None and name not in set(ds.names)):
            raise DataError(f"{source.path} has no patch {name or ''}".rstrip() +
                            "; pass the name of one of its patches")
        return ds.load_raw(ds.names[0] if name is None else name, ds.s2_bands)


def source_at(cfg: DataConfig, path: str | None, arg: str = "--data") -> DataSource:
    """A DataSource over `path` (None: the configured data) with `cfg`'s bands and reading;
    `arg`: the command's argument for `path`."""
    return DataSource(point_at(cfg, path, arg=arg))


class DataSource:
    """`DataConfig` resolved once; use as a context manager (or `close()`) to free the handle."""

    def __init__(self, cfg: DataConfig):
        self.cfg = cfg
        self.bands = list(cfg.bands)
        self.path, split_source = resolve_path(cfg)
        self.format = detect_format(self.path, cfg.format)
        self.table: SplitTable | None = (
            read_split_table(split_source, cfg.exclude_snow_cloud) if split_source else None)
        if cfg.s1 and (self.table is None or not self.table.s1_name):
            raise ConfigError("data.s1=true needs S2->S1 pairs: set data.splits to a BigEarthNet "
                              "v2 metadata.parquet (column s1_name)")
        self.store: LmdbStore | ShardedStore | None = None
        self.patches: dict[str, PatchFiles] | None = None
        names = self._scan()
        if self.table is not None:  # only patches the metadata lists
            names = [n for n in names if n in self.table.split]
        self.names = names

    def _scan(self) -> list[str]:
        first = self.bands[0]
        if self.format == "lmdb":
            self.store = open_store(self.path)
            return lmdb_patch_names(self.store, first)
        self.patches = find_patches(self.path)
        names = [n for n, p in self.patches.items() if first in p.bands]
        if not names:
            raise DataError(f"no patch under {self.path} has band {first}; is this an S2 folder?")
        return names

    @property
    def all_bands(self) -> list[str]:
        """The channels of a sample: the S2 bands, then VV, VH with data.s1."""
        return channels(self.bands, self.cfg.s1)

    def split_names(self, split: str | None) -> list[str]:
        """Patches of `split` (train, validation/val, test), or every patch for None / "all"."""
        if split in (None, ALL):
            return list(self.names)
        canonical_split(split, ALL)  # a misspelt split lists every choice, `all` too
        return select(self.names, split, self.table, self.cfg.split_ratios, str(self.path))

    def describe(self, split: str | None) -> str:
        """Which split, from where, and how many patches: for the user, before a long run."""
        names = self.split_names(split)
        if split in (None, ALL):
            return f"all {len(names)} patches of {self.path}"
        how = "from the split metadata" if self.table is not None else (
            f"chosen by name hash with data.split_ratios={self.cfg.split_ratios}, since the "
            "data has no split metadata")
        return (f"split '{canonical_split(split)}' {how}: {len(names)} of {len(self.names)} "
                f"patches of {self.path}")

    def dataset(self, split: str | None = None, native: bool = False) -> PatchDataset:
        """Reader of `split`; `native`: items hold raw uint16 stacks for device resampling."""
        kwargs = dict(bands=self.bands, interpolation=self.cfg.interpolation,
                      s1_names=self.table.s1_name if self.cfg.s1 else None, native=native)
        names = self.split_names(split)
        if self.store is not None:
            return LmdbDataset(self.store, names=names, **kwargs)
        return GeoTiffDataset(self.path, names=names, patches=self.patches, **kwargs)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()

    def __enter__(self) -> DataSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

