"""Where bitstreams and decompressed patches live: folders of `.vqz`, LMDBs of bitstreams,
BigEarthNet GeoTIFF trees and rico-hdl LMDBs.

Every output follows `vqae.io.outputs.Output` (never the input, replaced only when vqae wrote it,
built beside the old one, resumable when new). A compressed folder or LMDB's manifest.json
names the checkpoint, fingerprint, depth and band filter: a hint that `vqae decompress` checks
against the files, never trusts.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from vqae.codec import bitstream
from vqae.data.lmdb_store import LmdbStore, is_lmdb
from vqae.data.lmdb_writer import LmdbWriter, is_lmdb_file
from vqae.errors import DataError
from vqae.io.atomic import TEMP_SUFFIX, write_atomic
from vqae.io.outputs import Output
from vqae.io.stops import StopFlag, Stopped

SUFFIX = ".vqz"
REPORT = "patches.csv"  # in a compressed OUT: a row per patch
REPORT_COLUMNS = ("patch", "depth", "band_filter", "bytes", "bpppb", "psnr", "max_error",
                  "max_abs_error")
OLD_REPORT_COLUMNS = 6  # before the enhancement layer: no max_error, max_abs_error


def check_name(name: str, source: object) -> str:
    """A patch name usable as a file name (it becomes <name>.vqz or a folder)."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or "\0" in name:
        raise DataError(f"patch name {name!r} from {source} cannot be a file name; rename it")
    return name


def _temp_leftover(p: Path) -> bool:
    """A hidden temporary file of an atomic write killed midway."""
    return p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)


def _patch_folder(p: Path) -> bool:
    """A folder that TiffSink writes: `<patch>/<patch>_<band>.tif` files and nothing else."""
    if not p.is_dir() or p.is_symlink():
        return False
    return all(f.name.startswith(f"{p.name}_") and f.name.endswith(".tif") and f.is_file()
               and not f.is_symlink() for f in p.iterdir())


class _Sink:
    """An `Output` with an optional LMDB writer: `close` completes it, `stop` (after an error
    or a signal) keeps the whole patches written, marked incomplete, or drops a replacement
    so that the old OUT stays."""

    def __init__(self, output: Output, lmdb: bool):
        self.output, self.target = output, output.target
        self.lmdb = LmdbWriter(self.target) if lmdb else None
        self.committed = False

    def _close_writer(self) -> None:
        if self.lmdb is not None:
            self.lmdb.close()
            self.lmdb = None

    def close(self, manifest: dict) -> None:
        self._close_writer()
        self.output.commit(manifest)
        self.committed = True

    def stop(self, manifest: dict) -> None:
        try:
            if not self.output.replacing:
                self._close_writer()
                self.output.mark(manifest, complete=False)
        finally:
            self.output.abort(manifest.get("patches"))


@contextmanager
def guarded(sink: _Sink, fields: dict, done: Callable[[], int], total: int, command: str):
    """Run a command's loop and its commit under a StopFlag (yielded); after an error or a
    stop the sink keeps what is consistent (sink.stop), and a stop raises Stopped (exit status
    75). A stop that arrives once the sink is committed is moot: the work is done."""
    with StopFlag("stopping after this batch") as stop:
        try:
            yield stop
        except BaseException:
            if not sink.committed:
                sink.stop(fields | {"patches": done()})
            raise
        if stop.requested and not sink.committed:
            sink.stop(fields | {"patches": done()})
            raise Stopped(_stopped_message(stop, done(), total, sink, command))


def _stopped_message(stop: StopFlag, done: int, total: int, sink: _Sink, command: str) -> str:
    where = sink.output
    if where.replacing:
        kept = f"{where.out} was left as it was; run the command again"
    else:
        kept = (f"the {done} patch(es) written are kept in {where.out}, marked incomplete"
                + ("; continue with --resume" if command == "compress" else
                   "; run again with --overwrite"))
    return f"stopped on {stop.signal_name} after {done} of {total} patches; {kept}"


