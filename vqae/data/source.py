"""Turn `DataConfig` into a dataset: default sample, archive staging, format detection, splits."""

from __future__ import annotations

import logging
from pathlib import Path

from vqae.config import DataConfig
from vqae.data.bands import S1_BANDS, check_bands
from vqae.data.discover import find_patches
from vqae.data.normalize import load_normalizer
from vqae.data.readers import GeoTiffDataset, LmdbDataset, PatchDataset, is_lmdb
from vqae.data.sample import LMDB_NAME, ensure_sample
from vqae.data.splits import SplitTable, read_split_table, select
from vqae.data.stage import archive_stem, default_scratch, is_archive, stage_archive
from vqae.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def resolve_path(cfg: DataConfig) -> tuple[Path, str]:
    """(local data path, split source); fetches the sample or stages an archive as needed."""
    if not cfg.path:
        sample = ensure_sample()
        log.debug("no data path given: using the real BigEarthNet sample at %s", sample)
        return sample / LMDB_NAME, cfg.splits or str(sample / "metadata.parquet")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise DataError(f"data path {path} does not exist; pass --data with a GeoTIFF folder, "
                        "a .tar/.tar.gz archive or an LMDB (or nothing, for the sample)")
    if is_archive(path):
        scratch = Path(cfg.scratch) if cfg.scratch else default_scratch()
        path = stage_archive(path, scratch / "vqae-staged" / archive_stem(path))
    return path, cfg.splits


def detect_format(path: Path, fmt: str) -> str:
    if fmt not in ("auto", "geotiff", "lmdb"):
        raise ConfigError(f"data.format={fmt!r}; valid: auto, geotiff, lmdb")
    if fmt != "auto":
        return fmt
    if is_lmdb(path):
        return "lmdb"
    if path.is_dir():
        return "geotiff"
    raise DataError(f"data path {path} is neither a folder of GeoTIFFs, an archive nor an LMDB")


def open_dataset(cfg: DataConfig, split: str | None = None, normalize: bool = True
                 ) -> PatchDataset:
    """The dataset of `split` (or every patch when None) as the config describes it."""
    bands = check_bands(cfg.bands)
    path, split_source = resolve_path(cfg)
    fmt = detect_format(path, cfg.format)
    table: SplitTable | None = (
        read_split_table(split_source, cfg.exclude_snow_cloud) if split_source else None
    )
    if cfg.s1 and (table is None or not table.s1_name):
        raise ConfigError("data.s1=true needs S2->S1 pairs: set data.splits to a BigEarthNet v2 "
                          "metadata.parquet (column s1_name)")
    kwargs = dict(
        bands=bands,
        normalizer=(load_normalizer(cfg.stats, bands + (S1_BANDS if cfg.s1 else []))
                    if normalize else None),
        interpolation=cfg.interpolation,
        subtract_offset=cfg.subtract_offset,
        s1_names=table.s1_name if cfg.s1 else None,
    )
    if fmt == "lmdb":
        ds: PatchDataset = LmdbDataset(path, **kwargs)
    else:
        patches = find_patches(path)
        names = [n for n, p in patches.items() if bands[0] in p.files]
        if not names:
            raise DataError(f"no patch under {path} has band {bands[0]}; is this an S2 folder?")
        ds = GeoTiffDataset(path, names=names, patches=patches, **kwargs)
    if table is not None and split is None:
        ds.names = [n for n in ds.names if n in table.split]  # only patches the metadata lists
    if split is not None:
        ds.names = select(ds.names, split, table, cfg.split_ratios, str(path))
    return ds
