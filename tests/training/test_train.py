"""End to end training on the real sample: logging, checkpoints, exact resume, signals, DDP."""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vqae.checkpoint.manager import load_checkpoint
from vqae.cli import main
from vqae.training.augment import augment
from vqae.training.tracking import read_jsonl
from vqae.training.trainer import EXIT_PREEMPTED

REPO = Path(__file__).resolve().parents[2]
TINY = ["--model.widths=[8,16]", "--model.blocks_per_stage=1", "--model.latent_dim=8",
        "--model.groups=4", "--quantizer.codebook_size=32", "--data.batch_size=4",
        "--data.num_workers=0", "--optim.warmup_steps=2", "--train.log_every=1",
        "--train.eval_images=2", "--train.deterministic=true"]


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def train_args(run_dir, *extra):
    return ["train", "--config", str(REPO / "configs/debug.yaml"), *TINY,
            f"--run.dir={run_dir}", *extra]


def cli(*args):
    """Run `python -m vqae` in a subprocess (for kill tests), unbuffered."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "vqae", *args], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(path_glob: str, folder: Path, proc, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if list(folder.glob(path_glob)):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError(f"{path_glob} never appeared in {folder}")


def final_weights(run_dir: Path) -> dict:
    ckpts = sorted((run_dir / "checkpoints").glob("ckpt-*.pt"))
    return load_checkpoint(ckpts[-1])["model"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_short_run_learns_and_logs_everything(sample_dir, tmp_path, wandb_env):
    run = tmp_path / "run"
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)]
    assert main(train_args(run, "--train.steps=24", "--train.eval_every=4",
                           "--run.tracker=wandb")) == 0
    # training catches SIGTERM/SIGUSR1 only while it runs (a forked pool worker of a process
    # that trained before must still die on SIGTERM)
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)] == handlers
    records = read_jsonl(run / "metrics.jsonl")
    evals = [r for r in records if "val/psnr" in r]
    assert [r["step"] for r in evals] == [4, 8, 12, 16, 20, 24]
    assert evals[-1]["val/psnr"] > evals[0]["val/psnr"] + 1.0
    assert evals[-1]["val/loss/mse"] < evals[0]["val/loss/mse"]
    for key in ("val/ssim", "val/sam", "val/bpp_index", "val/bpp_histogram", "val/usage/0",
                "val/psnr/B08", "val/dead_codes/0"):
        assert key in evals[-1]
    assert any("train/loss" in r for r in records)
    assert list((run / "images").glob("val_true_color_step*.png"))
    assert list((run / "images").glob("val_false_color_step*.png"))
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "best.pt").exists()
    offline = list((run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert offline and offline[0].stat().st_size > 0
    state = load_checkpoint(run / "checkpoints" / "best.pt")
    assert {"model", "optimizer", "scheduler", "rng", "position", "config"} <= state.keys()
    assert "normalize.mean" in state["model"]  # the statistics travel with the weights


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(sample_dir, tmp_path):
    common = ["--train.steps=14", "--train.checkpoint_every=3", "--train.eval_every=7",
              "--run.tracker=none"]
    assert main(train_args(tmp_path / "a", *common)) == 0
    proc = cli(*train_args(tmp_path / "b", *common))
    wait_for("checkpoints/ckpt-00000003.pt", tmp_path / "b", proc)  # alive when it appeared
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    # the kill landed mid-run: a child that finished first exits 0 and its run is complete
    assert proc.returncode == -signal.SIGKILL, f"exit {proc.returncode}, not killed:\n{out}"
    assert not (tmp_path / "b" / "checkpoints" / "ckpt-00000014.pt").exists()
    assert main(train_args(tmp_path / "b", *common, "--run.resume=auto")) == 0
    assert_same_weights(final_weights(tmp_path / "a"), final_weights(tmp_path / "b"))
    last = lambda d: [r for r in read_jsonl(d / "metrics.jsonl") if "val/psnr" in r][-1]
    assert last(tmp_path / "a") == last(tmp_path / "b")
    steps = [r["step"] for r in read_jsonl(tmp_path / "b" / "metrics.jsonl") if "train/loss" in r]
    assert steps == sorted(set(steps))  # no step logged twice after the resume


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_for_requeue(sample_dir, tmp_path):
    run = tmp_path / "run"
    proc = cli(*train_args(run, "--train.steps=400", "--train.checkpoint_every=1000",
                           "--train.eval_every=1000", "--run.tracker=none"))
    wait_for("metrics.jsonl", run, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PREEMPTED, out
    ckpts = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    assert len(ckpts) == 1 and 0 < load_checkpoint(ckpts[0])["position"]["step"] < 400


@pytest.mark.slow
def test_corrupt_newest_checkpoint_resumes_from_previous(sample_dir, tmp_path, caplog):
    common = ["--train.steps=8", "--train.checkpoint_every=2", "--train.eval_every=100",
              "--run.tracker=none"]
    assert main(train_args(tmp_path / "a", *common)) == 0
    reference = final_weights(tmp_path / "a")
    newest = sorted((tmp_path / "a" / "checkpoints").glob("ckpt-*.pt"))[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # torn write
    assert main(train_args(tmp_path / "a", *common, "--run.resume=auto")) == 0
    assert "ckpt-00000008.pt" in caplog.text  # named as skipped
    assert_same_weights(reference, final_weights(tmp_path / "a"))


def free_port() -> int:
    """A port nothing listens on now: a fixed one collides with a test or job still on it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_ddp_two_processes_stay_consistent(sample_dir, tmp_path):
    run = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={free_port()}", "-m", "vqae", *train_args(run, "--train.steps=6",
           "--train.eval_every=3", "--run.tracker=none", "--run.device=cpu",
           "--data.batch_size=2")]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    records = read_jsonl(run / "metrics.jsonl")
    assert [r["ddp/max_param_diff"] for r in records if "ddp/max_param_diff" in r] == [0.0]
    assert [r["step"] for r in records if "val/psnr" in r] == [3, 6]