class BitstreamSink(_Sink):
    """`<name>.vqz` files in a folder, or records of an LMDB keyed by patch name."""

    def __init__(self, out: Path, lmdb: bool, *, overwrite: bool = False, resume: bool = False,
                 inputs=(), fields: dict | None = None, resumable=lambda manifest: None,
                 extra: tuple[str, ...] = ()):
        """`extra`: names of further files the command writes into OUT (its reports)."""
        files = is_lmdb_file if lmdb else (lambda p: p.name.endswith(SUFFIX) or _temp_leftover(p))

        def entry(p: Path) -> bool:
            return files(p) or (p.name in extra and p.is_file() and not p.is_symlink())

        super().__init__(Output.open(out, "vqz-lmdb" if lmdb else "vqz", inputs=inputs,
                                     overwrite=overwrite, resume=resume, ours=entry,
                                     fields=fields, rerun="--resume", resumable=resumable),
                         lmdb)

    def present(self) -> set[str]:
        """Patches already in OUT (a resumed output): each was written whole."""
        return stored_names(self.target, self.lmdb is not None)

    def write(self, name: str, data: bytes) -> None:
        check_name(name, "the input")
        if self.lmdb is None:
            write_atomic(self.target / f"{name}{SUFFIX}", data)
        else:
            self.lmdb.put(name, data)


class PatchReport:
    """OUT's patches.csv, a row per patch, appended as each batch is written. A resumed OUT
    keeps the rows of the patches it holds (`keep`); a patch whose row was lost (a kill
    between a batch's files and its rows) is compressed again."""

    def __init__(self, path: Path):
        import csv

        new = not path.is_file()
        self.file = open(path, "a", newline="")  # noqa: SIM115 (closed by __exit__ or close)
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(REPORT_COLUMNS)
            self.flush()

    @staticmethod
    def keep(path: Path, present: set[str]) -> set[str]:
        """Rewrite the report with one row per patch that OUT holds (atomically, before any
        new row), streaming it: only the names kept are held; returns them."""
        import csv
        import io

        from vqae.io.atomic import write_with

        kept: set[str] = set()

        def rewrite(f) -> None:
            out = io.TextIOWrapper(f, newline="", write_through=True)
            writer = csv.writer(out)
            writer.writerow(REPORT_COLUMNS)
            for row in PatchReport.rows(path, present):
                writer.writerow(row)
                kept.add(row[0])
            out.detach()

        write_with(path, rewrite, durable=True)
        return kept

    @staticmethod
    def rows(path: Path, present: set[str]):
        """The report's rows of the patches OUT holds, the first of each, streamed; a row cut
        by a kill (too few fields) is left out."""
        import csv

        if not path.is_file():
            return
        seen: set[str] = set()
        with open(path, newline="") as old:
            rows = csv.reader(old)
            next(rows, None)  # the header
            for row in rows:
                if len(row) == OLD_REPORT_COLUMNS:
                    row += ["", ""]
                if len(row) == len(REPORT_COLUMNS) and row[0] in present and row[0] not in seen:
                    seen.add(row[0])
                    yield row

    def write(self, name: str, depth: int, kind: str, nbytes: int, rate: float,
              quality: float, max_error: int | None = None,
              max_abs_error: int | None = None) -> None:
        """One patch's row; max_error is its layer's bound, max_abs_error the largest
        |decoded - original| over its native pixels (empty where not measured)."""
        self.writer.writerow([name, depth, kind, nbytes, f"{rate:.6g}", f"{quality:.4f}",
                              "" if max_error is None else max_error,
                              "" if max_abs_error is None else max_abs_error])

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        if not self.file.closed:
            self.file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def stored_names(folder: Path, lmdb: bool) -> set[str]:
    """The patches of a compressed folder (`<name>.vqz`) or LMDB of bitstreams."""
    if not lmdb:
        return {p.name[: -len(SUFFIX)] for p in folder.glob(f"*{SUFFIX}")}
    if not (folder / "data.mdb").is_file():
        return set()
    with LmdbStore(folder) as store:
        return set(store.keys())


def complete_manifest(out: Path, kind: str) -> dict | None:
    """OUT's manifest when it records a finished output of this kind by vqae, else None: read
    only, so that a --resume with nothing to do changes nothing."""
    from vqae.io.outputs import output_kind, written_by_vqae
    from vqae.io.outputs import read_manifest as read

    if not out.is_dir():
        return None
    found = read(out, fix="it was not written by vqae; choose another OUT")
    if not written_by_vqae(found) or found.get("complete") is not True:
        return None
    return found if output_kind(found, out) == kind else None


