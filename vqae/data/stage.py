"""Stage a .tar/.tar.gz GeoTIFF archive to node-local disk, once per node.

Several processes (one per GPU) may call `stage_archive` at the same moment: an exclusive file
lock lets exactly one extract while the others wait, and a marker written last tells every later
caller that the folder is complete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tarfile
import tempfile
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


def _extract(archive: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # left over from a killed extraction
    try:
        with tarfile.open(archive) as tar:
            members = check_members(tar, archive)
            tmp.mkdir(parents=True)
            # members are checked above; the "data" filter adds a second guard where available
            extra = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **extra)
    except (tarfile.TarError, EOFError, OSError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"cannot extract archive {archive}: {err}") from err
    except DataError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)  # an incomplete earlier staging without its marker
    tmp.rename(dest)
    (dest / MARKER).write_text(f"{archive.resolve()}\n")  # last: the folder is complete


def stage_archive(archive: str | Path, dest: str | Path) -> Path:
    """Extract `archive` into `dest` unless a complete copy is already there; returns `dest`."""
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DataError(f"archive {archive} does not exist")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (dest / MARKER).is_file():
        return dest
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the others block here until the first one is done
        if not (dest / MARKER).is_file():
            log.info("staging %s to %s", archive, dest)
            _extract(archive, dest)
    return dest
