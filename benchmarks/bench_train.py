"""Training throughput (patches/s): in-memory batches vs the LMDB loader, with the 20/60 m bands
upsampled on the CPU (data.resample=cpu) or on the training device (data.resample=device).

For each batch size (--batch-sizes, default 64 256) it builds two `vqae.training.trainer.Trainer`s from the
same config, one per resample path, and drives their `train_step` from:

  * in memory: a few real batches read once, prepared (copied, upsampled) and kept on the device,
    so the step does exactly the model's work and nothing else: the ceiling;
  * loader, cpu / device resample: `trainer.batches()`, i.e. the training DataLoader over the LMDB
    with its prefetcher (workers read and collate; the copy overlaps the step on CUDA);
  * input only, cpu / device resample: the same batches, prepared on the device but not trained on:
    what each input pipeline can deliver at most.

Before each loader measurement the batches already waiting in the worker queue are taken untimed
(they were read while another variant ran). The variants run interleaved (--rounds rounds of --steps
steps, after --warmup steps each; the two loader paths swap order every round), so load changes on
a shared machine hit all alike; each figure is the median over rounds. Reported per variant: the
ratio to in memory (goal on a GPU: loader >= 0.95), achieved TFLOP/s (forward + backward FLOPs of
one step counted once with FlopCounterMode) and, on CUDA, the peak GPU memory allocated.

Unless --no-readme-job, it first times the README's main job (minus install) on this machine:
`python -m vqae train --config configs/debug.yaml --run.tracker=none --run.dir=<tmp>`.

--data takes an LMDB, or a .tar/.tar.gz of GeoTIFFs (default: ../shared/data/s2-real-480.tar.gz
when present), which is unpacked and written to a temporary LMDB with `vqae encode` (later
copies of a duplicate patch name are dropped), or "" for the 24-patch sample (its train split
has only 8 patches). Splits are the hash of the patch name unless --data.splits is overridden.

    python benchmarks/bench_train.py --no-readme-job --batch-sizes 4 16 --steps 3 --rounds 2 \
        --warmup 1 --workers 1                                     # CPU, ~3 min
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
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from vqae.config import load_config
from vqae.training.trainer import Trainer

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


VARIANTS = ("in memory", "loader, cpu resample", "loader, device resample",
            "input only, cpu resample", "input only, device resample")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_steps(trainer: Trainer, groups, steps: int, train: bool = True) -> float:
    """Patches per second over `steps` groups drawn from the iterator, trained on unless not
    `train` (then only prepared on the device)."""
    sync(trainer.device)
    start, seen = time.perf_counter(), 0
    for _ in range(steps):
        group = next(groups)
        if train:
            trainer.train_step(group, stats=False)
        seen += sum(len(b["name"]) for b in group)
    sync(trainer.device)
    return seen / (time.perf_counter() - start)


def drain(trainer: Trainer, groups) -> None:
    """Take, untimed, the batches the workers read ahead while another variant ran."""
    d = trainer.cfg.data
    ready = 2 * d.num_workers  # the DataLoader's prefetch_factor (2) per worker
    for _ in range(-(-ready // trainer.cfg.optim.accumulate)):
        next(groups)


def in_memory_groups(trainer: Trainer, n_batches: int):
    """Cycle forever over n_batches real batches, prepared once and kept on the device."""
    ds, cfg = trainer.train_ds, trainer.cfg
    bs, acc = cfg.data.batch_size, cfg.optim.accumulate
    batches = []
    for b in range(n_batches):
        batch = default_collate([ds[(b * bs + i) % len(ds)] for i in range(bs)])
        batches.append({"image": trainer.input(batch), "name": batch["name"]})
    i = 0
    while True:
        yield [batches[(i + k) % n_batches] for k in range(acc)]
        i += acc


def flops_per_patch(trainer: Trainer, groups) -> float:
    """Forward + backward FLOPs of one training step, per patch (counted once)."""
    group = next(groups)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step(group, stats=False)
    return counter.get_total_flops() / sum(len(b["name"]) for b in group)


def make_trainer(args, overrides: list[str], data: str, work: Path, batch: int,
                 resample: str) -> Trainer:
    ov = [f"data.path={data}", f"run.device={args.device}", "run.tracker=none",
          f"run.dir={work / f'bench-{resample}-{batch}'}", f"data.batch_size={batch}",
          f"data.resample={resample}"]
    if args.workers is not None:
        ov.append(f"data.num_workers={args.workers}")
    return Trainer(load_config([args.config], ov + overrides))


def measure(trainer: Trainer, groups, steps: int, peaks: dict, name: str,
            train: bool = True) -> float:
    """One timed run; records the variant's peak GPU memory on CUDA."""
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(trainer.device)
    rate = run_steps(trainer, groups, steps, train)
    if cuda:
        peaks[name] = max(peaks.get(name, 0), torch.cuda.max_memory_allocated(trainer.device))
    return rate


