"""The end of a run: the codec's prior fitted into its last checkpoint and best.pt (each
rewritten whole or not), and a resumed run that finds nothing left to do."""

from __future__ import annotations

import logging
from pathlib import Path

from vqae.checkpoint.manager import fit_and_save, model_from_state, read_checkpoint
from vqae.distributed import all_reduce_max
from vqae.io.stops import EXIT_PREEMPTED, Stopped

log = logging.getLogger(__name__)


def prior_fitted(path: Path) -> bool:
    return bool(read_checkpoint(path)["model"]["prior.fitted"])



class PriorFit:
    """Fitting the prior after the last step (a mixin of the Trainer)."""

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
