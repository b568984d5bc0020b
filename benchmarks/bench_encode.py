"""Encoder and reader throughput on the 480 real S2 patches of s2-real-480.tar.gz.

(1) `vqae encode` (library call, `--workers W`) vs a plain single-process rasterio loop writing
    the same LMDB (same batching, same bytes); our encoder with 1 worker is shown too, to split
    the gain into per-process tuning and parallel reads. Goal: >= 1.8x with 2 workers on 2 cores.
(2) Reader throughput, final float tensors (12, 120, 120) per second in one process: the LMDB
    reader vs the GeoTIFF reader (goal >= 30x) and vs the ceiling `txn.get + safetensors load`
    without resampling (goal >= 0.5).

All variants run interleaved in this one process; each figure is the median of --repeats runs.

    python benchmarks/bench_encode.py [--archive PATH] [--workers 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import lmdb
import numpy as np
import rasterio
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save
from tabulate import tabulate

from vqae.config import DataConfig
from vqae.data.bands import S2_BANDS
from vqae.data.discover import find_patches
from vqae.data.encode import EncodeOptions, collect_jobs, encode
from vqae.data.source import DataSource


def default_archive() -> Path:
    shared = os.environ.get("VQAE_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return base / "s2-real-480.tar.gz"


def make_names_unique(root: Path) -> int:
    """Some SSL4EO patches exist as L2A and L1C under one name; LMDB keys must be unique, so
    later copies get their source folder appended (folder and file names). Returns renames."""
    seen: set[str] = set()
    renamed = 0
    for folder in sorted(p.parent for p in root.rglob("*_B02.tif")):
        name = folder.name
        if name not in seen:
            seen.add(name)
            continue
        new = f"{name}_{folder.parent.name}"
        for f in folder.iterdir():
            f.rename(folder / f.name.replace(name, new, 1))
        folder.rename(folder.with_name(new))
        renamed += 1
    return renamed


def plain_loop(root: Path, out: Path, batch: int = 64) -> None:
    """The baseline: discover, then read band by band with rasterio, one process."""
    env = lmdb.open(str(out), map_size=1 << 30)
    items = []
    for name, patch in find_patches(root, bands=S2_BANDS).items():
        bands = {}
        for band in S2_BANDS:
            with rasterio.open(patch.files[band]) as src:
                bands[band] = src.read(1)
        items.append((name.encode(), st_save(bands)))
        if len(items) >= batch:
            with env.begin(write=True) as txn:
                for k, v in items:
                    txn.put(k, v)
            items = []
    with env.begin(write=True) as txn:
        for k, v in items:
            txn.put(k, v)
    env.close()


def ours(root: Path, out: Path, workers: int) -> None:
    encode(collect_jobs(s2_root=root), out, EncodeOptions(workers=workers, progress=False))


def timed(fn, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    fn(out)
    return time.perf_counter() - start


def lmdb_contents(path: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        contents = {bytes(k): bytes(v) for k, v in txn.cursor()}
    env.close()
    return contents


def bench_encode(root: Path, work: Path, workers: int, repeats: int) -> Path:
    variants = {
        "plain rasterio loop (1 process)": lambda out: plain_loop(root, out),
        "vqae encode --workers 1": lambda out: ours(root, out, 1),
        f"vqae encode --workers {workers}": lambda out: ours(root, out, workers),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):  # interleaved, so load changes hit every variant alike
        for i, (label, fn) in enumerate(variants.items()):
            times[label].append(timed(fn, work / f"enc{i}"))
    n = len(lmdb_contents(work / "enc0"))
    same = lmdb_contents(work / "enc0") == lmdb_contents(work / "enc2")
    base = statistics.median(times["plain rasterio loop (1 process)"])
    rows = [(label, f"{statistics.median(t):.2f}", f"{n / statistics.median(t):.0f}",
             f"{base / statistics.median(t):.2f}x") for label, t in times.items()]
    print(f"\n(1) encode {n} patches, median of {repeats} (LMDBs byte-identical: {same})")
    print(tabulate(rows, headers=["encoder", "seconds", "patches/s", "vs plain"]))
    ratio = base / statistics.median(times[f"vqae encode --workers {workers}"])
    print(f"encode speed-up, --workers {workers} vs plain loop: {ratio:.2f}x (goal >= 1.8x)")
    return work / "enc2"


def rate(fn, n: int, min_seconds: float = 1.0) -> float:
    """Items per second of fn(i) over whole passes of range(n), at least min_seconds in all."""
    done, start = 0, time.perf_counter()
    while True:
        for i in range(n):
            fn(i)
        done += n
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return done / elapsed


def bench_readers(root: Path, lmdb_path: Path, repeats: int) -> None:
    tiffs = DataSource(DataConfig(path=str(root), format="geotiff")).dataset()
    source = DataSource(DataConfig(path=str(lmdb_path), format="lmdb"))
    fast = source.dataset()
    assert tiffs.names == fast.names
    assert np.array_equal(tiffs[0]["image"].numpy(), fast[0]["image"].numpy())
    env = source.store.env()  # the reader's own handle: one per process and database
    keys = [n.encode() for n in fast.names]

    def ceiling(i: int) -> None:
        with env.begin() as txn:
            st_load(txn.get(keys[i]))

    n = len(keys)
    rates: dict[str, list[float]] = {"GeoTIFF reader": [], "LMDB reader": [],
                                     "ceiling: txn.get + safetensors load": []}
    for _ in range(repeats):
        rates["GeoTIFF reader"].append(rate(tiffs.__getitem__, n, 0.0))
        rates["LMDB reader"].append(rate(fast.__getitem__, n))
        rates["ceiling: txn.get + safetensors load"].append(rate(ceiling, n))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(f"\n(2) readers, {n} patches, one process, median of {repeats}")
    print(tabulate([(k, f"{v:.0f}") for k, v in med.items()], headers=["reader", "patches/s"]))
    lm = med["LMDB reader"]
    print(f"LMDB reader vs GeoTIFF reader: {lm / med['GeoTIFF reader']:.1f}x (goal >= 30x)")
    print(f"LMDB reader vs ceiling: {lm / med['ceiling: txn.get + safetensors load']:.2f} "
          "(goal >= 0.5)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=default_archive())
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.archive.is_file():
        raise SystemExit(f"{args.archive} not found; pass --archive or set VQAE_SHARED_DATA")
    with tempfile.TemporaryDirectory(prefix="bench-encode-") as tmp:
        root, work = Path(tmp) / "tiffs", Path(tmp) / "lmdb"
        with tarfile.open(args.archive) as tar:
            tar.extractall(root, filter="data")
        work.mkdir()
        print(f"{args.archive.name}: unpacked; {make_names_unique(root)} duplicate patch names "
              f"renamed; {os.cpu_count()} cores")
        encoded = bench_encode(root, work, args.workers, args.repeats)
        bench_readers(root, encoded, args.repeats)


if __name__ == "__main__":
    main()
