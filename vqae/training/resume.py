"""A run's training state: what a checkpoint holds, the loader position, and
`--run.resume` (auto: the newest sound checkpoint of the run folder, or a named file)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import DistributedSampler

from vqae.checkpoint.format import check_optimizer_shapes, check_scheduler, check_state
from vqae.checkpoint.manager import capture_rng_state, read_checkpoint, restore_rng_state
from vqae.config import to_dict
from vqae.errors import DataError

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



class Resumable:
    """The Trainer's state and its resume (a mixin: the Trainer owns model, opt, sched, scaler,
    pos, cfg, ckpts, device, run_dir and saved_step)."""

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
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError,
                    OverflowError) as err:
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
