"""Training throughput (patches/s): the real LMDB loader vs in-memory batches, in one process.

Both variants drive the same `vqae.train.Trainer` (same model, optimizer, augmentation, AMP) through
`train_step`; the only difference is where each batch comes from:

  * LMDB loader: `trainer.batches()`, i.e. the training DataLoader over the LMDB (workers read,
    decode and resample patches while the model trains);
  * in memory: a pre-built list of batches of the same shape (real patches read once up front,
    so the model does exactly the same work and only the loader cost differs).

The two run interleaved (--rounds rounds of --steps steps each, after --warmup steps), so load
changes on a shared machine hit both alike; each figure is the median over rounds. The last
line is the ratio LMDB / in-memory (goal on a GPU: >= 0.95, the loader never starves training).

Unless --no-readme-job, it first times the README's main job (minus install) on this machine:
`python -m vqae train --config configs/debug.yaml --run.tracker=none --run.dir=<tmp>`.

--data takes an LMDB, or a .tar/.tar.gz of GeoTIFFs (default: ../shared/data/s2-real-480.tar.gz
when present), which is unpacked and written to a temporary LMDB with `vqae encode` (later
copies of a duplicate patch name are dropped), or "" for the 24-patch sample (its train split
has only 8 patches). Splits are the hash of the patch name unless --data.splits is overridden.

    python benchmarks/bench_train.py                              # debug model, CPU
    python benchmarks/bench_train.py --config configs/base.yaml --device cuda --workers 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch

from vqae.config import load_config
from vqae.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def default_data() -> str:
    shared = os.environ.get("VQAE_SHARED_DATA")
    base = Path(shared) if shared else ROOT.parent / "shared" / "data"
    archive = base / "s2-real-480.tar.gz"
    return str(archive) if archive.is_file() else ""


def drop_duplicate_names(root: Path) -> list[str]:
    """LMDB keys must be unique: drop later copies of a patch folder name (sorted order)."""
    seen: set[str] = set()
    dropped = []
    for folder in sorted({p.parent for p in root.rglob("*_B02.tif")}):
        if folder.name in seen:
            shutil.rmtree(folder)
            dropped.append(str(folder.relative_to(root)))
        else:
            seen.add(folder.name)
    return dropped


def archive_to_lmdb(archive: Path, work: Path, workers: int) -> Path:
    """Unpack `archive` and encode it with the project's own `vqae encode` CLI."""
    tiffs, out = work / "tiffs", work / "train.lmdb"
    with tarfile.open(archive) as tar:
        tar.extractall(tiffs, filter="data")
    dropped = drop_duplicate_names(tiffs)
    cmd = [sys.executable, "-m", "vqae", "encode", "--bigearthnet-s2-root", str(tiffs),
           "--workers", str(max(workers, 1)), "--no-progress", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(tiffs)
    print(f"encoded {archive.name} -> temporary LMDB ({len(dropped)} duplicate-name copies "
          "dropped)")
    return out


def time_readme_job(work: Path) -> float:
    cmd = [sys.executable, "-m", "vqae", "train", "--config", "configs/debug.yaml",
           "--run.tracker=none", f"--run.dir={work / 'readme-run'}"]
    print("$ " + " ".join(cmd), flush=True)
    start = time.perf_counter()
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled"})
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"the README job failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(trainer: Trainer, groups, steps: int) -> float:
    """Patches per second over `steps` optimizer steps, drawing groups from the iterator."""
    sync(trainer.device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        group = next(groups)
        trainer.train_step(group, stats=False)
        seen += sum(len(b["name"]) for b in group)
    sync(trainer.device)
    return seen / (time.perf_counter() - start)


def in_memory_groups(trainer: Trainer, n_batches: int):
    """Cycle forever over n_batches real batches built once, shaped like the loader's."""
    ds, cfg = trainer.train_ds, trainer.cfg
    bs, acc = cfg.data.batch_size, cfg.optim.accumulate
    batches = []
    for b in range(n_batches):
        idx = [(b * bs + i) % len(ds) for i in range(bs)]
        items = [ds[i] for i in idx]
        image = torch.stack([it["image"] for it in items])
        if trainer.device.type == "cuda" and cfg.data.pin_memory:
            image = image.pin_memory()
        batches.append({"image": image, "name": [it["name"] for it in items]})
    i = 0
    while True:
        yield [batches[(i + k) % n_batches] for k in range(acc)]
        i += acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/debug.yaml")
    parser.add_argument("--data", default=default_data(),
                        help="LMDB, .tar/.tar.gz of GeoTIFFs, or '' for the 24-patch sample")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each variant first")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    parser.add_argument("--workers", type=int, default=None, help="default: the config's")
    parser.add_argument("--no-readme-job", action="store_true",
                        help="skip timing `python -m vqae train --config configs/debug.yaml`")
    args, overrides = parser.parse_known_args()
    os.environ["WANDB_MODE"] = "disabled"
    os.chdir(ROOT)

    print(f"machine: {os.cpu_count()} cores; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads"
          + (f"; {torch.cuda.get_device_name()}" if args.device == "cuda" else ""))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        work = Path(tmp)
        readme_s = None if args.no_readme_job else time_readme_job(work)
        if readme_s is not None:
            print(f"README main job (vqae train, configs/debug.yaml, no install): "
                  f"{readme_s:.1f} s wall", flush=True)

        data = args.data
        if data and (data.endswith((".tar", ".tar.gz", ".tgz"))):
            data = str(archive_to_lmdb(Path(data), work, args.workers or 2))
        ov = [f"data.path={data}", f"run.device={args.device}", "run.tracker=none",
              f"run.dir={work / 'bench-run'}"]
        if args.batch_size:
            ov.append(f"data.batch_size={args.batch_size}")
        if args.workers is not None:
            ov.append(f"data.num_workers={args.workers}")
        cfg = load_config([args.config], ov + [o.lstrip("-") for o in overrides])
        trainer = Trainer(cfg)
        d, n_train = cfg.data, len(trainer.train_ds)
        print(f"config {args.config}: {trainer.model.summary()}")
        print(f"data: {data or 'the 24-patch sample'} ({n_train} train patches), batch "
              f"{d.batch_size} x accumulate {cfg.optim.accumulate}, {d.num_workers} loader "
              f"workers, device {trainer.device}, amp {cfg.train.amp}")

        loader = trainer.batches()
        memory = in_memory_groups(trainer, max(1, min(8, n_train // d.batch_size)))
        run_steps(trainer, loader, args.warmup)  # k-means init, worker start-up, allocator
        run_steps(trainer, memory, args.warmup)
        rates: dict[str, list[float]] = {"LMDB loader": [], "in-memory batches": []}
        for _ in range(args.rounds):
            rates["LMDB loader"].append(run_steps(trainer, loader, args.steps))
            rates["in-memory batches"].append(run_steps(trainer, memory, args.steps))
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(f"\ntraining throughput, {args.steps} steps x {args.rounds} rounds each, "
              "interleaved; median (all rounds)")
        for k, v in rates.items():
            print(f"  {k:18s} {med[k]:8.1f} patches/s   ("
                  + ", ".join(f"{r:.1f}" for r in v) + ")")
        ratio = med["LMDB loader"] / med["in-memory batches"]
        print(f"ratio LMDB / in-memory: {ratio:.3f} (goal on GPU >= 0.95)")


if __name__ == "__main__":
    main()
