"""Forward+backward time of our VectorQuantizer / ResidualVQ vs vector-quantize-pytorch.

Matched settings: dim 64, K 1024, EMA decay 0.99, commitment weight 0.25, no k-means, no dead-code
replacement, plain straight-through (their rotation trick off), training mode, RVQ of depth 8.
Latents: batch 32 of 15x15 and 30x30 (the default f = 8 and f = 4 grids of a 120 px patch); on a
GPU also batch 256 of both, where the arithmetic rather than kernel launches sets the pace. The
libraries run in this one process, interleaved, and each figure is the median of repeated runs.
Each library gets its native layout: theirs (B, h*w, D); ours (B, D, h, w) as the trainer's
encoder hands it over: channels-last on a GPU (train.channels_last, the same memory as theirs),
channel-first on the CPU.

With --baseline, the vqae of another tree (say `git archive HEAD | tar -x -C /tmp/base`) runs
interleaved too, so a change is measured as ours/base in the same run as ours/theirs.

    pip install --no-deps vector-quantize-pytorch einx loguru torch-einops-utils frozendict
    python benchmarks/bench_quantizers.py [--device cpu|cuda] [--threads 2] [--repeats 15]
        [--baseline /tmp/base]

The last lines printed are the ratios over all cases (sums of medians).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from types import ModuleType

import torch

import vqae.models

DIM, K, DECAY, BETA, DEPTH = 64, 1024, 0.99, 0.25, 8
CPU_CASES = [(32, 15), (32, 30)]  # (batch, latent side)
GPU_CASES = CPU_CASES + [(256, 15), (256, 30)]


def ours(kind: str, models: ModuleType = vqae.models) -> torch.nn.Module:
    kw = {"codebook_size": K, "decay": DECAY, "beta": BETA, "kmeans_init": False,
          "revive_threshold": 0.0}
    if kind == "vq":
        return models.VectorQuantizer(DIM, **kw)
    return models.ResidualVQ(DIM, depth=DEPTH, **kw)


def theirs(kind: str) -> torch.nn.Module:
    import vector_quantize_pytorch as vqp

    kw = {"dim": DIM, "codebook_size": K, "decay": DECAY, "commitment_weight": BETA,
          "kmeans_init": False, "threshold_ema_dead_code": 0, "rotation_trick": False}
    return vqp.VectorQuantize(**kw) if kind == "vq" else vqp.ResidualVQ(num_quantizers=DEPTH, **kw)


def baseline_models(root: str) -> ModuleType:
    """`vqae.models` of the tree at `root`, imported beside ours: this tree's vqae modules step
    aside while it loads, and come back after (the baseline's keep their own globals)."""
    mine = {name: sys.modules.pop(name) for name in list(sys.modules) if is_vqae(name)}
    sys.path.insert(0, root)
    try:
        models = importlib.import_module("vqae.models")
        if not models.__file__.startswith(str(root)):
            raise SystemExit(f"--baseline {root} holds no vqae package")
        return models
    finally:
        sys.path.remove(root)
        for name in [name for name in sys.modules if is_vqae(name)]:
            del sys.modules[name]
        sys.modules.update(mine)


def is_vqae(module_name: str) -> bool:
    return module_name.split(".")[0] == "vqae"


def step_ours(model: torch.nn.Module, z: torch.Tensor) -> None:
    out = model(z)
    (out.quantized.square().mean() + sum(out.losses.values())).backward()


def step_theirs(model: torch.nn.Module, z: torch.Tensor) -> None:
    quantized, _, loss = model(z)
    (quantized.square().mean() + loss.sum()).backward()


def timed(step, model, z: torch.Tensor) -> float:
    sync = torch.cuda.synchronize if z.device.type == "cuda" else (lambda: None)
    z.grad = None
    sync()
    start = time.perf_counter()
    step(model, z)
    sync()
    return time.perf_counter() - start


def inputs(batch: int, side: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The same latents as (B, D, h, w) for us and (B, h*w, D) for them."""
    gen = torch.Generator().manual_seed(0)
    z_seq = torch.randn(batch, side * side, DIM, generator=gen).to(device)  # (B, N, D)
    z_img = z_seq.unflatten(1, (side, side)).movedim(-1, 1)  # (B, D, h, w) channels-last view
    if device == "cpu":
        z_img = z_img.contiguous()
    return z_img.clone().requires_grad_(), z_seq.clone().requires_grad_()


def measure(kind: str, batch: int, side: int, device: str, repeats: int,
            base: ModuleType | None) -> list[float]:
    """Median seconds [ours, theirs(, base)] for one forward+backward, interleaved."""
    z_img, z_seq = inputs(batch, side, device)
    runs = [(step_ours, ours(kind), z_img), (step_theirs, theirs(kind), z_seq)]
    if base is not None:
        runs.append((step_ours, ours(kind, base), z_img))
    runs = [(step, model.to(device).train(), z) for step, model, z in runs]
    for _ in range(3):  # warm-up: allocator, thread pool, lazy init
        for step, model, z in runs:
            timed(step, model, z)
    times = [[] for _ in runs]
    for _ in range(repeats):
        for column, (step, model, z) in zip(times, runs):
            column.append(timed(step, model, z))
    return [statistics.median(column) for column in times]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--baseline", help="root of another tree whose vqae to time as 'base'")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU; use --device cpu")
    base = baseline_models(args.baseline) if args.baseline else None
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {args.threads} threads"
    print(f"device: {name}; torch {torch.__version__}; median of {args.repeats} fwd+bwd runs")
    extra = f"{'base ms':>10}{'ours/base':>11}" if base else ""
    print(f"{'quantizer':<10}{'latent':>14}{'ours ms':>10}{'theirs ms':>11}{'ratio':>8}{extra}")
    totals = [0.0, 0.0, 0.0]
    for kind in ("vq", "rvq"):
        for batch, side in GPU_CASES if args.device == "cuda" else CPU_CASES:
            times = measure(kind, batch, side, args.device, args.repeats, base)
            totals = [t + s for t, s in zip(totals, times)] + totals[len(times):]
            a, b = times[:2]
            label, latent = kind if kind == "vq" else f"rvq x{DEPTH}", f"{batch}x{side}x{side}"
            row = f"{label:<10}{latent:>14}{a * 1e3:>10.2f}{b * 1e3:>11.2f}{a / b:>8.3f}"
            if base:
                row += f"{times[2] * 1e3:>10.2f}{a / times[2]:>11.3f}"
            print(row)
    print(f"ratio ours/theirs (all cases, summed medians): {totals[0] / totals[1]:.3f}")
    if base:
        print(f"ratio ours/base (all cases, summed medians): {totals[0] / totals[2]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
