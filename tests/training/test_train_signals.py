"""Stop requests to the whole process group (Slurm, `timeout`, Ctrl-C) while `vqae train` runs
with DataLoader workers: the workers ignore them, the run checkpoints where it stopped, exits 75
and resumes; a stop during evaluation saves without it; a second Ctrl-C stops at once."""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes import write_fake_tree
from tests.training.test_train import REPO, train_args
from vqae.checkpoint.manager import load_model
from vqae.cli import main
from vqae.training.tracking import read_jsonl
from vqae.training.trainer import EXIT_PREEMPTED

WORKERS = ["--data.num_workers=2", "--data.persistent_workers=true", "--run.tracker=none"]


class Run:
    """`python -m vqae train ...` in its own session (its pid is the process group's id), its
    stderr in a file."""

    def __init__(self, run_dir: Path, *args: str):
        self.dir, self.out_path = run_dir, run_dir.parent / f"{run_dir.name}.stdout"
        self.err_path = self.out_path.with_suffix(".stderr")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
        with open(self.out_path, "w") as out, open(self.err_path, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vqae", *train_args(run_dir, *WORKERS, *args)], env=env,
                cwd=REPO, stdout=out, stderr=err, start_new_session=True)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def train_steps(self) -> list[int]:
        path = self.dir / "metrics.jsonl"
        return [r["step"] for r in read_jsonl(path) if "train/loss" in r] if path.is_file() else []

    def wait_until(self, predicate, what: str, timeout: float = 180) -> None:
        end = time.monotonic() + timeout
        while not predicate():
            assert self.proc.poll() is None, f"ended before {what}:\n{self.stderr[-3000:]}"
            assert time.monotonic() < end, f"no {what} after {timeout} s:\n{self.stderr[-3000:]}"
            time.sleep(0.01)

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self) -> tuple[int, float]:
        """(exit status, seconds since the call) once every process of the group has gone."""
        start = time.monotonic()
        code = self.proc.wait(timeout=120)
        seconds = time.monotonic() - start
        with pytest.raises(ProcessLookupError):  # no worker left behind
            os.killpg(self.proc.pid, 0)
        return code, seconds


def ckpt_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("ckpt-*.pt"))


def eval_steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl") if "val/psnr" in r]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1], ids=["TERM", "USR1"])
def test_group_signal_checkpoints_the_step_exits_75_and_resumes(sample_dir, tmp_path, sig):
    run = Run(tmp_path / "run", "--train.steps=400", "--train.checkpoint_every=1000",
              "--train.eval_every=1000")
    run.wait_until(lambda: len(run.train_steps()) >= 2, "two training steps")
    run.signal_group(sig)
    code, seconds = run.wait()
    assert code == EXIT_PREEMPTED, run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "exited unexpectedly" not in run.stderr
    assert f"received {sig.name}: checkpointing at the next step" in run.stderr
    stopped = run.train_steps()[-1]
    assert ckpt_steps(run.dir) == [stopped] and 2 <= stopped < 400
    given = train_args(run.dir, *WORKERS, "--train.steps=400", "--train.checkpoint_every=1000",
                       "--train.eval_every=1000")
    line = run.stdout.splitlines()[-1]  # the checkpoint, and the command that continues it
    saved = run.dir / "checkpoints" / f"ckpt-{stopped:08d}.pt"
    again = shlex.join(["vqae", *given, "--run.resume=auto"])
    assert line == f"saved {saved}; continue with: {again}"
    print(f"{sig.name}: exit {code} {seconds:.2f} s after the signal, at step {stopped}")
    if sig != signal.SIGTERM:
        return
    assert main(train_args(run.dir, *WORKERS, f"--train.steps={stopped + 2}",
                           "--train.checkpoint_every=1000", "--run.resume=auto")) == 0
    assert run.train_steps() == list(range(1, stopped + 3))  # continued, no step twice
    assert ckpt_steps(run.dir) == [stopped, stopped + 2]


@pytest.mark.slow
def test_signal_during_evaluation_checkpoints_without_it_and_resume_evaluates_first(
        sample_dir, tmp_path, caplog):
    run = Run(tmp_path / "run", "--train.steps=4", "--train.eval_every=3",
              "--train.checkpoint_every=1000")
    run.wait_until(lambda: 2 in run.train_steps(), "step 2")
    time.sleep(0.02)  # in step 3, before or during its evaluation: both stop the evaluation
    run.signal_group(signal.SIGTERM)
    code, _ = run.wait()
    assert code == EXIT_PREEMPTED, run.stderr[-3000:]
    assert "evaluation at step 3 stopped: checkpointing without it" in run.stderr
    assert ckpt_steps(run.dir) == [3] and eval_steps(run.dir) == []
    assert not (run.dir / "checkpoints" / "best.pt").exists()
    caplog.set_level(logging.INFO, logger="vqae.training")
    assert main(train_args(run.dir, *WORKERS, "--train.steps=4", "--train.eval_every=3",
                           "--train.checkpoint_every=1000", "--run.resume=auto")) == 0
    assert "step 3 has no evaluation yet (stopped during it): evaluating now" in caplog.text
    assert eval_steps(run.dir) == [3, 4] and run.train_steps() == [1, 2, 3, 4]
    assert (run.dir / "checkpoints" / "best.pt").is_file()


