"""GeoTIFF trees -> one LMDB of safetensors, in the rico-hdl (rs-tensor-encoder) format.

key = patch name (utf-8); value = safetensors bytes of {band: array} at native size and stored
dtype. Worker processes read and serialize whole patches; the parent is the only writer and
commits batches of whole patches, so a killed run, or one whose disk fills up, leaves only
complete entries and `resume` skips them; `overwrite` builds the new LMDB in a temporary folder
beside OUT and swaps it in at the end (vqae.io.outputs: the policy of every output folder).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import NamedTuple

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from safetensors.numpy import save as st_save
from tqdm import tqdm

from vqae.data.bands import S1_BANDS, S2_BANDS
from vqae.data.discover import PatchFiles, find_patches, require_folder
from vqae.data.geotiff import load_patch_bands, read_tiff, read_tiff_fast
from vqae.data.hyspecnet import find_hyspecnet, read_hyspecnet
from vqae.data.lmdb_store import LmdbStore, is_lmdb
from vqae.data.lmdb_writer import DEFAULT_MAP_SIZE, LmdbWriter, OutWriteError, is_lmdb_file
from vqae.data.shards import Shard
from vqae.errors import DataError
from vqae.io.atomic import write_atomic
from vqae.io.outputs import Output
from vqae.io.stops import StopFlag, Stopped, ignore_stop_signals, stop_signals_blocked

SENSOR_BANDS = {"s2": S2_BANDS, "s1": S1_BANDS}
# GDAL lists a TIFF's folder on open to look for sidecar files; BigEarthNet has none.
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}
IN_FLIGHT = 4  # chunks per worker submitted ahead of the consumer


@dataclass(frozen=True, slots=True)
class EncodeTask:
    """One patch to encode: BigEarthNet bands of a sensor, or a HySpecNet spectral image."""

    key: str
    sensor: str  # s2 | s1 | hyspecnet
    source: PatchFiles | Path


# a task list, or the function that lists it
EncodeTasks = list[EncodeTask] | Callable[[], list[EncodeTask]]


class Encoded(NamedTuple):
    key: str
    data: bytes | None  # safetensors bytes; None when the patch could not be read
    bands: int
    error: str | None  # names the file and what is wrong


@dataclass
class EncodeReport:
    written: int = 0
    present: int = 0  # already in OUT (resume)
    bands: int = 0
    bytes: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (patch, reason)
    total: int = 0  # patches to encode (of the shard), present ones included


def bigearthnet_jobs(root: str | Path, sensor: str) -> list[EncodeTask]:
    patches = find_patches(root, bands=SENSOR_BANDS[sensor])  # drops reference-map folders
    return [EncodeTask(name, sensor, patch) for name, patch in patches.items()]


def hyspecnet_jobs(root: str | Path) -> list[EncodeTask]:
    return [EncodeTask(name, "hyspecnet", path) for name, path in find_hyspecnet(root).items()]


def collect_jobs(s2_root=None, s1_root=None, hyspecnet_root=None) -> list[EncodeTask]:
    """All patches of the given roots, sorted by key; a key found twice is an error."""
    jobs: dict[str, EncodeTask] = {}
    parts = []
    for root, arg in ((s2_root, "--bigearthnet-s2-root"), (s1_root, "--bigearthnet-s1-root"),
                      (hyspecnet_root, "--hyspecnet")):
        if root:
            require_folder(root, arg, "pass the folder holding that dataset's patches")
    if s2_root:
        parts.append(bigearthnet_jobs(s2_root, "s2"))
    if s1_root:
        parts.append(bigearthnet_jobs(s1_root, "s1"))
    if hyspecnet_root:
        parts.append(hyspecnet_jobs(hyspecnet_root))
    for job in (j for part in parts for j in part):
        if job.key in jobs:
            raise DataError(
                f"patch {job.key} is found under two roots ({jobs[job.key].sensor} and "
                f"{job.sensor}); LMDB keys must be unique, pass each root once"
            )
        jobs[job.key] = job
    return [jobs[k] for k in sorted(jobs)]


def read_job(job: EncodeTask, fast: bool = True) -> dict[str, np.ndarray]:
    """Band name -> array exactly as stored (no resampling, no casting); `fast=False` reads
    every file with rasterio (verification uses it, to be independent of the fast path)."""
    if job.sensor == "hyspecnet":
        return read_hyspecnet(job.source)
    read = read_tiff_fast if fast else read_tiff
    return load_patch_bands(job.source, SENSOR_BANDS[job.sensor], read=read)


def encode_chunk(jobs: list[EncodeTask], fast: bool = True) -> list[Encoded]:
    """Worker: read and serialize a few patches; bad ones come back with an error, not a raise."""
    out = []
    with rasterio.Env(**GDAL_OPTIONS), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # values are all we keep
        for job in jobs:
            try:
                bands = read_job(job, fast)
            except DataError as err:
                out.append(Encoded(job.key, None, 0, str(err)))
                continue
            out.append(Encoded(job.key, st_save(bands), len(bands), None))
    return out


@contextmanager
def chunk_mapper(workers: int):
    """`map(fn, chunks)` over worker processes, or in this process when workers <= 1; results
    in order. At most IN_FLIGHT chunks per worker are queued or done but not yet taken, so
    memory holds a few chunks whatever the dataset size, however slow the consumer (an
    executor's own map submits every chunk at once and keeps each result until taken).

    Enter it before opening LMDB or starting threads (tqdm): the workers are forked here. They
    ignore TERM/USR1/INT (the parent stops them: on exit the queued chunks are cancelled and
    the running ones finish), so a signal to the process group reaches the parent alone.
    """
    if workers <= 1:
        yield map
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"),
                               initializer=ignore_stop_signals)

    def imap(fn, chunks):
        chunks, pending = iter(chunks), deque()
        pending.extend(pool.submit(fn, c) for c in islice(chunks, IN_FLIGHT * workers))
        while pending:
            result = pending.popleft().result()
            pending.extend(pool.submit(fn, c) for c in islice(chunks, 1))
            yield result

    try:
        with stop_signals_blocked():  # every worker forks now: none dies of an early signal,
            pool.submit(int).result()  # and none inherits what the caller builds next
        yield imap
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def chunked(jobs: list[EncodeTask], size: int = 8) -> Iterator[list[EncodeTask]]:
    return (jobs[i : i + size] for i in range(0, len(jobs), size))


def present_keys(out: Path) -> set[str]:
    """Keys already in OUT (resume), each checked to be utf-8 with a safetensors header, so
    that a damaged LMDB is reported, not completed."""
    if not is_lmdb(out):
        return set()
    with LmdbStore(out) as store:  # closed before the writer opens the same file
        return {key for key, _ in store.headers()}  # headers parsed: each one is checked


def skipped_path(out: Path) -> Path:
    return out.with_name(out.name + ".skipped.tsv")


class BadPatchError(DataError):
    """A patch that cannot be encoded (missing band, corrupt TIFF, wrong shape)."""


@dataclass
class EncodeOptions:
    workers: int = 1  # reader processes; <= 1 reads in this process
    batch_size: int = 64  # patches per write transaction
    skip_bad: bool = False  # skip unreadable patches instead of stopping
    progress: bool = True  # tqdm bar on stderr


def _write_all(imap, jobs: list[EncodeTask], writer: LmdbWriter, opts: EncodeOptions,
               report: EncodeReport, stop: StopFlag) -> None:
    """Commit whole batches of patches until done, a bad patch, or a stop signal."""
    with tqdm(total=len(jobs), unit="patch", disable=not opts.progress, smoothing=0.1) as bar:
        for encoded in (e for chunk in imap(encode_chunk, chunked(jobs)) for e in chunk):
            bar.update(1)
            if encoded.error is not None:
                if not opts.skip_bad:
                    writer.flush()  # keep the complete patches read so far
                    raise BadPatchError(encoded.error)
                report.skipped.append((encoded.key, encoded.error))
                continue
            writer.put(encoded.key, encoded.data)
            report.written += 1
            report.bands += encoded.bands
            report.bytes += len(encoded.data)
            if stop.requested:
                writer.flush()
                return
        writer.flush()


SKIPPED_HEADER = "patch\treason"


def _is_skipped_list(path: Path) -> bool:
    """Whether `path` is a regular file that an earlier encode wrote (its header line)."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(len(SKIPPED_HEADER) + 1) == (SKIPPED_HEADER + "\n").encode()


def write_skipped(out: Path, skipped: list[tuple[str, str]]) -> None:
    """OUT.skipped.tsv, written whole or not at all (a temporary file renamed over it)."""
    path = skipped_path(out)
    lines = [SKIPPED_HEADER] + [f"{k}\t{' '.join(r.split())}" for k, r in skipped]
    try:
        if not skipped:
            if _is_skipped_list(path):
                path.unlink()  # a list from an earlier run would be stale
            return
        write_atomic(path, "\n".join(lines) + "\n")
    except OSError as err:
        raise DataError(f"cannot update {path} ({err.strerror}); the LMDB {out} is complete; "
                        "free space or fix that path, then rerun with --resume --skip-bad to "
                        "write the list of skipped patches") from err


def _failure_hint(err: DataError, out: Path, replacing: bool) -> DataError:
    """One line: what failed, what became of OUT, and how to go on."""
    if replacing:
        kept, again = f"{out} was left unchanged", "--overwrite"
    else:
        kept, again = f"the patches committed before are kept in {out}", "--resume"
    if isinstance(err, BadPatchError):
        fix = f"fix or remove that patch and rerun with {again}, or pass --skip-bad"
    else:
        fix = f"free space on its disk or move it to a writable one, then rerun with {again}"
    return DataError(f"{err}; {kept}; {fix}")


def _run(target: Path, jobs: EncodeTasks, shard: Shard | None, resume: bool, map_size: int,
         opts: EncodeOptions, stop: StopFlag, report: EncodeReport) -> dict:
    """Encode into `target`; returns the manifest fields learnt from the job list."""
    fields = {}
    with chunk_mapper(opts.workers) as imap:  # the workers fork before the job list exists
        jobs = jobs() if callable(jobs) else jobs
        if shard is not None:  # the parts of one run list the same patches, wherever staged
            fields["source"] = source_digest(jobs)
            jobs = [j for j in jobs if shard.holds(j.key)]
        report.total = len(jobs)
        done = present_keys(target) if resume else set()
        todo = [j for j in jobs if j.key not in done]
        report.present = len(jobs) - len(todo)
        del jobs, done
        writer = LmdbWriter(target, opts.batch_size, map_size)
        try:
            _write_all(imap, todo, writer, opts, report, stop)
        finally:
            writer.close()
    return fields


def encode(jobs: EncodeTasks, out: str | Path, opts: EncodeOptions | None = None, *,
           resume: bool = False, overwrite: bool = False, map_size: int = DEFAULT_MAP_SIZE,
           inputs=(), shard: Shard | None = None) -> EncodeReport:
    """Write every job's patch (of `shard`, if given) into the LMDB at OUT (never one of
    `inputs`, the roots); see the module docstring for guarantees. TERM/USR1/INT commit the
    patches read and stop. `jobs` may be a function that lists them: it then runs after the
    reader workers fork, which so do not inherit (and copy, page by page) a list of 549,488."""
    out, opts = Path(out), opts or EncodeOptions()
    start = time.perf_counter()
    fields = {"command": "encode"}
    if shard is not None:
        fields["shard"] = [shard.index, shard.count]
    output = Output.open(out, "encoded-lmdb", inputs=inputs, overwrite=overwrite,
                         resume=resume, ours=is_lmdb_file, fields=fields, rerun="--resume",
                         resumable=lambda found: _same_shard(found, fields, out))
    report = EncodeReport()
    with StopFlag("committing the patches read, then stopping") as stop:
        try:
            fields |= _run(output.target, jobs, shard, resume, map_size, opts, stop, report)
        except BaseException as err:
            # a replacement is dropped (OUT itself was never touched), so is a new OUT that
            # got nothing (the listing failed)
            output.abort(report.written)
            if isinstance(err, (BadPatchError, OutWriteError)):
                raise _failure_hint(err, out, output.replacing) from err
            raise
        if stop.requested:
            output.abort()
            raise Stopped(_stopped_message(stop, report, report.total, output))
        # still under the flag: a signal now waits for the swap, then is moot (the work is done)
        output.commit(fields | {"patches": report.present + report.written,
                                "skipped": len(report.skipped)})
    write_skipped(out, report.skipped)
    report.seconds = time.perf_counter() - start
    return report


def source_digest(jobs: list[EncodeTask]) -> dict:
    """What every part of a sharded encode must share: the patches listed (count and SHA-1
    of their sorted names), not the roots' paths, which differ between staged nodes."""
    digest = hashlib.sha1()
    for key in sorted(j.key for j in jobs):
        digest.update(key.encode("utf-8", "surrogateescape") + b"\n")
    return {"patches": len(jobs), "names_sha1": digest.hexdigest()}


def _same_shard(found: dict, fields: dict, out: Path) -> None:
    """A resumed OUT holds the same shard (or none), else it would mix two parts."""
    if found.get("shard") != fields.get("shard"):
        def name(v):
            return "no --shard" if v is None else f"--shard {v[0]}/{v[1]}" if isinstance(
                v, list) and len(v) == 2 else repr(v)[:40]
        raise DataError(f"OUT {out} was encoded with {name(found.get('shard'))}, this run has "
                        f"{name(fields.get('shard'))}; resume with the same --shard, or pass "
                        "another OUT")


def _stopped_message(stop: StopFlag, report: EncodeReport, total: int, output: Output) -> str:
    done = report.present + report.written
    if output.replacing:
        kept = f"{output.out} was left unchanged; run again with --overwrite"
    else:
        kept = f"the patches committed are kept in {output.out}; continue with --resume"
    return f"stopped on {stop.signal_name} after {done} of {total} patches; {kept}"
