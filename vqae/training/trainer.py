"""`vqae train`: the training loop with evaluation, tracking, exact resume and DDP."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, default_collate
from tqdm import tqdm

from vqae.io.atomic import write_atomic
from vqae.training.augment import augment, stretch_contrast
from vqae.checkpoint.manager import (
    CheckpointManager,
    capture_rng_state,
    fit_and_save,
    model_from_state,
    read_checkpoint,
    restore_rng_state,
)
from vqae.checkpoint.format import check_optimizer_shapes, check_scheduler, check_state
from vqae.config import Config, TrainConfig, dump_yaml, to_dict
from vqae.data.device_input import DeviceInput, Prefetcher
from vqae.data.loader import Loader
from vqae.data.sample import sample_dir
from vqae.data.source import DataSource, resolve_path
from vqae.data.stats import load_stats
from vqae.distributed import all_reduce_max, cleanup, setup
from vqae.errors import ConfigError, DataError
from vqae.training.evaluate import eval_depths, eval_loader, evaluate
from vqae.training.images import render_panel
from vqae.metrics import psnr, ssim
from vqae.models import build_model
from vqae.io.run_outputs import check_removable, earlier_outputs, next_commands, remove, run_report
from vqae.io.stops import EXIT_PREEMPTED, StopFlag, Stopped
from vqae.training.tracking import Tracker, format_table, make_tracker, read_jsonl

log = logging.getLogger(__name__)


class ResumableSampler(DistributedSampler):
    """DistributedSampler that can start mid-epoch, so a resumed run sees the same batches."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0  # samples of this rank's epoch already consumed

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return self.num_samples - self.start


@dataclass
class Position:
    step: int = 0
    epoch: int = 0
    consumed: int = 0  # batches of this epoch already used


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


