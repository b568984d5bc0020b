"""Compare an encoded LMDB with the GeoTIFFs it came from: keys, band sets, dtypes, shapes, values.

Sources are re-read with rasterio (not the encoder's tifffile fast path), in worker processes,
and the two sides are compared bit for bit, so NaNs in S1 bands compare equal to themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from vqae.data.bands import S1_BANDS, S2_BANDS
from vqae.data.discover import find_patches, require_folder
from vqae.data.encode import (
    EncodeTask,
    EncodeTasks,
    chunk_mapper,
    chunked,
    encode_chunk,
    hyspecnet_jobs,
)
from vqae.data.lmdb_store import LmdbStore
from vqae.errors import DataError


@dataclass
class VerifyReport:
    checked: int = 0  # patches compared value by value
    sources: int = 0  # source patches listed
    differences: list[str] = field(default_factory=list)


def detect_jobs(root: str | Path) -> list[EncodeTask]:
    """BigEarthNet S2/S1 patch folders under root, else HySpecNet-11k spectral images."""
    root = require_folder(root, "--against", "pass a root given to `vqae encode` (a "
                          "BigEarthNet S2 or S1 tree, or a HySpecNet-11k folder)")
    try:
        patches = find_patches(root, bands=S2_BANDS + S1_BANDS)
    except DataError:
        try:
            return hyspecnet_jobs(root)
        except DataError:
            raise DataError(
                f"no BigEarthNet patches (<patch>/<patch>_B02.tif, _VV.tif) and no HySpecNet-11k "
                f"patches (*-SPECTRAL_IMAGE.TIF) under {root}; pass the root given to encode"
            ) from None
    s2 = set(S2_BANDS)
    return [EncodeTask(n, "s2" if s2.intersection(p.bands) else "s1", p)
            for n, p in patches.items()]


def compare_patch(key: str, source: dict[str, np.ndarray], stored: dict[str, np.ndarray]
                  ) -> list[str]:
    """Every difference between one patch's source bands and its LMDB entry."""
    diffs = []
    if missing := sorted(source.keys() - stored.keys()):
        diffs.append(f"{key}: bands missing from the LMDB: {' '.join(missing)}")
    if extra := sorted(stored.keys() - source.keys()):
        diffs.append(f"{key}: bands in the LMDB but not in the source: {' '.join(extra)}")
    for band in sorted(source.keys() & stored.keys()):
        a, b = source[band], stored[band]
        if a.dtype != b.dtype:
            diffs.append(f"{key} {band}: dtype {b.dtype} in the LMDB, {a.dtype} in the source")
        elif a.shape != b.shape:
            diffs.append(f"{key} {band}: shape {b.shape} in the LMDB, {a.shape} in the source")
        elif a.tobytes() != b.tobytes():
            bits = f"u{a.dtype.itemsize}"  # bitwise, so NaN == NaN
            n = int(np.count_nonzero(a.view(bits) != b.view(bits)))
            diffs.append(f"{key} {band}: {n} of {a.size} values differ")
    return diffs


def _key_differences(wanted: set[str], stored: set[str]) -> list[str]:
    return [f"{k}: missing from the LMDB" for k in sorted(wanted - stored)] + [
        f"{k}: in the LMDB but in no source root" for k in sorted(stored - wanted)
    ]


def _compare_entry(key: str, source_bytes: bytes, value: bytes) -> list[str]:
    try:
        stored = st_load(value)
    except (SafetensorError, KeyError, ValueError) as err:  # KeyError: a dtype numpy lacks
        return [f"{key}: the LMDB value is not valid safetensors ({type(err).__name__}: {err})"]
    return compare_patch(key, st_load(source_bytes), stored)


def verify(out: str | Path, jobs: EncodeTasks, workers: int = 1) -> VerifyReport:
    """Compare OUT with its sources; `jobs` may be the function that lists them (so that the
    reader workers do not inherit the list)."""
    out = Path(out)
    report = VerifyReport()
    read_slow = partial(encode_chunk, fast=False)  # rasterio: independent of the encoder's path
    # Fork the readers first, so that only this process opens the LMDB and none inherits the
    # job list; the store turns a damaged file or key into a DataError that names it.
    with chunk_mapper(workers) as imap:
        jobs = jobs() if callable(jobs) else jobs  # a bad source root is reported first
        report.sources = len(jobs)
        if not (out / "data.mdb").is_file():
            raise DataError(f"{out} holds no LMDB (data.mdb); pass the OUT folder of "
                            "`vqae encode`")
        with LmdbStore(out) as store:
            _compare_all(imap, read_slow, jobs, store, report)
    return report


def _compare_all(imap, read_slow, jobs: list[EncodeTask], store: LmdbStore, report: VerifyReport
                 ) -> None:
    stored = set(store.keys())
    report.differences += _key_differences({j.key for j in jobs}, stored)
    present = [j for j in jobs if j.key in stored]
    for enc in (e for chunk in imap(read_slow, chunked(present)) for e in chunk):
        report.checked += 1
        if enc.error is not None:
            report.differences.append(f"{enc.key}: source unreadable: {enc.error}")
            continue
        value = store.get(enc.key)
        report.differences += _compare_entry(enc.key, enc.data, value)