def read_manifest(path: Path) -> dict | None:
    """The manifest of a compressed folder or LMDB, or of the folder holding a .vqz file."""
    from vqae.io.outputs import read_manifest as read

    return read(path if path.is_dir() else path.parent)


def bitstream_source(path: Path, check: Callable[[bitstream.Header, str], None] | None = None
                     ) -> tuple[list[str], Iterator[tuple[str, bytes]]]:
    """(patch names, iterator of (name, file bytes)) of a .vqz file, a folder or an LMDB.
    Each file's header passes `check(header, name)` (the codec's checks against its model) and
    its size is checked against the header before the file is read whole."""
    if not path.exists():
        raise DataError(f"{path} does not exist; pass a .vqz file, a folder of them or an "
                        "LMDB written by `vqae compress`")
    if is_lmdb(path):
        return _lmdb_source(path, check)
    if not path.is_dir():
        name = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.stem
        return [name], iter([(name, bitstream.read_file(path, _bound(check, str(path))))])
    with os.scandir(path) as entries:  # names only: a Path a file would cost ~10x more
        names = sorted(e.name[: -len(SUFFIX)] for e in entries if e.name.endswith(SUFFIX))
    if not names:
        raise DataError(f"{path} holds no {SUFFIX} file; pass the OUT of `vqae compress`")
    return names, ((n, bitstream.read_file(f, _bound(check, str(f))))
                   for n in names for f in [path / f"{n}{SUFFIX}"])


def _bound(check, name: str):
    return None if check is None else (lambda header: check(header, name))


def _lmdb_source(path: Path, check) -> tuple[list[str], Iterator[tuple[str, bytes]]]:
    store = LmdbStore(path)
    names = store.keys()

    def records() -> Iterator[tuple[str, bytes]]:
        try:
            for name in names:
                data = store.get(name) or b""  # a record within the file (LmdbStore checks)
                where = f"{path}[{name}]"
                bitstream.check_size(data[: bitstream.MAX_HEADER_BYTES], len(data), where,
                                     _bound(check, where))
                yield name, data
        finally:
            store.close()

    return names, records()


class TiffSink(_Sink):
    """BigEarthNet v1 layout: `DIR/<patch>/<patch>_<band>.tif`, one uint16 band per file."""

    def __init__(self, out: Path, overwrite: bool, inputs=(), fields: dict | None = None):
        super().__init__(Output.open(out, "decoded-tiff", inputs=inputs, overwrite=overwrite,
                                     ours=_patch_folder, fields=fields), lmdb=False)

    def write(self, name: str, bands: dict[str, np.ndarray], georef=None) -> None:
        """One patch's bands; `georef` (vqae.codec.georef.Georef, from its file) gives each
        band its CRS, geotransform at the band's pixel size, and nodata."""
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        folder = self.target / check_name(name, "the input")
        folder.mkdir(exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # no CRS: values only
            for band, arr in bands.items():
                profile = {"driver": "GTiff", "height": arr.shape[0], "width": arr.shape[1],
                           "count": 1, "dtype": arr.dtype.name,
                           **tiff_georef(georef, arr, f"patch {name}")}
                with rasterio.open(folder / f"{name}_{band}.tif", "w", **profile) as dst:
                    dst.write(arr[None])


def tiff_georef(georef, arr: np.ndarray, name: str) -> dict:
    """rasterio profile fields of a decoded band of a georeferenced patch: its pixel size is
    the 10 m grid's times 120 / its size (60 px: 20 m, 20 px: 60 m)."""
    if georef is None:
        return {}
    from vqae.data.bands import PATCH_SIZE

    k = PATCH_SIZE // arr.shape[0] if PATCH_SIZE % arr.shape[0] == 0 else 1
    return georef.rasterio_fields(k, 0, 0, name)


class RicoLmdbSink(_Sink):
    """rico-hdl LMDB: key = patch, value = safetensors {band: native array}."""

    def __init__(self, out: Path, overwrite: bool, inputs=(), fields: dict | None = None):
        super().__init__(Output.open(out, "decoded-lmdb", inputs=inputs, overwrite=overwrite,
                                     ours=is_lmdb_file, fields=fields), lmdb=True)

    def write(self, name: str, bands: dict[str, np.ndarray], georef=None) -> None:
        """rico-hdl's LMDB keeps no georeferencing: `georef` is dropped."""
        from safetensors.numpy import save

        self.lmdb.put(name, save(bands))