def drop_records_after(path: Path, step: int) -> None:
    """A resumed run logs steps after its checkpoint again; keep one record of each."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    write_atomic(path, "".join(line + "\n" for line in keep))


def eval_record(path: Path, step: int) -> dict[str, float] | None:
    """The val/* metrics logged at `step` in metrics.jsonl, None when there are none."""
    if not path.is_file():
        return None
    found = [r for r in read_jsonl(path) if r.get("step") == step and any(
        k.startswith("val/") for k in r)]
    return {k: v for k, v in found[-1].items() if k.startswith("val/")} if found else None


def run_inputs(cfg: Config, config_files: list[str] = ()) -> list[str]:
    """What a run reads that lies on disk: no run output may be, hold or lie inside one."""
    data = cfg.data.path or str(sample_dir())
    return [p for p in (data, cfg.data.splits, cfg.data.stats, *config_files) if p]


def check_run_dir(run_dir: Path, cfg: Config, config_files: list[str] = ()) -> list[Path]:
    """Outputs of an earlier run in `run_dir` that a fresh run would mix with; refuses unless
    --run.overwrite=true and each is only what a run writes (the caller then removes them)."""
    return earlier_outputs(run_dir, cfg.run.resume, cfg.run.overwrite,
                           run_inputs(cfg, config_files))


def as_read(cfg: Config) -> Config:
    """`cfg` with an empty data.path (the sample) replaced by the sample's resolved LMDB and
    split table, so config.yaml, the checkpoints and the tracker name what was read, absolute,
    as for any --data. The same command resolves to the same paths again on resume."""
    if cfg.data.path:
        return cfg
    path, splits = resolve_path(cfg.data)
    data = dataclasses.replace(cfg.data, path=str(Path(path).absolute()),
                               splits=str(Path(splits).absolute()) if splits else "")
    return dataclasses.replace(cfg, data=data)


def prior_fitted(path: Path) -> bool:
    return bool(read_checkpoint(path)["model"]["prior.fitted"])


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


class Trainer:
    def __init__(self, cfg: Config, config_files: list[str] = (), command: str | None = None):
        t = cfg.train
        self.command = command  # the command line that continues this run after a stop
        self.inputs = run_inputs(cfg, config_files)  # what --run.overwrite never removes
        self.env = setup(cfg.run.device)  # rank, world size and this process's device, once
        self.device = self.env.torch_device
        self.run_dir = Path(cfg.run.dir)
        self.stale_outputs = check_run_dir(self.run_dir, cfg, config_files)  # before any write
        seed_everything(cfg.run.seed + self.env.rank)
        if t.deterministic:
            torch.use_deterministic_algorithms(True)
        self.source = DataSource(cfg.data)
        self.cfg = cfg = as_read(cfg)
        self.input = DeviceInput.for_config(cfg.data, self.device)
        self.train_ds = self.source.dataset("train", native=self.input.native)
        self.val_ds = self.source.dataset("validation", native=self.input.native)
        self.model = build_model(cfg, *load_stats(cfg.data.stats, self.source.all_bands))
        self.model.to(self.device)
        if self.device.type == "cuda" and t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt, self.sched = build_optimizer(self.model, cfg)
        self.autocast, self.scaler = amp_setup(t.amp, self.device)
        self.depths = eval_depths(self.model, t.eval_depths)
        self.net = self._wrap(self.model)
        self.sampler = ResumableSampler(self.train_ds, self.env.world_size, self.env.rank,
                                        cfg.run.seed)
        self.loader = self._train_loader()
        self.ckpts = CheckpointManager(self.run_dir, keep_last=t.keep_last)
        self.schedule = Schedule(t)
        self.pos = Position()
        self.saved_step = -1  # the step of the newest checkpoint this process wrote
        self.stop = StopFlag()  # fit() gets the one whose handlers are installed

    def _wrap(self, model):
        if self.cfg.train.compile:
            model.compile_networks()  # in place: the quantizer stays eager, state keys unchanged
        if not self.env.enabled:
            return model
        # quantizer dropout masks rows rather than skipping stages, so every parameter gets a
        # gradient each step and DDP need not search the graph for unused ones
        return DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            broadcast_buffers=False)  # the quantizer keeps its EMA codebooks in sync itself

    def _train_loader(self) -> Loader:
        d = self.cfg.data
        if len(self.train_ds) < d.batch_size * self.env.world_size:
            raise ConfigError(f"train split has {len(self.train_ds)} patches, fewer than one "
                              f"batch ({d.batch_size} x {self.env.world_size} ranks); lower "
                              "data.batch_size")
        return Loader(self.train_ds, batch_size=d.batch_size, sampler=self.sampler,
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
            "config": to_dict(self.cfg),
        }

    def load_state(self, state: dict, path: Path) -> None:
        """Restore a checked training state (check_state(..., training=True)) read from `path`;
        one that does not fit this run's model or optimizer is a DataError naming the file."""
        check_scheduler(path, state["scheduler"], self.sched.state_dict())
        for part, load in (("model", self.model.load_state_dict),
                           ("optimizer", self.opt.load_state_dict),
                           ("scheduler", self.sched.load_state_dict),
                           ("rng", restore_rng_state)):
            try:
                load(state[part])
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError, OverflowError) as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                raise DataError(f"checkpoint {path}: its {part} state does not fit this run "
                                f"({first[:200]}); resume with the config it was trained with"
                                ) from err
        check_optimizer_shapes(path, self.opt)
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.pos = Position(**state["position"])

    def maybe_resume(self) -> None:
        how = self.cfg.run.resume
        if not how:
            return
        if how == "auto":
            found = self.ckpts.latest_valid(map_location=self.device)
            if found is None:
                log.info("no checkpoint in %s yet: starting fresh", self.run_dir)
                path, state = None, None
            else:
                path, state = found[0], check_state(found[0], found[1], training=True)
        else:
            path = Path(how)
            state = read_checkpoint(how, map_location=self.device, training=True)
        if state is not None:
            self.load_state(state, path)
            self.saved_step = self.pos.step
            log.info("resumed from %s at step %d", path, self.pos.step)

    def prepare_run_dir(self) -> None:
        """Rank 0 clears an overwritten run (checked again, now against the data path as
        resolved too), or drops a resumed run's records past its checkpoint, and writes the
        resolved config."""
        if self.env.is_main:
            check_removable(self.stale_outputs, [*self.inputs, self.source.path])
            if self.cfg.run.resume:  # records past the checkpoint are logged again
                drop_records_after(self.run_dir / "metrics.jsonl", self.pos.step)
            try:
                remove(self.stale_outputs)
                self.run_dir.mkdir(parents=True, exist_ok=True)
                dump_yaml(self.cfg, self.run_dir / "config.yaml")
            except OSError as err:
                raise DataError(f"cannot write to run folder {self.run_dir}: {err.strerror}; "
                                "choose a writable --run.dir") from err
        if self.env.enabled:
            torch.distributed.barrier()

    # ---- one step ------------------------------------------------------------------------
    def batch_to_device(self, batch: dict) -> torch.Tensor:
        x = self.input(batch)  # (B, C, H, W) float32 digital numbers
        if self.cfg.train.augment:
            x = augment(x)
        if self.cfg.train.contrast_range != [1.0, 1.0]:
            x = stretch_contrast(x, *self.cfg.train.contrast_range)
        if self.device.type == "cuda" and self.cfg.train.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def loss_parts(self, x: torch.Tensor, out) -> dict[str, torch.Tensor]:
        t, recon, parts = self.cfg.train, out.recon.float(), {}
        if t.mse_weight:
            parts["mse"] = t.mse_weight * F.mse_loss(recon, out.target)
        if t.l1_weight:
            parts["l1"] = t.l1_weight * F.l1_loss(recon, out.target)
        if t.ssim_weight:
            dn_hat = self.model.to_dn(recon, out.patch_means)
            parts["ssim"] = t.ssim_weight * (1 - ssim(x, dn_hat, offset=self.offsets).mean())
        return {**parts, **{k: v.float() for k, v in out.losses.items()}}

    @property
    def offsets(self) -> torch.Tensor:
        return self.model.normalize.offsets()

    def train_step(self, batches: list[dict], stats: bool) -> dict[str, torch.Tensor]:
        """One optimizer step over `accumulate` batches; with `stats`, the step's mean loss
        parts and PSNR as tensors (read on log steps only: reading them syncs the device)."""
        sums: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(batches):
            x = self.batch_to_device(batch)
            last = i == len(batches) - 1
            no_sync = self.env.enabled and not last
            with (self.net.no_sync() if no_sync else contextlib.nullcontext()), self.autocast():
                out = self.net(x)
                parts = self.loss_parts(x, out)
                loss = sum(parts.values()) / len(batches)
            (self.scaler.scale(loss) if self.scaler else loss).backward()
            if stats:
                parts["loss"] = sum(parts.values())
                dn_hat = self.model.to_dn(out.recon.detach(), out.patch_means)
                parts["psnr"] = psnr(x, dn_hat, offset=self.offsets).mean()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v.detach() / len(batches)
        self._optimizer_step()
        return sums

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
            for batch in Prefetcher(self.loader, self.input):  # copies the next batch meanwhile
                group.append(batch)
                self.pos.consumed += 1
                if len(group) == self.cfg.optim.accumulate:
                    yield group
                    group = []
            self.pos.epoch, self.pos.consumed = self.pos.epoch + 1, 0

    # ---- logging, eval, checkpoint -------------------------------------------------------
    def log_train(self, tracker: Tracker, sums: dict, meter: Throughput, bar: tqdm) -> None:
        values = {f"train/{k}": float(v) for k, v in sums.items()}
        values.update({"train/lr": self.sched.get_last_lr()[0],
                       "train/bpp_index": self.model.bpp_index(),
                       "train/patches_per_s": meter.rate()})
        tracker.log(values, self.pos.step)
        bar.set_postfix(loss=f"{values['train/loss']:.4f}", psnr=f"{values['train/psnr']:.2f}")

    def run_eval(self, tracker: Tracker) -> dict[str, float]:
        """Evaluate, log and render; raises Stopped (on every rank alike) when a stop request
        cuts the pass short: nothing is logged then."""
        loader = eval_loader(self.val_ds, self.cfg, self.env)
        try:
            metrics = evaluate(self.model, loader, self.input, self.depths,
                               self.cfg.train.eval_batches, self.autocast,
                               stop=self.stop_requested)
        finally:
            loader.shutdown()
        metrics = {f"val/{k}": v for k, v in metrics.items()}
        tracker.log(metrics, self.pos.step)
        if self.env.is_main:
            tracker.log_images(self.render_images(), self.pos.step)
            if self.pos.step < self.cfg.train.steps:  # the last one is the final table
                tqdm.write(format_table(metrics, title=f"eval at step {self.pos.step}"))
        return metrics

    @torch.no_grad()
    def render_images(self) -> dict:
        n = min(self.cfg.train.eval_images, len(self.val_ds))
        if n == 0:
            return {}
        x = self.input(default_collate([self.val_ds[i] for i in range(n)]))  # (n, C, H, W)
        self.model.eval()
        out = self.model(x)
        dn_hat = self.model.to_dn(out.recon, out.patch_means)
        self.model.train()
        panels = render_panel(x, dn_hat, self.model.bands, step=self.pos.step)
        return {f"val/{k}": v for k, v in panels.items()}

    def checkpoint(self, metric: float | None = None) -> None:
        if self.env.is_main:
            self.ckpts.save(self.pos.step, self.state(), metric=metric)
        self.saved_step = self.pos.step
        if self.env.enabled:
            torch.distributed.barrier()

    def eval_and_checkpoint(self, tracker: Tracker) -> dict[str, float] | None:
        """Evaluation steps also checkpoint (best.pt follows val/psnr). A stop request during
        the evaluation checkpoints without it at once (a pass over the whole validation split
        may outlast the grace time before SIGKILL); the resumed run evaluates first."""
        if self.schedule.evaluates(self.pos.step):
            try:
                metrics = self.run_eval(tracker)
            except Stopped:
                log.warning("evaluation at step %d stopped: checkpointing without it (a resumed "
                            "run evaluates this step first)", self.pos.step)
                self.checkpoint()
                return None
            self.checkpoint(metrics.get("val/psnr"))
            return metrics
        if self.schedule.checkpoints(self.pos.step):
            self.checkpoint()
        return None

    def stop_requested(self) -> bool:
        """Whether any rank got TERM/USR1/INT (a collective under DDP: all ranks call it)."""
        return bool(all_reduce_max(float(self.stop.requested), self.device))

    def preempted(self) -> bool:
        """Any rank signalled: checkpoint (unless this step already did) and stop."""
        if not self.stop_requested():
            return False
        if self.saved_step != self.pos.step:
            self.checkpoint()
        return True

    @torch.no_grad()
    def rank_divergence(self) -> float:
        """Largest difference of any weight or codebook entry between ranks (0 when in sync)."""
        flat = torch.cat([t.detach().float().ravel() for t in self.model.state_dict().values()])
        hi, lo = flat.clone(), flat.clone()
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        return float((hi - lo).abs().max())

    # ---- main loop -----------------------------------------------------------------------
    def resumed_eval(self, tracker: Tracker) -> dict[str, float]:
        """The evaluation of the step this run resumed at, if that step evaluates: read back
        from metrics.jsonl, or run now when a stop cut it short before its checkpoint."""
        step = self.pos.step
        if step == 0 or not self.schedule.evaluates(step):
            return {}
        record = eval_record(self.run_dir / "metrics.jsonl", step) if self.env.is_main else None
        if not all_reduce_max(float(self.env.is_main and record is None), self.device):
            return record or {}
        log.info("step %d has no evaluation yet (stopped during it): evaluating now", step)
        metrics = self.run_eval(tracker)
        self.checkpoint(metrics.get("val/psnr"))  # the same state, now with its metric
        return metrics

    def fit(self, stop: StopFlag) -> int:
        """Train to train.steps, then fit the prior: 0. Stopped by TERM/USR1/INT: the state
        is checkpointed (unless nothing changed since the last checkpoint) and 75 returned."""
        t, self.stop = self.cfg.train, stop
        if self.stop_requested():  # while data and model loaded: nothing new to save
            log.warning("stopped before training started (exit status %d)", EXIT_PREEMPTED)
            return EXIT_PREEMPTED
        self.maybe_resume()
        if self.complete():
            return 0
        self.prepare_run_dir()
        if self.env.is_main:
            log.info("%s", self.model.summary())
        tracker = make_tracker(self.cfg.run.tracker, self.run_dir, to_dict(self.cfg),
                               self.cfg.run.project, self.env.rank,
                               self.cfg.run.name or self.run_dir.name)
        meter, status, metrics = Throughput(), 0, {}
        bar = progress_bar(t.steps, self.pos.step, self.env.is_main, sys.stderr.isatty())
        try:
            metrics = self.resumed_eval(tracker)
            if self.pos.step < t.steps:
                self.clear_prior()
            for group in self.batches() if self.pos.step < t.steps else ():
                sums = self.train_step(group, self.schedule.logs(self.pos.step + 1))
                self.pos.step += 1
                meter.add(sum(len(b["name"]) for b in group) * self.env.world_size)
                bar.update(1)
                if sums:
                    self.log_train(tracker, sums, meter, bar)
                with paused(bar):
                    metrics = self.eval_and_checkpoint(tracker) or metrics
                if self.preempted():  # the last step too: the prior fit is still to come
                    status = EXIT_PREEMPTED
                    break
                if self.pos.step >= t.steps:
                    break
                meter.restart()
        except Stopped:  # the evaluation of a resumed step; its checkpoint is there already
            status = EXIT_PREEMPTED
        finally:
            bar.close()
        return self.finish(tracker, status, metrics)

    def finish(self, tracker: Tracker, status: int, metrics: dict) -> int:
        if self.env.enabled:
            tracker.log({"ddp/max_param_diff": self.rank_divergence()}, self.pos.step)
        if status == 0 and self.env.is_main:
            tracker.summary(metrics)
            status = self.fit_prior()
            if status == 0:  # the result last, where it does not scroll away
                print(format_table(metrics, title=f"final ({self.pos.step} steps)"))
                print("\n".join(self.report()))
        if self.env.enabled:  # the other ranks wait (one that tears its gloo group down early
            # aborts) and learn whether rank 0's prior fit was stopped
            status = int(all_reduce_max(float(status), self.device))
        tracker.close()
        if status == EXIT_PREEMPTED and self.env.is_main and self.saved_step >= 0:
            again = self.command or "the same command with --run.resume=auto"
            print(f"saved {self.ckpts.path_for(self.saved_step)}; continue with: {again}")
        return status

    def report(self, complete: bool = False) -> list[str]:
        """What the run folder holds (or, `complete`, that the run needs nothing more) and the
        commands that use its best checkpoint."""
        last = self.ckpts.path_for(self.pos.step)
        best = self.ckpts.best() if self.ckpts.best_path.is_file() else None
        ckpt = self.ckpts.best_path if best else last
        if complete:
            head = [(f"run {self.run_dir} is complete: trained to step {self.pos.step} of "
                     f"{self.cfg.train.steps}, prior fitted; nothing changed. Best checkpoint: "
                     f"{ckpt}")]
        else:
            head = run_report(self.run_dir, last, best)
        return head + next_commands(ckpt, self.cfg.data.path)  # as given, or the sample

    def complete(self) -> bool:
        """A resumed run with nothing left to do (trained to train.steps, its prior fitted
        into the last checkpoint and best.pt) says so and changes no file."""
        if self.pos.step < self.cfg.train.steps or self.saved_step < 0:
            return False
        done = not self.env.is_main or not any(self.unfitted())
        if all_reduce_max(float(not done), self.device):
            return False
        if self.env.is_main:
            print("\n".join(self.report(complete=True)))
        return True

    def clear_prior(self) -> None:
        """Training on from a checkpoint with a fitted prior: the prior no longer fits the
        weights, so the checkpoints to come say so (the last one gets a new fit)."""
        if bool(self.model.prior.fitted):
            log.info("training on from step %d: its prior is refitted at the end", self.pos.step)
            self.model.prior.fitted.fill_(False)

    def unfitted(self) -> tuple[list[Path], Path | None]:
        """(checkpoints of the last step, best.pt of an earlier step or None) whose prior is
        still to fit; rank 0 only. `clear_prior` makes `prior.fitted` mean "fitted on these
        weights", so a file whose prior is fitted needs nothing."""
        own = [] if bool(self.model.prior.fitted) else [self.ckpts.path_for(self.pos.step)]
        best, path = self.ckpts.best(), self.ckpts.best_path
        if best is None or not path.is_file():
            return own, None
        if best["step"] == self.pos.step:  # the same weights: rewritten with the last step's
            return own + [path] if own or not prior_fitted(path) else own, None
        return own, None if prior_fitted(path) else path

    def fit_prior(self) -> int:
        """Rank 0 fits the codec's prior after the last step. A stop request cuts it short:
        75, with the last step's checkpoint as it was (training complete, no prior yet); the
        resumed run (--run.resume=auto) finds it complete and only fits the prior."""
        train_ds = self.source.dataset("train")  # float images: the CPU-resampled reader
        log.info("training complete at step %d: fitting the prior on %d train patches",
                 self.pos.step, len(train_ds))
        try:
            self.fit_into_checkpoints(train_ds)
        except Stopped:
            log.warning("prior fit stopped: training is complete and checkpointed at step %d; "
                        "resume (--run.resume=auto) to fit the prior", self.pos.step)
            return EXIT_PREEMPTED
        return 0

    def fit_into_checkpoints(self, train_ds) -> None:
        """Fit the prior on the train split into the checkpoints `unfitted` names: the last
        step's (best.pt too when it is that step), and best.pt of an earlier step refitted on
        its own weights. A checkpoint is rewritten whole or not."""
        if len(train_ds) < 2:
            log.warning("train split has %d patch(es): no prior fitted", len(train_ds))
            return
        data = self.cfg.data
        fit = {"batch_size": data.batch_size, "workers": data.num_workers, "progress": False,
               "stop": lambda: self.stop.requested}
        own, earlier_best = self.unfitted()
        if own:
            text = fit_and_save(self.model, train_ds, own, self.state, self.device, **fit)
            log.info("prior fitted on %d train patches:\n%s", len(train_ds), text)
        if earlier_best is not None:
            state = read_checkpoint(earlier_best)
            model, _ = model_from_state(earlier_best, state, self.device)
            fit_and_save(model, train_ds, [earlier_best], lambda: state, self.device, **fit)

    def close(self) -> None:
        """Stop the train loader's worker processes (they ignore TERM) and close the data."""
        self.loader.shutdown()
        self.source.close()


def train(cfg: Config, config_files: list[str] = (), command: str | None = None) -> int:
    """Run `cfg`; `config_files` (the YAML files it came from) are inputs that
    --run.overwrite=true never removes; `command` (a shell line) continues the run after a
    stop, printed with the checkpoint it continues from."""
    trainer = None
    # from the start: a signal while data and model load is no crash
    with StopFlag("checkpointing at the next step") as stop:
        try:
            trainer = Trainer(cfg, config_files, command)
            return trainer.fit(stop)
        finally:
            if trainer is not None:
                trainer.close()
            cleanup()
