"""Checkpoint save and load of a full training state: this tree's vqae vs another tree's.

The state is what `vqae train` checkpoints for the model of configs/base.yaml (13.1 M parameters,
built on the CPU): model, AdamW state after one step (both moments), LambdaLR, RNG states,
position and config, about 160 MB. Per variant:

  * save: `vqae.checkpoint.manager.save_checkpoint` (write to a temp file, fsync, rename; this tree:
    one safetensors file, a tree before it: torch.save);
  * load: what a resume reads: `read_checkpoint` (this tree: safetensors read with pread and
    the JSON state tree decoded, then the structural check of a training checkpoint; a tree
    before the format change: torch.load, with weights_only=True or False as it did, and its
    key check).

Each repeat runs one process per tree with PYTHONPATH set to that tree (after an untimed
warm-up save and load of a small state, --inner rounds of one save and one load of that file,
their median); the trees alternate, in swapped order every repeat, so load changes on a shared
machine hit both alike. Figures are medians over --repeats; the ratio is this tree / baseline
(below 1: faster).

    git worktree add /tmp/base-ckpt 4fe91c4
    python benchmarks/bench_checkpoint.py --baseline /tmp/base-ckpt --repeats 7 --inner 3
    git worktree remove /tmp/base-ckpt
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def training_state(config: str) -> dict:
    """The state `Trainer.state()` checkpoints, for the model of `config`."""
    import torch

    from vqae.checkpoint.manager import capture_rng_state
    from vqae.config import load_config, to_dict
    from vqae.models import build_model
    from vqae.training.schedule import build_optimizer

    cfg = load_config([config], [])
    torch.manual_seed(0)
    model = build_model(cfg)
    opt, sched = build_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt.step()
    sched.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": None, "rng": capture_rng_state(),
            "position": {"step": 1, "epoch": 0, "consumed": 1}, "config": to_dict(cfg)}


def resume_reader():
    """read_checkpoint as a resume calls it in the tree imported."""
    from vqae.checkpoint.manager import read_checkpoint

    if "training" in inspect.signature(read_checkpoint).parameters:
        return lambda path: read_checkpoint(path, training=True)
    return read_checkpoint


def worker(config: str, folder: str, inner: int) -> None:
    """Measurements in this process's tree; prints {"save": s, "load": s, "bytes": n}, each time
    the median of `inner` save-then-load rounds."""
    from vqae.checkpoint.manager import load_checkpoint, save_checkpoint

    state, read = training_state(config), resume_reader()
    path = Path(folder) / f"bench-{os.getpid()}.pt"
    saves, loads = [], []
    try:
        save_checkpoint(path, {"w": state["model"]["normalize.mean"]})  # warm-up: first calls
        load_checkpoint(path)
        for _ in range(inner):
            start = time.perf_counter()
            save_checkpoint(path, state)
            saves.append(time.perf_counter() - start)
            start = time.perf_counter()
            loaded = read(path)
            loads.append(time.perf_counter() - start)
            assert loaded["model"].keys() == state["model"].keys()
            del loaded
        print(json.dumps({"save": statistics.median(saves), "load": statistics.median(loads),
                          "bytes": path.stat().st_size}))
    finally:
        path.unlink(missing_ok=True)


def measure(tree: Path, config: str, folder: str, inner: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--worker", "--config", config,
                           "--folder", folder, "--inner", str(inner)], env=env, cwd=tree, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"worker for {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="root of the tree to compare with")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--config", default=str(ROOT / "configs" / "base.yaml"))
    parser.add_argument("--inner", type=int, default=3,
                        help="save-then-load rounds per process (their median is its figure)")
    parser.add_argument("--folder", default=tempfile.gettempdir(), help="where files are written")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.config, args.folder, args.inner)
    trees = {"this tree": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for i in range(args.repeats):
        order = list(trees) if i % 2 == 0 else list(reversed(trees))
        for name in order:
            runs[name].append(measure(trees[name], args.config, args.folder, args.inner))
    med = {name: {k: statistics.median(r[k] for r in rows) for k in ("save", "load", "bytes")}
           for name, rows in runs.items()}
    print(f"{args.repeats} repeats x {args.inner} rounds, median seconds (file size in MB):")
    for name, m in med.items():
        print(f"  {name:10s} save {m['save']:.3f}  load {m['load']:.3f}  "
              f"({m['bytes'] / 1e6:.1f} MB)  [{trees[name]}]")
    if "baseline" in med:
        new, old = med["this tree"], med["baseline"]
        print(f"  ratio this/baseline: save {new['save'] / old['save']:.3f}  "
              f"load {new['load'] / old['load']:.3f}")


if __name__ == "__main__":
    main()