@pytest.mark.slow
def test_signal_while_data_and_model_load_exits_75_with_nothing_written(sample_dir, tmp_path):
    run = Run(tmp_path / "run", "--train.steps=400")
    run.wait_until(lambda: "upsampled" in run.stderr, "the data source opened")  # Trainer.__init__
    run.signal_group(signal.SIGTERM)
    code, _ = run.wait()
    assert code == EXIT_PREEMPTED, run.stderr[-3000:]
    assert "stopped before training started" in run.stderr and "Traceback" not in run.stderr
    assert not (run.dir / "checkpoints").exists() and not (run.dir / "metrics.jsonl").exists()


@pytest.mark.slow
def test_second_interrupt_stops_at_once_without_a_traceback(sample_dir, tmp_path):
    run = Run(tmp_path / "run", "--train.steps=400", "--train.checkpoint_every=1000",
              "--train.eval_every=1000")
    run.wait_until(lambda: len(run.train_steps()) >= 2, "two training steps")
    run.signal_group(signal.SIGINT)
    time.sleep(0.01)  # within the step: the first INT's checkpoint comes after it
    run.signal_group(signal.SIGINT)
    code, _ = run.wait()
    assert code == 130, run.stderr[-3000:]
    assert "vqae train: interrupted" in run.stderr
    assert "Ctrl-C again stops at once, unsaved" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.slow
def test_signal_during_the_prior_fit_exits_75_and_resume_only_fits_the_prior(tmp_path, caplog):
    data = tmp_path / "tiffs"
    write_fake_tree(data, n=48, seed=5)  # about 24 train patches: a dozen prior-fit batches
    common = [f"--data={data}", "--data.split_ratios=[0.5,0.5,0]", "--data.batch_size=2",
              "--train.steps=2", "--train.eval_batches=1", "--train.eval_images=0"]
    run = Run(tmp_path / "run", *common)
    run.wait_until(lambda: "fitting the prior" in run.stderr, "the end of training")
    run.signal_group(signal.SIGTERM)
    code, _ = run.wait()
    assert code == EXIT_PREEMPTED, run.stderr[-3000:]
    assert "prior fit stopped: training is complete and checkpointed at step 2" in run.stderr
    assert "Traceback" not in run.stderr and "final (2 steps)" not in run.stdout
    assert f"saved {run.dir / 'checkpoints' / 'ckpt-00000002.pt'}; continue with: " in run.stdout
    assert ckpt_steps(run.dir) == [2] and eval_steps(run.dir) == [2]
    assert not load_model(run.dir / "checkpoints" / "ckpt-00000002.pt")[0].prior.fitted
    caplog.set_level(logging.INFO, logger="vqae")
    assert main(train_args(run.dir, *WORKERS, *common, "--run.resume=auto")) == 0
    assert "prior fitted on" in caplog.text and "resumed from" in caplog.text
    assert run.train_steps() == [1, 2] and eval_steps(run.dir) == [2]  # nothing trained again
    for name in ("ckpt-00000002.pt", "best.pt"):
        assert load_model(run.dir / "checkpoints" / name)[0].prior.fitted, name


def test_gnu_timeout_reports_124_unless_preserve_status_as_the_readme_says(tmp_path):
    """`timeout` exits 124 when it stopped the command, whatever the command's own status;
    `--preserve-status` passes the 75 of a run that checkpointed on its TERM."""
    readme = (REPO / "README.md").read_text()
    assert "`timeout` itself exits 124" in readme and "--preserve-status" in readme
    ready = tmp_path / "ready"  # a stand-in that, like vqae train, exits 75 on TERM
    script = f"trap 'exit 75' TERM; touch {shlex.quote(str(ready))}; while :; do sleep 0.05; done"
    for flags, status in (([], 124), (["--preserve-status"], EXIT_PREEMPTED)):
        res = subprocess.run(["timeout", *flags, "-s", "TERM", "2", "sh", "-c", script],
                             timeout=30, check=False)
        assert ready.exists() and res.returncode == status, flags