@pytest.mark.slow
def test_evaluate_command_rebuilds_model_from_checkpoint(sample_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(train_args(run, "--train.steps=2", "--train.eval_every=2",
                           "--run.tracker=none")) == 0
    out = tmp_path / "test.json"
    assert main(["evaluate", str(run / "checkpoints" / "best.pt"), "--split", "test",
                 "--out", str(out), "--device", "cpu", "--psnr-threshold", "180"]) == 0
    metrics = json.loads(out.read_text())
    assert metrics["patches"] == 8 and metrics["split"] == "test" and 0 < metrics["psnr"] < 100
    assert metrics["bpp_index"] == pytest.approx(15 * 15 * 5 / 14400)
    # the worst patches beside the mean (DESIGN.md's aggregates)
    assert metrics["psnr_min"] <= metrics["psnr_p10"] <= metrics["psnr"] + 0.01
    assert metrics["psnr_pooled"] <= metrics["psnr"] and metrics["psnr_threshold"] == 180
    assert metrics["patches_below"] == 8  # every patch is under 180 dB
    assert "evaluating split 'test' from the split metadata: 8 of 24" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    assert "checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_out_replaces_only_an_earlier_result(sample_dir, tmp_path, capsys):
    """--out never replaces the checkpoint, the split metadata, a folder or a stranger's file;
    an earlier result of `vqae evaluate` it does replace."""
    run = tmp_path / "run"
    assert main(train_args(run, "--train.steps=1", "--train.eval_every=1",
                           "--run.tracker=none", "--train.eval_images=0")) == 0
    capsys.readouterr()
    ckpt = run / "checkpoints" / "ckpt-00000001.pt"
    (tmp_path / "link.pt").symlink_to(ckpt)
    (tmp_path / "notes.json").write_text('{"psnr": 40}\n')
    (tmp_path / "folder").mkdir()
    splits = tmp_path / "metadata.parquet"
    splits.write_bytes((sample_dir / "metadata.parquet").read_bytes())
    kept = {p: p.read_bytes() for p in (ckpt, splits, tmp_path / "notes.json")}
    evaluate = ["evaluate", str(ckpt), "--split", "all", "--device", "cpu", "--splits",
                str(splits), "--out"]
    for out, why in ((ckpt, "is the input"), (tmp_path / "link.pt", "is the input"),
                     (splits, "is the input"), (tmp_path / "folder", "is a folder"),
                     (tmp_path / "notes.json", "not an earlier `vqae evaluate` result")):
        assert main([*evaluate, str(out)]) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("vqae evaluate: error:")]
        assert len(lines) == 1 and why in lines[0] and str(out) in lines[0], err
        assert "Traceback" not in err
    assert {p: p.read_bytes() for p in kept} == kept
    out = tmp_path / "metrics.json"
    assert main([*evaluate, str(out)]) == 0
    first = json.loads(out.read_text())
    assert first["written_by"] == "vqae evaluate" and first["patches"] == 18  # listed
    assert main([*evaluate[:3], "test", *evaluate[4:], str(out)]) == 0  # replaced
    assert json.loads(out.read_text())["patches"] < 18


