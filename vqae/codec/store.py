"""Where bitstreams and decompressed patches live: folders of `.vqz`, LMDBs of bitstreams,
BigEarthNet GeoTIFF trees and rico-hdl LMDBs.

A compressed folder or LMDB holds `manifest.json` (checkpoint path, model fingerprint, depth), so
`vqae decompress` finds its model without being told.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vqae.atomic import write_atomic
from vqae.data.lmdb_store import LmdbStore, is_lmdb
from vqae.errors import DataError

SUFFIX = ".vqz"
MANIFEST = "manifest.json"
LMDB_FILES = {"data.mdb", "lock.mdb"}
BATCH = 256  # records per LMDB transaction


def check_name(name: str, source: object) -> str:
    """A patch name usable as a file name (it becomes <name>.vqz or a folder)."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DataError(f"patch name {name!r} from {source} cannot be a file name; rename it")
    return name


def prepare_folder(out: Path, allowed: set[str], suffix: str, overwrite: bool) -> None:
    """Create OUT; an existing non-empty OUT needs --overwrite and may then hold only files we
    write (`allowed` names, `*suffix`), which are removed so no stale patch stays behind."""
    if out.exists() and not out.is_dir():
        raise DataError(f"OUT {out} is a file; choose a folder")
    entries = sorted(out.iterdir()) if out.is_dir() else []
    if entries and not overwrite:
        raise DataError(f"OUT {out} already exists and is not empty; pass --overwrite to "
                        "replace it or choose another OUT")
    others = [p.name for p in entries
              if p.name not in allowed and not (suffix and p.name.endswith(suffix))]
    if others:
        raise DataError(f"OUT {out} holds other files ({', '.join(others[:3])}); --overwrite "
                        "replaces only a codec output, choose an empty or new OUT")
    for p in entries:
        p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_manifest(folder: Path, manifest: dict) -> None:
    write_atomic(folder / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())


def read_manifest(path: Path) -> dict | None:
    """The manifest of a compressed folder or LMDB, or of the folder holding a .vqz file."""
    folder = path if path.is_dir() else path.parent
    file = folder / MANIFEST
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{file} is unreadable ({err}); pass --ckpt CKPT instead") from err


class BitstreamSink:
    """`<name>.vqz` files in a folder, or records of an LMDB keyed by patch name."""

    def __init__(self, out: Path, lmdb: bool, overwrite: bool):
        self.out, self.lmdb = out, lmdb
        allowed = LMDB_FILES | {MANIFEST}
        prepare_folder(out, allowed, "" if lmdb else SUFFIX, overwrite)
        # vqae.data.encode imports rasterio: only when writing (training imports this module)
        from vqae.data.encode import LmdbWriter

        self.writer = LmdbWriter(out) if lmdb else None
        self.pending: list[tuple[bytes, bytes]] = []

    def write(self, name: str, data: bytes) -> None:
        check_name(name, "the input")
        if self.writer is None:
            write_atomic(self.out / f"{name}{SUFFIX}", data)
            return
        self.pending.append((name.encode("utf-8"), data))
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.write(self.pending)
            self.pending = []

    def close(self, manifest: dict) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
        write_manifest(self.out, manifest)


def bitstream_source(path: Path) -> tuple[list[str], Iterator[tuple[str, bytes]]]:
    """(patch names, iterator of (name, file bytes)) of a .vqz file, a folder or an LMDB."""
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a .vqz file, a folder of them or an "
                        "LMDB written by `vqae compress`")
    if is_lmdb(path):
        return _lmdb_source(path)
    files = [path] if path.is_file() else sorted(path.glob(f"*{SUFFIX}"))
    if not files:
        raise DataError(f"{path} holds no {SUFFIX} file; pass the OUT of `vqae compress`")
    names = [f.name[: -len(SUFFIX)] if f.name.endswith(SUFFIX) else f.stem for f in files]
    return names, ((n, f.read_bytes()) for n, f in zip(names, files))


def _lmdb_source(path: Path) -> tuple[list[str], Iterator[tuple[str, bytes]]]:
    store = LmdbStore(path)
    names = store.keys()

    def records() -> Iterator[tuple[str, bytes]]:
        try:
            for name in names:
                data = store.get(name)
                yield name, bytes(data or b"")
        finally:
            store.close()

    return names, records()


class TiffSink:
    """BigEarthNet v1 layout: `DIR/<patch>/<patch>_<band>.tif`, one uint16 band per file."""

    def __init__(self, out: Path, overwrite: bool):
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise DataError(f"OUT {out} already exists and is not empty; pass --overwrite to "
                            "write over its files or choose another OUT")
        out.mkdir(parents=True, exist_ok=True)
        self.out = out

    def write(self, name: str, bands: dict[str, np.ndarray]) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        folder = self.out / check_name(name, "the input")
        folder.mkdir(exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # values only, no CRS
            for band, arr in bands.items():
                profile = {"driver": "GTiff", "height": arr.shape[0], "width": arr.shape[1],
                           "count": 1, "dtype": arr.dtype.name}
                with rasterio.open(folder / f"{name}_{band}.tif", "w", **profile) as dst:
                    dst.write(arr[None])

    def close(self) -> None:
        pass


class RicoLmdbSink:
    """rico-hdl LMDB: key = patch, value = safetensors {band: native array}; built in OUT (or
    OUT.tmp swapped in at the end with --overwrite), as `vqae encode` does."""

    def __init__(self, out: Path, overwrite: bool):
        from vqae.data.encode import LmdbWriter, prepare_out  # rasterio: only when writing

        self.out = out
        self.target = prepare_out(out, resume=False, overwrite=overwrite)
        self.writer = LmdbWriter(self.target)
        self.pending: list[tuple[bytes, bytes]] = []

    def write(self, name: str, bands: dict[str, np.ndarray]) -> None:
        from safetensors.numpy import save

        self.pending.append((name.encode("utf-8"), save(bands)))
        if len(self.pending) >= BATCH:
            self.writer.write(self.pending)
            self.pending = []

    def close(self) -> None:
        from vqae.data.encode import replace_lmdb

        self.writer.write(self.pending)
        self.writer.close()
        if self.target != self.out:
            replace_lmdb(self.target, self.out)
