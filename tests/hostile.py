"""Hostile inputs built in tmp_path, and a way to run `vqae` on them with bounded memory."""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ADDRESS_SPACE = 3 << 30  # a regression fails with MemoryError here, not by eating the machine


def tiff_bomb(path: Path, width: int = 40000, height: int = 40000, rows_per_strip: int = 1000,
              shared: bool = True, tile: int | None = None) -> Path:
    """A valid little-endian deflate uint16 TIFF declaring width x height zeros. With `shared`
    every strip points at the same compressed bytes (a 40000 x 40000 bomb is ~80 KB);
    without, each strip is stored (rows_per_strip=1 gives the issue's ~4 MB file). With
    `tile`, one tile of tile x tile pixels (its data a token 16 bytes) instead of strips."""
    if tile is not None:
        chunks, strip = 1, zlib.compress(bytes(16))
        layout = [(322, 4, 1, tile), (323, 4, 1, tile), (324, 4, 1, None), (325, 4, 1, None)]
    else:
        chunks = -(-height // rows_per_strip)
        strip = zlib.compress(bytes(width * rows_per_strip * 2), 9)
        layout = [(273, 4, chunks, None), (278, 4, 1, rows_per_strip), (279, 4, chunks, None)]
    tags = sorted([(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 16), (259, 3, 1, 8),
                   (262, 3, 1, 1), (277, 3, 1, 1), (284, 3, 1, 1), (339, 3, 1, 1), *layout])
    offsets_at = 8 + 2 + 12 * len(tags) + 4
    counts_at = offsets_at + 4 * chunks
    data_at = counts_at + 4 * chunks
    offsets = [data_at] * chunks if shared else [data_at + i * len(strip) for i in range(chunks)]
    entries = b""
    for tag, typ, count, value in tags:
        if tag in (273, 324):
            value = offsets_at if chunks > 1 else offsets[0]
        elif tag in (279, 325):
            value = counts_at if chunks > 1 else len(strip)
        packed = struct.pack("<I", value) if typ == 4 else struct.pack("<HH", value, 0)
        entries += struct.pack("<HHI", tag, typ, count) + packed
    with open(path, "wb") as f:
        f.write(b"II*\x00" + struct.pack("<I", 8))
        f.write(struct.pack("<H", len(tags)) + entries + struct.pack("<I", 0))
        f.write(struct.pack(f"<{chunks}I", *offsets))
        f.write(struct.pack(f"<{chunks}I", *[len(strip)] * chunks))
        f.write(strip if shared else strip * chunks)
    return path


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_vqae(*args, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m vqae ARGS` in a child with ADDRESS_SPACE of memory; stdout, stderr as text."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "vqae", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, check=False, timeout=timeout,
                          preexec_fn=_limit_memory)


def one_line(proc: subprocess.CompletedProcess, command: str) -> str:
    """The message of the single error line a failed command must print (rc 1 or 2, not a
    signal such as SIGBUS's 135 / -7)."""
    err = proc.stderr.strip()
    assert proc.returncode in (1, 2), (proc.returncode, err[-2000:])
    lines = [line for line in err.splitlines() if line.startswith(f"vqae {command}: error: ")]
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    return lines[0]


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -c CODE` in a child with ADDRESS_SPACE of memory (a SIGBUS kills only it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=False, timeout=timeout, preexec_fn=_limit_memory)


def truncated_copy(lmdb: Path, dest: Path, size: int) -> Path:
    """A copy of an LMDB folder whose data.mdb is cut to `size` bytes."""
    dest.mkdir()
    data = (lmdb / "data.mdb").read_bytes()
    (dest / "data.mdb").write_bytes(data[:size])
    return dest
