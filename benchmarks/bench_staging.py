"""Staging s2-real-480.tar.gz (55 MB, 89 MB unpacked, 6,245 files) to node-local disk.

What a Slurm job pays before training (slurm_launcher runs `vqae stage` once per node):
(1) `vqae stage ARCHIVE DEST` into a fresh folder (the first job on a node),
(2) the same call again, finding DEST staged (every later job or task on that node),
side by side with `tar -xzf` of the same archive into a fresh folder (the floor for (1)) and
`vqae stage --help` (the command's start-up: python, argument parsing, imports).

Every variant runs as a new process, interleaved, in a fresh temp folder (--scratch, default the
system temp dir); each figure is the median of --repeats runs.

    python benchmarks/bench_staging.py [--archive PATH] [--scratch DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tabulate import tabulate


def default_archive() -> Path:
    shared = os.environ.get("VQAE_SHARED_DATA")
    base = Path(shared) if shared else Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return base / "s2-real-480.tar.gz"


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_round(archive: Path, scratch: Path) -> dict[str, float]:
    vqae = [sys.executable, "-m", "vqae"]
    work = Path(tempfile.mkdtemp(prefix="bench-staging-", dir=scratch))
    try:
        (work / "tar").mkdir()
        times = {"tar -xzf (fresh)": timed(["tar", "-xzf", str(archive), "-C", str(work / "tar")])}
        dest = work / "staged" / "s2-real-480"
        times["vqae stage (fresh)"] = timed([*vqae, "stage", str(archive), str(dest)])
        assert (dest / ".vqae-staged").is_file()
        times["vqae stage (already staged)"] = timed([*vqae, "stage", str(archive), str(dest)])
        times["vqae stage --help (start-up)"] = timed([*vqae, "stage", "--help"])
        return times
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=default_archive())
    parser.add_argument("--scratch", type=Path, default=Path(tempfile.gettempdir()),
                        help="node-local folder to stage into (default: the system temp dir)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    if not args.archive.is_file():
        sys.exit(f"archive {args.archive} not found (set VQAE_SHARED_DATA or pass --archive)")
    rounds = [one_round(args.archive, args.scratch) for _ in range(args.repeats)]
    names = list(rounds[0])
    median = {n: statistics.median(r[n] for r in rounds) for n in names}
    rows = [[n, f"{median[n]:.3f}", f"{min(r[n] for r in rounds):.3f}",
             f"{median[n] / median['tar -xzf (fresh)']:.2f}"] for n in names]
    size = args.archive.stat().st_size / 1e6
    print(f"{args.archive.name} ({size:.0f} MB) staged into {args.scratch}, "
          f"median of {args.repeats} runs, {os.cpu_count()} CPUs")
    print(tabulate(rows, headers=["step", "median s", "min s", "vs tar"], disable_numparse=True))


if __name__ == "__main__":
    main()
