"""The run folder (`--run.dir`): what a run reads (never removed), an earlier run's outputs,
the records of metrics.jsonl, config.yaml with the paths as read, and what a finished run says
it wrote and which commands come next."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from vqae.config import Config, dump_yaml
from vqae.data.sample import sample_dir
from vqae.data.source import resolve_path
from vqae.errors import DataError
from vqae.io.atomic import write_atomic
from vqae.io.run_outputs import WANDB_RUN, check_removable, earlier_outputs, remove
from vqae.io.shell import join
from vqae.training.tracking import read_jsonl


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


def _newest_wandb_run(run_dir: Path) -> str | None:
    runs = sorted(p.name for p in (run_dir / "wandb").glob("*run-*") if WANDB_RUN.match(p.name))
    return runs[-1] if runs else None  # named by start time: one folder per (re)start


def run_report(run_dir: Path, last: Path, best: dict | None) -> list[str]:
    """What a finished run wrote into `run_dir`: its last checkpoint `last`, best.pt (`best`:
    its best.json record, None when there is none), the logs and the tracker's run."""
    pngs = len(list((run_dir / "images").glob("*.png")))
    lines = [f"wrote {run_dir}/:"]
    if best:
        lines.append(f"  checkpoints/best.pt  val/psnr {best['metric']:.2f} at step "
                     f"{best['step']}, with its prior: the codec")
    lines += [f"  checkpoints/{last.name}  the last step",
              f"  config.yaml, metrics.jsonl, summary.json, images/ ({pngs} PNGs)"]
    wandb = _newest_wandb_run(run_dir)
    if wandb:
        how = " (offline: `wandb sync` uploads it)" if wandb.startswith("offline-") else ""
        lines.append(f"  wandb/{wandb}{how}")
    return lines


def next_commands(ckpt: Path, data: str) -> list[str]:
    """The commands that use a trained checkpoint `ckpt`, on the `data` it was trained on."""
    out = ckpt.parent.parent  # the run folder
    return ["next:", "  " + join(["vqae", "evaluate", ckpt, "--split", "test"]),
            "  " + join(["vqae", "compress", ckpt, data, "-o", out / "vqz"]),
            "  " + join(["vqae", "rd", "--ckpt", ckpt, "--data", data, "--out", out / "rd"])]



class RunFolder:
    """Preparing the run folder and saying what it holds (a mixin of the Trainer)."""

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
