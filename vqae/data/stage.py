"""Stage a .tar/.tar.gz GeoTIFF archive to node-local disk, once per node.

Several processes (one per GPU) may call `stage_archive` at the same moment: an exclusive file
lock lets exactly one extract while the others wait, and a marker written last tells every later
caller that the folder is complete.

Staging never deletes what the user owns: DEST must be new, empty, or a finished staging of the
same archive. Only our own leftover `DEST.partial` (from a killed run) is ever removed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from vqae.errors import DataError

log = logging.getLogger(__name__)
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MARKER = ".vqae-staged"


def is_archive(path: str | Path) -> bool:
    return str(path).endswith(ARCHIVE_SUFFIXES)


def default_scratch() -> Path:
    for var in ("VQAE_SCRATCH", "SLURM_TMPDIR", "TMPDIR"):
        if os.environ.get(var):
            return Path(os.environ[var])
    return Path(tempfile.gettempdir())


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def check_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    """Reject absolute paths, `..`, links and device files before anything is written."""
    members = tar.getmembers()
    for m in members:
        p = PurePosixPath(m.name)
        if p.is_absolute() or ".." in p.parts:
            raise DataError(f"archive {archive} has an unsafe member {m.name!r} (absolute path "
                            "or '..'); refusing to extract it")
        if not (m.isfile() or m.isdir()):
            raise DataError(f"archive {archive} member {m.name!r} is a link or special file; "
                            "only regular files and folders are extracted")
    return members


def _partial_pattern(dest: Path) -> re.Pattern:
    """The names mkdtemp gives our temporary folders beside DEST: `.<DEST>.<8 chars>.partial`."""
    return re.compile(rf"\.{re.escape(dest.name)}\.[a-z0-9_]{{8}}\.partial")


def _extract(archive: Path, dest: Path) -> None:
    """Extract into a fresh hidden folder beside DEST (never a name a user might hold), then
    rename it to DEST. Runs under the lock: a leftover of a killed extraction is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    ours = _partial_pattern(dest)
    for stale in dest.parent.iterdir():
        if ours.fullmatch(stale.name) and stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        with tarfile.open(archive) as tar:
            members = check_members(tar, archive)
            # members are checked above; the "data" filter adds a second guard where available
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **extra)
        (tmp / MARKER).write_text(f"{archive.resolve()}\n")  # last: the folder is complete
    except (tarfile.TarError, EOFError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot extract archive {archive}: {err}") from err
    except DataError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        tmp.rename(dest)  # atomic, and fails unless DEST is absent or an empty folder
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot move the extracted archive into {dest}: {err}; give a DEST "
                        f"that does not exist yet, e.g. {dest / archive_stem(archive)}") from err


def _finished(archive: Path, dest: Path) -> bool:
    """True when `dest` is a complete staging of `archive`; refuses one of another archive."""
    marker = dest / MARKER
    if not marker.is_file():
        return False
    held = marker.read_text().strip()
    if held != str(archive.resolve()):
        raise DataError(f"{dest} already holds a staging of another archive ({held}); choose "
                        f"another DEST for {archive}, or remove {dest} if it is no longer needed")
    return True


def _check_free(dest: Path) -> None:
    """Refuse a `dest` that staging would have to replace: it must be new or an empty folder."""
    cwd = Path.cwd().resolve()
    if dest == cwd or dest in cwd.parents:  # also covers "/", the parent of every folder
        raise DataError(f"refusing to stage into {dest}: it is the current folder or one of its "
                        f"parents; give a new folder instead, e.g. {cwd / 'staged'}")
    if dest.exists() and not dest.is_dir():
        raise DataError(f"{dest} is a file, not a folder; choose another DEST")
    if dest.is_dir() and any(dest.iterdir()):
        raise DataError(f"{dest} is not empty and holds no finished staging; choose another "
                        f"DEST (a new or empty folder), or remove {dest} yourself")


@contextmanager
def _locked(dest: Path):
    """Hold an exclusive lock on `DEST.lock`; the other stagers block until the first is done."""
    path = dest.with_name(dest.name + ".lock")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        path.touch()  # unlike open(path, "w"), never truncates a file that is already there
    except OSError as err:
        raise DataError(f"cannot create the lock file {path}: {err}; choose a DEST in a "
                        "writable folder") from err
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def stage_archive(archive: str | Path, dest: str | Path) -> Path:
    """Extract `archive` into `dest` unless a complete copy is already there; returns `dest`.

    Raises DataError for a missing, corrupt or unsafe archive, and for a `dest` that holds
    anything else (files, another archive's staging) or is the current folder or a parent of it.
    """
    archive, given = Path(archive), Path(dest)
    dest = given.resolve()  # ".", ".." and symlinks become the folder they name
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist")
    if _finished(archive, dest):
        return given
    _check_free(dest)
    with _locked(dest):
        if not _finished(archive, dest):  # another process may have finished while we waited
            _check_free(dest)
            log.info("staging %s to %s", archive, dest)
            _extract(archive, dest)
    return given
