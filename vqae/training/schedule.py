"""What runs when in training and how fast: the log/eval/checkpoint schedule, the learning
rate, the optimizer, mixed precision, seeds and the progress bar."""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from vqae.config import Config, TrainConfig
from vqae.errors import ConfigError


@dataclass
class Schedule:
    """Which steps log, evaluate and checkpoint; the last step always does all three."""

    cfg: TrainConfig

    def _every(self, step: int, period: int) -> bool:
        return step % period == 0 or step >= self.cfg.steps

    def logs(self, step: int) -> bool:
        return self._every(step, self.cfg.log_every)

    def evaluates(self, step: int) -> bool:
        return self._every(step, self.cfg.eval_every)

    def checkpoints(self, step: int) -> bool:
        return self._every(step, self.cfg.checkpoint_every)


class Throughput:
    """Patches per second of training alone: the clock stops for evaluation and checkpoints."""

    def __init__(self):
        self.patches, self.seconds, self.since = 0, 0.0, time.perf_counter()

    def add(self, patches: int) -> None:
        self.patches += patches
        self.seconds += time.perf_counter() - self.since

    def restart(self) -> None:
        self.since = time.perf_counter()

    def rate(self) -> float:
        """Patches per second since the last call."""
        rate = self.patches / max(self.seconds, 1e-9)
        self.patches, self.seconds = 0, 0.0
        return rate


def lr_factor(step: int, cfg: Config) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio at train.steps."""
    o, total = cfg.optim, max(cfg.train.steps, 1)
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = min((step - o.warmup_steps) / max(total - o.warmup_steps, 1), 1.0)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, cfg: Config):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return opt, sched


def amp_setup(amp: str, device: torch.device):
    """(autocast context factory, GradScaler or None): bf16 on CUDA by default, fp32 on CPU."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    if amp == "none":
        return contextlib.nullcontext, None
    if device.type != "cuda":
        raise ConfigError(f"train.amp={amp} needs a CUDA device; use --train.amp=none on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader draws worker seeds at each new iterator; from its own generator, so the
    global RNG (augmentation, quantizer re-seeding) is the same after a resume."""
    return torch.Generator().manual_seed(seed)


def progress_bar(total: int, initial: int, enabled: bool, tty: bool) -> tqdm:
    """The training bar. Every step may refresh it (miniters=1: tqdm's adaptive miniters
    skipped whole evaluation periods in a log file) and its rate is an EMA over the last
    refreshes (tqdm's smoothing), so after a slow start or a stall it soon shows the current
    rate: a terminal refreshes about every step, a log file every 30 s, so there the newest
    interval weighs more."""
    return tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                dynamic_ncols=True, miniters=1, smoothing=0.3 if tty else 0.7,
                mininterval=0.1 if tty else 30)


@contextlib.contextmanager
def paused(bar: tqdm):
    """Leave the time spent inside (evaluation, checkpoints) out of the bar's rate and ETA:
    the two clocks tqdm's own unpause() moves, moved by that time."""
    start = time.time()  # tqdm's clock
    try:
        yield
    finally:
        if not bar.disable:
            spent = time.time() - start
            bar.start_t += spent
            bar.last_print_t += spent

