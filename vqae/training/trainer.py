"""`vqae train`: the Trainer (set-up, one step, the loop) and `train(cfg)`. Its other parts
are mixins beside it: resume (state), run_folder, hooks (log, eval, checkpoint, stops) and
prior_fit (the end of a run)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from vqae.checkpoint.manager import CheckpointManager
from vqae.config import Config, to_dict
from vqae.data.device_input import DeviceInput, Prefetcher
from vqae.data.loader import Loader
from vqae.data.source import DataSource
from vqae.data.stats import load_stats
from vqae.distributed import all_reduce_max, cleanup, setup
from vqae.errors import ConfigError
from vqae.io.stops import EXIT_PREEMPTED, StopFlag, Stopped
from vqae.metrics import psnr, ssim
from vqae.models import build_model
from vqae.training.augment import augment, stretch_contrast
from vqae.training.evaluate import eval_depths
from vqae.training.hooks import Hooks
from vqae.training.prior_fit import PriorFit
from vqae.training.resume import Position, Resumable, ResumableSampler
from vqae.training.run_folder import RunFolder, as_read, check_run_dir, run_inputs
from vqae.training.schedule import (
    Schedule,
    Throughput,
    amp_setup,
    build_optimizer,
    loader_generator,
    paused,
    progress_bar,
    seed_everything,
)
from vqae.training.tracking import Tracker, format_table, make_tracker

log = logging.getLogger(__name__)



class Trainer(Resumable, RunFolder, Hooks, PriorFit):
    """One run: data, model, optimizer and loader set up once; `fit` trains to train.steps."""

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

