"""Shared fixtures. `shared_data`: the real-data folder ../shared/data next to the repo."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def _shared_data_dir() -> Path:
    env = os.environ.get("VQAE_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (or $VQAE_SHARED_DATA); skipped when absent, a failure when
    VQAE_REQUIRE_DATA=1 (CI always has it)."""
    path = _shared_data_dir()
    if not path.is_dir():
        message = f"real data folder {path} not found (set VQAE_SHARED_DATA to its location)"
        _skip_or_fail(message)
    return path


def skip_or_fail(message: str) -> None:
    """Skip on a user's machine without the real thing; fail in CI (VQAE_REQUIRE_DATA=1)."""
    _skip_or_fail(message)


def _skip_or_fail(message: str) -> None:
    if os.environ.get("VQAE_REQUIRE_DATA") == "1":
        pytest.fail(message + "; VQAE_REQUIRE_DATA=1 requires it")
    pytest.skip(message)


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The real 24-patch BigEarthNet v2 sample (downloaded once into the user cache)."""
    from vqae.data.sample import ensure_sample
    from vqae.errors import DataError

    try:
        return ensure_sample()
    except DataError as err:
        _skip_or_fail(f"sample data unavailable: {err}")


@pytest.fixture
def fake_tree(tmp_path):
    """Four seeded fake S2 patches in the v1 layout; returns (root, written arrays)."""
    from tests.fakes import write_fake_tree

    root = tmp_path / "tiffs"
    return root, write_fake_tree(root, n=4, layout="v1", seed=0)


@pytest.fixture
def small_disk(tmp_path):
    """Factory of real size-limited filesystems: `small_disk("64k")` mounts a tmpfs of that size
    (or a read-only one with `readonly=True`) in tmp_path and returns its folder. Needs root."""
    mounts: list[Path] = []

    def make(size: str = "256k", readonly: bool = False) -> Path:
        target = tmp_path / f"disk{len(mounts)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if readonly else "")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            _skip_or_fail(f"cannot mount a tmpfs at {target} ({res.stderr.strip()}); needs root")
        mounts.append(target)
        return target

    yield make
    for target in mounts:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)
