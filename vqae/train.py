"""`vqae train`: the training loop with evaluation, tracking, exact resume and DDP."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from vqae.checkpoint import CheckpointManager, capture_rng_state, load_checkpoint, restore_rng_state
from vqae.config import Config, dump_yaml, to_dict
from vqae.data.source import open_dataset
from vqae.distributed import DistEnv, all_reduce_max, cleanup, init_distributed, resolve_device
from vqae.errors import ConfigError
from vqae.evaluate import eval_loader, evaluate, level_counts
from vqae.images import render_panel
from vqae.metrics import bpp_index, psnr, ssim
from vqae.models import build_model
from vqae.tracking import format_table, make_tracker

log = logging.getLogger(__name__)
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: checkpointed on SIGTERM/SIGUSR1, requeue me


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start mid-epoch, so a resumed run sees the same batches."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0  # samples of this rank's epoch already consumed

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


class StopFlag:
    """Set by SIGTERM / SIGUSR1; the loop checkpoints at the next step boundary and exits."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        log.warning("received %s: checkpointing at the next step", signal.Signals(signum).name)
        self.requested = True


@dataclass
class Position:
    step: int = 0
    epoch: int = 0
    consumed: int = 0  # batches of this epoch already used


def drop_records_after(path: Path, step: int) -> None:
    """A resumed run logs steps after its checkpoint again; keep one record of each."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    tmp.replace(path)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def amp_setup(amp: str, device: torch.device):
    """(autocast context factory, GradScaler or None): bf16 on CUDA by default, fp32 on CPU."""
    if amp not in ("auto", "bf16", "fp16", "none"):
        raise ConfigError(f"train.amp={amp!r}; valid: auto, bf16, fp16, none")
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "none"
    if amp == "none":
        return contextlib.nullcontext, None
    if device.type != "cuda":
        raise ConfigError(f"train.amp={amp} needs a CUDA device; use --train.amp=none on CPU")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def lr_factor(step: int, cfg: Config) -> float:
    """Linear warmup, then cosine decay to min_lr_ratio at train.steps."""
    o, total = cfg.optim, max(cfg.train.steps, 1)
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = min((step - o.warmup_steps) / max(total - o.warmup_steps, 1), 1.0)
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader draws worker seeds at each new iterator; from its own generator, so the
    global RNG (augmentation, quantizer re-seeding) is the same after a resume."""
    return torch.Generator().manual_seed(seed)


def build_optimizer(model: torch.nn.Module, cfg: Config):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg))
    return opt, sched


def augment(x: torch.Tensor) -> torch.Tensor:
    """Each patch gets one of the 8 flips/rotations of the square, drawn from torch's RNG."""
    k = torch.randint(0, 8, (x.shape[0],)).tolist()
    out = [torch.rot90(p, r % 4, dims=(1, 2)) for p, r in zip(x, k)]
    out = [p.flip(2) if r >= 4 else p for p, r in zip(out, k)]
    return torch.stack(out)


def reconstruction_loss(recon, x, normalizer, cfg: Config) -> dict[str, torch.Tensor]:
    t, parts = cfg.train, {}
    if t.mse_weight:
        parts["mse"] = t.mse_weight * F.mse_loss(recon, x)
    if t.l1_weight:
        parts["l1"] = t.l1_weight * F.l1_loss(recon, x)
    if t.ssim_weight:
        dn, dn_hat = normalizer.denormalize(x), normalizer.denormalize(recon)
        parts["ssim"] = t.ssim_weight * (1 - ssim(dn, dn_hat).mean())
    return parts


