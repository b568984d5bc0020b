"""Wall time from `spawner.py --deploy slurm` (or tmux) to every job of a sweep done.

The sweep: two jobs of the debug config on the real sample, tiny (4 steps, CPU), as in the
launcher tests, so the figure is mostly launch overhead: submission, scheduling, Python and
torch start-up, the sample read, a few steps and two checkpoints. Uses the Slurm cluster that
$SLURM_CONF names, else starts one with tests/launchers/slurm_cluster.sh (root) and stops it.

    python benchmarks/bench_sweep.py [--deploy slurm|tmux] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vqae.sweeps.job_status import read_status  # noqa: E402

CLUSTER = ROOT / "tests" / "launchers" / "slurm_cluster.sh"
TINY = {"model.widths": [8, 16], "model.blocks_per_stage": 1, "model.latent_dim": 8,
        "model.groups": 4, "data.batch_size": 4, "data.num_workers": 0, "train.steps": 4,
        "train.eval_every": 2, "train.checkpoint_every": 2, "train.eval_images": 0,
        "run.tracker": "none"}


def sweep_file(work: Path) -> Path:
    spec = {"name": "bench", "folder": str(work / "sweep"), "overrides": TINY,
            "base": [str(ROOT / "configs/debug.yaml")],
            "grid": {"quantizer.codebook_size": [16, 32]}}
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def one_run(deploy: str, work: Path) -> float:
    path = sweep_file(work)
    extra = ["--sbatch", "--gres=none --cpus-per-task=1"] if deploy == "slurm" else [
        "--tmux-socket", f"bench-{os.getpid()}", "--max-parallel", "2"]
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "spawner.py"), str(path), "--deploy", deploy,
                    *extra], check=True, cwd=work, stdout=subprocess.DEVNULL)
    runs = [work / "sweep" / n for n in ("codebook_size-16", "codebook_size-32")]
    while not all(read_status(r).get("state") in ("done", "failed") for r in runs):
        if time.perf_counter() - start > 600:
            sys.exit(f"jobs not done after 600 s: {[read_status(r) for r in runs]}")
        time.sleep(0.2)
    seconds = time.perf_counter() - start
    if {read_status(r)["state"] for r in runs} != {"done"}:
        sys.exit(f"a job failed: {[read_status(r) for r in runs]}")
    if deploy == "tmux":
        subprocess.run(["tmux", "-L", f"bench-{os.getpid()}", "kill-server"],
                       capture_output=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", choices=("slurm", "tmux"), default="slurm")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    started = None
    if args.deploy == "slurm" and not os.environ.get("SLURM_CONF"):
        started = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
        subprocess.run(["bash", str(CLUSTER), "start", str(started)], check=True)
        os.environ["SLURM_CONF"] = str(started / "slurm.conf")
    try:
        times = []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
                times.append(one_run(args.deploy, Path(tmp)))
                print(f"  {times[-1]:.1f} s", flush=True)
    finally:
        if started:
            subprocess.run(["bash", str(CLUSTER), "stop", str(started)], check=False)
    print(f"spawner.py --deploy {args.deploy}, 2 tiny jobs of the debug config: median "
          f"{statistics.median(times):.1f} s to both done (runs: "
          + ", ".join(f"{t:.1f}" for t in times) + ")")


if __name__ == "__main__":
    main()
