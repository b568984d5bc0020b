"""Copies and host syncs per training step, counted with torch.profiler.

A small autoencoder (widths 16/32, one block per stage, f = 8, RVQ of depth 4 with quantizer
dropout, k-means init and code revival on) takes a few warm-up steps (the k-means init happens
there), then `--steps` profiled steps of forward, loss, backward and AdamW. Per step and per
phase it prints how often the layout/dtype conversion ops and the ops that make the host wait
for the device ran. On the CPU an op like aten::item costs little, but each is a full device
sync on a GPU, so the count is what matters; with --device cuda the GPU time of the copies is
printed too.

    python benchmarks/profile_step.py [--device cpu|cuda] [--channels-last] [--amp bf16]
        [--quantizer rvq|vq] [--batch 4] [--steps 3] [--compile [BACKEND]]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
from collections import Counter

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from vqae.config import Config
from vqae.models import build_model
from vqae.models.quantizer import HOST_SYNC_OPS

COPIES = ("aten::copy_", "aten::to", "aten::_to_copy", "aten::contiguous", "aten::clone")
SYNCS = HOST_SYNC_OPS
PHASES = ("forward", "backward", "optimizer")


def small_config(quantizer: str) -> Config:
    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, widths=[16, 32], blocks_per_stage=1,
                                    latent_dim=16, groups=4)
    depth = 4 if quantizer == "rvq" else 1
    cfg.quantizer = dataclasses.replace(cfg.quantizer, name=quantizer, codebook_size=64,
                                        depth=depth, dropout=quantizer == "rvq")
    return cfg


def make_step(model, opt, x: torch.Tensor, autocast):
    def step() -> None:
        with record_function("forward"), autocast():
            out = model(x)
            loss = F.mse_loss(out.recon.float(), out.target) + sum(out.losses.values())
        with record_function("backward"):
            loss.backward()
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
    return step


def phase_counts(prof, names: tuple[str, ...], min_numel: int = 0) -> dict[str, Counter]:
    """{phase: Counter(op name -> calls)} for the ops in `names` whose first input has at least
    `min_numel` elements, by the phase whose time range holds each call (backward ops may run
    on another thread)."""
    events = prof.events()
    spans = [(e.name, e.time_range) for e in events if e.name in PHASES]
    counts = {phase: Counter() for phase in PHASES}
    for e in events:
        if e.name in names and (not min_numel or first_numel(e) >= min_numel):
            for phase, span in spans:
                if span.start <= e.time_range.start <= span.end:
                    counts[phase][e.name] += 1
                    break
    return counts


def first_numel(event) -> int:
    shape = event.input_shapes[0] if event.input_shapes else []
    return math.prod(shape) if shape and all(isinstance(n, int) for n in shape) else 0


def report(prof, steps: int, activation: int, cuda: bool) -> None:
    counts = phase_counts(prof, COPIES + SYNCS)
    big = phase_counts(prof, ("aten::copy_",), activation)
    print(f"{'op (calls per step)':<28}" + "".join(f"{p:>11}" for p in PHASES))
    rows = [(name, counts, name) for name in COPIES + SYNCS]
    rows.insert(1, (f"  of >= {activation} elements", big, "aten::copy_"))
    for label, table, name in rows:
        print(f"{label:<28}" + "".join(f"{table[p][name] / steps:>11.1f}" for p in PHASES))
    model = ("forward", "backward")
    copies = sum(counts[p]["aten::copy_"] for p in model) / steps
    large = sum(big[p]["aten::copy_"] for p in model) / steps
    syncs = sum(counts[p][n] for p in model for n in SYNCS) / steps
    print(f"forward+backward per step: {copies:.1f} aten::copy_ ({large:.1f} of latent size or "
          f"more), {syncs:.1f} host-sync ops (the optimizer's are AdamW reading its CPU step "
          "counters)")
    if cuda:
        gpu = {e.key: e.device_time_total for e in prof.key_averages()}
        total = sum(e.self_device_time_total for e in prof.key_averages())
        print(f"GPU time in aten::copy_: {gpu.get('aten::copy_', 0) / max(total, 1):.1%} of "
              f"{total / steps / 1e3:.2f} ms per step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", default="none", choices=["none", "bf16"])
    parser.add_argument("--quantizer", default="rvq", choices=["rvq", "vq"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", nargs="?", const="inductor", metavar="BACKEND",
                        help="compile encoder and decoder as train.compile does (inductor)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no GPU; use --device cpu")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = build_model(small_config(args.quantizer)).to(device).train()
    x = 200 + 3000 * torch.rand(args.batch, 12, 120, 120, device=device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if args.compile:
        model.compile_networks(backend=args.compile)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = ((lambda: torch.autocast(args.device, dtype=torch.bfloat16))
                if args.amp == "bf16" else contextlib.nullcontext)
    step = make_step(model, opt, x, autocast)
    for _ in range(3):  # k-means init, allocator, lazy init and compilation happen here
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
        if args.device == "cuda":
            torch.cuda.synchronize()
    print(f"{args.device}, channels_last={args.channels_last}, amp={args.amp}, "
          f"{args.quantizer}, batch {args.batch}, compile={args.compile}; torch {torch.__version__}")
    latent = model.encoder(model.normalize(x)).numel()  # copies this large move activations
    report(prof, args.steps, latent, args.device == "cuda")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