@pytest.mark.slow
def test_evaluate_a_new_folder_whole_or_by_hash_and_from_any_folder(
        tmp_path, capsys, caplog, monkeypatch):
    from tests.fakes import write_fake_tree

    write_fake_tree(tmp_path / "tiffs", n=12)
    write_fake_tree(tmp_path / "new", n=36, seed=3)
    monkeypatch.chdir(tmp_path)
    assert main(train_args(tmp_path / "run", "--train.steps=2", "--train.eval_every=2",
                           "--run.tracker=none", "--data", "tiffs",  # a relative path
                           "--data.split_ratios=[2,1,1]", "--data.batch_size=2")) == 0
    ckpt = str(tmp_path / "run" / "checkpoints" / "best.pt")
    monkeypatch.chdir(REPO)  # the saved config holds the data path absolute
    assert main(["evaluate", ckpt, "--split", "validation", "--device", "cpu"]) == 0
    assert "of 12 patches of " + str(tmp_path / "tiffs") in capsys.readouterr().out
    assert main(["evaluate", ckpt, "--data", str(tmp_path / "new"), "--split", "all",
                 "--out", str(tmp_path / "all.json")]) == 0
    assert "evaluating all 36 patches" in capsys.readouterr().out
    assert json.loads((tmp_path / "all.json").read_text())["patches"] == 36
    assert main(["evaluate", ckpt, "--data", str(tmp_path / "new")]) == 0
    out = capsys.readouterr().out
    assert "split 'test' chosen by name hash" in out and "of 36 patches" in out
    assert "no split metadata and no --split" in caplog.text