def run_rounds(args, trainers: dict[str, Trainer], memory) -> tuple[dict, dict]:
    """Median patches/s per variant over interleaved rounds, and the peak GPU bytes."""
    loaders = {mode: t.batches() for mode, t in trainers.items()}
    dev = trainers["device"]
    for mode, t in trainers.items():  # k-means init, worker start-up, allocator
        run_steps(t, loaders[mode], args.warmup)
    run_steps(dev, memory, args.warmup)
    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    peaks: dict[str, int] = {}
    for r in range(args.rounds):
        rates["in memory"].append(measure(dev, memory, args.steps, peaks, "in memory"))
        for mode in (("cpu", "device") if r % 2 == 0 else ("device", "cpu")):
            drain(trainers[mode], loaders[mode])
            name = f"loader, {mode} resample"
            rates[name].append(measure(trainers[mode], loaders[mode], args.steps, peaks, name))
        for mode in ("cpu", "device"):
            drain(trainers[mode], loaders[mode])
            name = f"input only, {mode} resample"
            rates[name].append(measure(trainers[mode], loaders[mode], args.steps, peaks, name,
                                       train=False))
    return {k: statistics.median(v) for k, v in rates.items()}, peaks


def report(batch: int, med: dict, peaks: dict, flops: float) -> None:
    print(f"\nbatch {batch}: median patches/s; forward + backward {flops / 1e9:.2f} GFLOP a patch")
    print(f"  {'variant':30s} {'patches/s':>10s} {'/ in memory':>12s} {'TFLOP/s':>9s}"
          + (f" {'peak GiB':>9s}" if peaks else ""))
    for name, rate in med.items():
        trained = not name.startswith("input")
        line = (f"  {name:30s} {rate:10.1f} {rate / med['in memory']:12.3f} "
                + (f"{flops * rate / 1e12:9.3f}" if trained else f"{'-':>9s}"))
        if peaks:
            line += f" {peaks[name] / 2**30:9.2f}"
        print(line)


def bench_batch_size(args, overrides: list[str], data: str, work: Path, batch: int) -> None:
    trainers = {m: make_trainer(args, overrides, data, work, batch, m) for m in ("cpu", "device")}
    dev, d = trainers["device"], trainers["device"].cfg.data
    n_train = len(dev.train_ds)
    print(f"\n== batch {batch} x accumulate {dev.cfg.optim.accumulate}: {n_train} train patches, "
          f"{d.num_workers} loader workers, device {dev.device}, amp {dev.cfg.train.amp}")
    memory = in_memory_groups(dev, max(1, min(8, n_train // batch)))
    med, peaks = run_rounds(args, trainers, memory)
    flops = flops_per_patch(dev, memory)  # after warm-up: the k-means init is not a step's work
    report(batch, med, peaks, flops)
    for t in trainers.values():
        t.source.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/debug.yaml")
    parser.add_argument("--data", default=default_data(),
                        help="LMDB, .tar/.tar.gz of GeoTIFFs, or '' for the 24-patch sample")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each variant first")
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
        if not args.no_readme_job:
            print(f"README main job (vqae train, configs/debug.yaml, no install): "
                  f"{time_readme_job(work):.1f} s wall", flush=True)
        data = args.data
        if data and (data.endswith((".tar", ".tar.gz", ".tgz"))):
            data = str(archive_to_lmdb(Path(data), work, args.workers or 2))
        print(f"config {args.config}, data {data or 'the 24-patch sample'}; {args.steps} steps x "
              f"{args.rounds} rounds per variant, interleaved")
        for batch in args.batch_sizes:
            bench_batch_size(args, [o.lstrip("-") for o in overrides], data, work, batch)


if __name__ == "__main__":
    main()
