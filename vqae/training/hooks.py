"""What the training loop does around its steps, on the schedule: log, evaluate (with the
reconstruction panels), checkpoint, and answer stop requests on every rank alike."""

from __future__ import annotations

import logging

import torch
from torch.utils.data import default_collate
from tqdm import tqdm

from vqae.distributed import all_reduce_max
from vqae.io.stops import Stopped
from vqae.training.evaluate import eval_loader, evaluate
from vqae.training.images import render_panel
from vqae.training.run_folder import eval_record
from vqae.training.schedule import Throughput
from vqae.training.tracking import Tracker, format_table

log = logging.getLogger(__name__)



class Hooks:
    """Logging, evaluation, checkpoints and stops (a mixin of the Trainer)."""

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