class Trainer:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.env: DistEnv = DistEnv()
        self.device = resolve_device(cfg.run.device, self.env)
        self.env = init_distributed(self.device)
        self.run_dir = Path(cfg.run.dir)
        seed_everything(cfg.run.seed + self.env.rank)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True)
        self.train_ds = open_dataset(cfg.data, "train")
        self.val_ds = open_dataset(cfg.data, "validation")
        self.normalizer = self.train_ds.normalizer
        self.model = build_model(cfg).to(self.device)
        if self.device.type == "cuda" and cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt, self.sched = build_optimizer(self.model, cfg)
        self.autocast, self.scaler = amp_setup(cfg.train.amp, self.device)
        self.levels = level_counts(self.model, cfg.train.eval_levels)
        self.net = self._wrap(self.model)
        self.sampler = ResumableSampler(self.train_ds, self.env.world_size, self.env.rank,
                                        cfg.run.seed)
        self.loader = self._train_loader()
        self.ckpts = CheckpointManager(self.run_dir, keep_last=cfg.train.keep_last)
        self.pos = Position()
        self.rate = bpp_index(self.model.latent_shape()[1] * self.model.latent_shape()[2],
                              self.model.quantizer.num_levels, self.model.quantizer.codebook_size)

    def _wrap(self, model):
        net = model
        if self.env.enabled:
            q = self.cfg.quantizer
            net = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False,  # the quantizer keeps its EMA codebooks in sync itself
                find_unused_parameters=q.dropout and not q.ema)
        return torch.compile(net) if self.cfg.train.compile else net

    def _train_loader(self) -> DataLoader:
        d = self.cfg.data
        if len(self.train_ds) < d.batch_size * self.env.world_size:
            raise ConfigError(f"train split has {len(self.train_ds)} patches, fewer than one "
                              f"batch ({d.batch_size} x {self.env.world_size} ranks); lower "
                              "data.batch_size")
        return DataLoader(self.train_ds, batch_size=d.batch_size, sampler=self.sampler,
                          num_workers=d.num_workers, drop_last=True,
                          generator=loader_generator(self.cfg.run.seed),
                          pin_memory=d.pin_memory and self.device.type == "cuda",
                          persistent_workers=d.persistent_workers and d.num_workers > 0)

    # ---- state ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler else None,
            "rng": capture_rng_state(), "position": vars(self.pos).copy(),
            "config": to_dict(self.cfg), "normalization": self.normalizer.to_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.pos = Position(**state["position"])

    def maybe_resume(self) -> None:
        how = self.cfg.run.resume
        if not how:
            return
        if how == "auto":
            found = self.ckpts.latest_valid(map_location=self.device)
            if found is None:
                log.info("no checkpoint in %s yet: starting fresh", self.run_dir)
                return
            path, state = found
        else:
            path, state = Path(how), load_checkpoint(how, map_location=self.device)
        self.load_state(state)
        if self.env.is_main:
            drop_records_after(self.run_dir / "metrics.jsonl", self.pos.step)
        log.info("resumed from %s at step %d", path, self.pos.step)

    # ---- steps ---------------------------------------------------------------------------
    def train_step(self, batches: list[dict]) -> dict[str, float]:
        parts_sum: dict[str, float] = {}
        for i, batch in enumerate(batches):
            x = batch["image"].to(self.device, non_blocking=True)  # (B, C, H, W)
            if self.cfg.train.augment:
                x = augment(x)
            if self.device.type == "cuda" and self.cfg.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sync = i == len(batches) - 1 or not self.env.enabled
            with (contextlib.nullcontext() if sync else self.net.no_sync()), self.autocast():
                out = self.net(x)
                parts = {**reconstruction_loss(out.recon.float(), x, self.normalizer, self.cfg),
                         **{k: v.float() for k, v in out.losses.items()}}
                loss = sum(parts.values()) / len(batches)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach()) / len(batches)
        self._optimizer_step()
        parts_sum["loss"] = sum(parts_sum.values())
        with torch.no_grad():
            dn = self.normalizer.denormalize(x)
            parts_sum["psnr"] = float(psnr(dn, self.normalizer.denormalize(out.recon.float()))
                                      .mean())
        return parts_sum

    def _optimizer_step(self) -> None:
        if self.scaler:
            self.scaler.unscale_(self.opt)
        if self.cfg.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.sched.step()

    def batches(self):
        """Groups of `accumulate` batches, forever, tracking the loader position."""
        group: list[dict] = []
        while True:
            self.sampler.set_epoch(self.pos.epoch)
            self.sampler.start = self.pos.consumed * self.cfg.data.batch_size
            for batch in self.loader:
                group.append(batch)
                self.pos.consumed += 1
                if len(group) == self.cfg.optim.accumulate:
                    yield group
                    group = []
            self.pos.epoch, self.pos.consumed = self.pos.epoch + 1, 0

    # ---- eval, checkpoint ----------------------------------------------------------------
    def run_eval(self, tracker) -> dict[str, float]:
        loader = eval_loader(self.val_ds, self.cfg, self.env, self.device)
        metrics = evaluate(self.model, loader, self.normalizer, self.val_ds.bands, self.device,
                           self.levels, self.cfg.train.eval_batches, self.autocast)
        metrics = {f"val/{k}": v for k, v in metrics.items()}
        tracker.log(metrics, self.pos.step)
        if self.env.is_main:
            tracker.log_images(self.render_images(), self.pos.step)
            tqdm.write(format_table(metrics, title=f"eval at step {self.pos.step}"))
        return metrics

    @torch.no_grad()
    def render_images(self) -> dict:
        n = min(self.cfg.train.eval_images, len(self.val_ds))
        if n == 0:
            return {}
        x = torch.stack([self.val_ds[i]["image"] for i in range(n)]).to(self.device)
        self.model.eval()
        recon = self.model(x).recon.float()
        self.model.train()
        dn, dn_hat = self.normalizer.denormalize(x), self.normalizer.denormalize(recon)
        return {f"val/{k}": v for k, v in render_panel(dn, dn_hat, self.val_ds.bands).items()}

    def checkpoint(self, metric: float | None = None) -> None:
        if self.env.is_main:
            self.ckpts.save(self.pos.step, self.state(), metric=metric)
        if self.env.enabled:
            torch.distributed.barrier()

    @torch.no_grad()
    def rank_divergence(self) -> float:
        """Largest difference of any weight or codebook entry between ranks (0 when in sync)."""
        flat = torch.cat([t.detach().float().ravel() for t in self.model.state_dict().values()])
        hi, lo = flat.clone(), flat.clone()
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        return float((hi - lo).abs().max())

    # ---- main loop -----------------------------------------------------------------------
    def fit(self) -> int:
        cfg, t = self.cfg, self.cfg.train
        self.maybe_resume()
        if self.env.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, self.run_dir / "config.yaml")
            log.info("%s", self.model.summary())
        tracker = make_tracker(cfg.run.tracker, self.run_dir, to_dict(cfg), cfg.run.project,
                               self.env.rank, cfg.run.name or self.run_dir.name)
        stop = StopFlag()
        bar = tqdm(total=t.steps, initial=self.pos.step, disable=not self.env.is_main,
                   unit="step", dynamic_ncols=True)
        metrics: dict[str, float] = {}
        status, tic, seen = 0, time.perf_counter(), 0
        try:
            for group in self.batches():
                if self.pos.step >= t.steps:
                    break
                parts = self.train_step(group)
                self.pos.step += 1
                seen += sum(len(b["name"]) for b in group) * self.env.world_size
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.4f}", psnr=f"{parts['psnr']:.2f}",
                                bpp=f"{self.rate:.3f}")
                if self.pos.step % t.log_every == 0:
                    rate = seen / (time.perf_counter() - tic)
                    tracker.log({**{f"train/{k}": v for k, v in parts.items()},
                                 "train/lr": self.sched.get_last_lr()[0],
                                 "train/bpp_index": self.rate,
                                 "train/patches_per_s": rate}, self.pos.step)
                last = self.pos.step >= t.steps
                if self.pos.step % t.eval_every == 0 or last:
                    metrics = self.run_eval(tracker)
                    self.checkpoint(metrics.get("val/psnr"))
                elif self.pos.step % t.checkpoint_every == 0:
                    self.checkpoint()
                if all_reduce_max(float(stop.requested), self.device) and not last:
                    if self.pos.step % t.checkpoint_every and self.pos.step % t.eval_every:
                        self.checkpoint()
                    status = EXIT_PREEMPTED
                    break
        finally:
            bar.close()
        if self.env.enabled:
            tracker.log({"ddp/max_param_diff": self.rank_divergence()}, self.pos.step)
        if status == 0 and self.env.is_main:
            tracker.summary(metrics)
            print(format_table(metrics, title=f"final ({self.pos.step} steps)"))
        tracker.close()
        return status


def train(cfg: Config) -> int:
    try:
        return Trainer(cfg).fit()
    finally:
        cleanup()
