"""Forward+backward time of our VectorQuantizer / ResidualVQ vs vector-quantize-pytorch.

Matched settings: dim 64, K 1024, EMA decay 0.99, commitment weight 0.25, no k-means, no dead-code
replacement, plain straight-through (their rotation trick off), training mode, batch 32 of 15x15
and 30x30 latents, RVQ of depth 8. Both libraries run in this one process, interleaved, and
each figure is the median of repeated runs. Each library gets its native layout: ours
(B, D, h, w), theirs (B, h*w, D).

    pip install --no-deps vector-quantize-pytorch einx loguru torch-einops-utils frozendict
    python benchmarks/bench_quantizers.py [--device cpu|cuda] [--threads 2] [--repeats 15]

The last line printed is the ratio ours/theirs over all cases (sum of medians).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from vqae.models import ResidualVQ, VectorQuantizer

DIM, K, DECAY, BETA, BATCH, DEPTH = 64, 1024, 0.99, 0.25, 32, 8


def ours(kind: str) -> torch.nn.Module:
    kw = {"codebook_size": K, "decay": DECAY, "beta": BETA, "kmeans_init": False,
          "revive_threshold": 0.0}
    return VectorQuantizer(DIM, **kw) if kind == "vq" else ResidualVQ(DIM, depth=DEPTH, **kw)


def theirs(kind: str) -> torch.nn.Module:
    import vector_quantize_pytorch as vqp

    kw = {"dim": DIM, "codebook_size": K, "decay": DECAY, "commitment_weight": BETA,
          "kmeans_init": False, "threshold_ema_dead_code": 0, "rotation_trick": False}
    return vqp.VectorQuantize(**kw) if kind == "vq" else vqp.ResidualVQ(num_quantizers=DEPTH, **kw)


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


def measure(kind: str, side: int, device: str, repeats: int) -> tuple[float, float]:
    """Median seconds (ours, theirs) for one forward+backward, interleaving the two libraries."""
    gen = torch.Generator().manual_seed(0)
    z_img = torch.randn(BATCH, DIM, side, side, generator=gen).to(device).requires_grad_()
    z_seq = z_img.detach().flatten(2).transpose(1, 2).contiguous().requires_grad_()  # (B, N, D)
    a, b = ours(kind).to(device).train(), theirs(kind).to(device).train()
    for _ in range(3):  # warm-up: allocator, thread pool, lazy init
        timed(step_ours, a, z_img)
        timed(step_theirs, b, z_seq)
    times_a, times_b = [], []
    for _ in range(repeats):
        times_a.append(timed(step_ours, a, z_img))
        times_b.append(timed(step_theirs, b, z_seq))
    return statistics.median(times_a), statistics.median(times_b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU; use --device cpu")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {args.threads} threads"
    print(f"device: {name}; torch {torch.__version__}; median of {args.repeats} fwd+bwd runs")
    print(f"{'quantizer':<10}{'latent':>10}{'ours ms':>10}{'theirs ms':>11}{'ratio':>8}")
    total_a = total_b = 0.0
    for kind in ("vq", "rvq"):
        for side in (15, 30):
            a, b = measure(kind, side, args.device, args.repeats)
            total_a, total_b = total_a + a, total_b + b
            label = kind if kind == "vq" else f"rvq x{DEPTH}"
            print(f"{label:<10}{f'{side}x{side}':>10}{a * 1e3:>10.1f}{b * 1e3:>11.1f}{a / b:>8.3f}")
    print(f"ratio ours/theirs (all cases, summed medians): {total_a / total_b:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