def files(folder: Path) -> dict:
    """Every file's mtime and bytes; of wandb's debug logs (which its service process may
    still append to after the run closed) only the names."""
    return {p: "log" if "logs" in p.parts else (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_first_run_ends_with_its_result_and_next_commands_and_resumes_once_complete(
        sample_dir, tmp_path, wandb_env, capsys, caplog, monkeypatch):
    """The end of a run: the final table once, what was written, the next commands; the
    sample's resolved paths in config.yaml. Resumed when complete: a line saying so, no file
    changed. Resumed with more steps: trains on, the prior refitted."""
    import yaml

    monkeypatch.delenv("WANDB_SILENT")
    run = tmp_path / "run"
    common = ["--train.steps=2", "--train.eval_every=2", "--run.tracker=wandb"]
    assert main(train_args(run, *common)) == 0
    out = capsys.readouterr()
    table_rows = [line for line in out.out.splitlines() if line.startswith("val/psnr ")]
    assert len(table_rows) == 1 and "eval at step 2" not in out.out  # one table
    assert "Run history" not in out.err and "Run summary" not in out.err
    tail = out.out.splitlines()[-9:]
    ckpt = run / "checkpoints" / "best.pt"
    lmdb = sample_dir / "BigEarthNet-V2-LMDB"
    assert tail[0] == f"wrote {run}/:" and tail[1].startswith("  checkpoints/best.pt  val/psnr ")
    assert tail[2] == "  checkpoints/ckpt-00000002.pt  the last step"
    assert tail[3] == "  config.yaml, metrics.jsonl, summary.json, images/ (2 PNGs)"
    assert tail[4].startswith("  wandb/offline-run-")
    assert tail[5:] == ["next:", f"  vqae evaluate {ckpt} --split test",
                        f"  vqae compress {ckpt} {lmdb} -o {run / 'vqz'}",
                        f"  vqae rd --ckpt {ckpt} --data {lmdb} --out {run / 'rd'}"]
    saved = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert saved["path"] == str(lmdb) and saved["splits"] == str(sample_dir / "metadata.parquet")
    assert load_checkpoint(ckpt)["config"]["data"]["path"] == str(lmdb)

    before = files(run)
    assert main(train_args(run, *common, "--run.resume=auto")) == 0
    assert f"run {run} is complete: trained to step 2 of 2, prior fitted; nothing changed. " \
           f"Best checkpoint: {ckpt}" in capsys.readouterr().out
    assert files(run) == before  # checkpoints, metrics.jsonl, config.yaml, wandb/: untouched

    caplog.set_level(logging.INFO, logger="vqae.training")
    assert main(train_args(run, *common[1:], "--train.steps=3", "--run.resume=auto")) == 0
    assert "training on from step 2: its prior is refitted at the end" in caplog.text
    steps = [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "train/loss" in r]
    assert steps == [1, 2, 3]
    for name in ("ckpt-00000003.pt", "best.pt"):
        assert load_checkpoint(run / "checkpoints" / name)["model"]["prior.fitted"], name


def test_continue_command_is_the_command_given_with_resume_auto_once():
    from vqae.cli import parse
    from vqae.commands.train import continue_command

    given = ["train", "--config", "configs/debug.yaml", "--train.steps", "5", "--data",
             "/data/my tiles", "--run.resume", "runs/x/checkpoints/ckpt-00000004.pt"]
    assert continue_command(parse(given)[2]) == (
        "vqae train --config configs/debug.yaml --data '/data/my tiles' --train.steps=5 "
        "--run.resume=auto")
    again = parse(["-v", "train", "--run.dir=runs/a", "--run.resume=auto"])[2]
    assert continue_command(again) == "vqae -v train --run.dir=runs/a --run.resume=auto"


def test_cuda_request_without_gpu_is_an_error(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert main(train_args(tmp_path / "r", "--run.device=cuda", "--train.steps=1")) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_throughput_clock_stops_outside_training_steps(monkeypatch):
    from vqae.training.schedule import Throughput

    now = iter([0.0, 2.0, 100.0, 104.0])  # step 0..2 s, eval until 100 s, step 100..104 s
    monkeypatch.setattr("vqae.training.schedule.time.perf_counter", lambda: next(now))
    meter = Throughput()
    meter.add(10)
    meter.restart()
    meter.add(20)
    assert meter.rate() == pytest.approx(30 / 6)


def test_progress_bar_shows_the_current_rate_after_a_slow_start_and_evaluations(
        monkeypatch, capsys):
    """5 slow first steps (8 s), then 0.3 s a step, a 60 s evaluation every 100 steps: near
    the end the bar shows 0.3 s a step, on a terminal and in a log file (a line each 30 s).
    The issue's log showed 1.13 s/step with 18 s left."""
    from vqae.training.schedule import paused, progress_bar

    now = [1000.0]
    monkeypatch.setattr("tqdm.std.time", lambda: now[0])  # tqdm's clock
    monkeypatch.setattr("vqae.training.schedule.time.time", lambda: now[0])
    for tty in (True, False):
        bar = progress_bar(300, 0, enabled=True, tty=tty)
        for step in range(1, 291):
            now[0] += 8.0 if step <= 5 else 0.3
            bar.update(1)
            if step % 100 == 0:
                with paused(bar):
                    now[0] += 60.0
        shown = bar.format_dict
        assert 1 / shown["rate"] == pytest.approx(0.3, rel=0.1), tty
        bar.close()
    assert "s/step" in capsys.readouterr().err


def test_schedule_logs_evaluates_and_checkpoints_on_the_last_step():
    from vqae.config import TrainConfig
    from vqae.training.schedule import Schedule

    s = Schedule(TrainConfig(steps=10, log_every=4, eval_every=6, checkpoint_every=5))
    assert [n for n in range(1, 11) if s.logs(n)] == [4, 8, 10]
    assert [n for n in range(1, 11) if s.evaluates(n)] == [6, 10]
    assert [n for n in range(1, 11) if s.checkpoints(n)] == [5, 10]


@pytest.mark.slow
def test_device_resampling_trains_and_resumes_exactly(sample_dir, tmp_path, caplog):
    """data.resample=device on the CPU: native uint16 batches upsampled in the loop; a resume
    from the middle checkpoint ends with the same weights."""
    common = ["--train.steps=6", "--train.checkpoint_every=3", "--train.eval_every=100",
              "--run.tracker=none", "--data.resample=device"]
    with caplog.at_level(logging.INFO, logger="vqae.data.device_input"):
        assert main(train_args(tmp_path / "a", *common)) == 0
    assert "upsampled on the training device" in caplog.text
    reference = final_weights(tmp_path / "a")
    (tmp_path / "a" / "checkpoints" / "ckpt-00000006.pt").unlink()
    assert main(train_args(tmp_path / "a", *common, "--run.resume=auto")) == 0
    assert_same_weights(reference, final_weights(tmp_path / "a"))


def test_augment_gives_each_patch_one_of_the_8_dihedral_transforms():
    x = torch.arange(64 * 2 * 5 * 5, dtype=torch.float32).view(64, 2, 5, 5)  # all values distinct
    variants = [torch.rot90(x, r % 4, dims=(2, 3)) for r in range(8)]
    variants = [v.flip(3) if r >= 4 else v for r, v in enumerate(variants)]
    torch.manual_seed(0)
    out = augment(x)
    drawn = []
    for i in range(len(x)):
        matches = [r for r, v in enumerate(variants) if torch.equal(out[i], v[i])]
        assert len(matches) == 1, i
        drawn += matches
    assert set(drawn) == set(range(8))
    torch.manual_seed(0)  # drawn from torch's global RNG, in patch order: a resume replays it
    assert torch.randint(0, 8, (len(x),)).tolist() == drawn
