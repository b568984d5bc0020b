"""anton_launcher: the workstation launcher builds the command and runs vqae train."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.sweeps.test_spawner import TINY
from vqae.training.tracking import read_jsonl

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "anton_launcher"


def launch(*args, env=None):
    return subprocess.run([str(LAUNCHER), *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=600)


def test_dry_run_prints_torchrun_for_several_gpus_and_vqae_for_one():
    res = launch("--gpus", "2", "--dry-run", "--config", "configs/base.yaml", "--run.dir",
                 "runs/a b")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == ("torchrun --standalone --nproc_per_node 2 -m vqae train "
                                  "--config configs/base.yaml --run.dir runs/a\\ b")
    one = launch("--gpus=1", "--dry-run", "--optim.lr=1e-3", env={"VQAE_DATA": str(REPO)})
    assert one.stdout.strip() == f"vqae train --data {REPO} --optim.lr=1e-3"
    assert launch("--dry-run", env={"CUDA_VISIBLE_DEVICES": "0,1,2"}).stdout.startswith(
        "torchrun --standalone --nproc_per_node 3 ")  # default: every visible GPU
    explicit = launch("--dry-run", "--data", "/x", env={"VQAE_DATA": "/nope"})
    assert explicit.stdout.strip() == "vqae train --data /x"  # --data wins over VQAE_DATA


@pytest.mark.parametrize("args, env, fragment", [
    (["--gpus", "two"], {}, "--gpus takes a number"),
    (["--dry-run"], {"VQAE_DATA": "/no/such/data"}, "VQAE_DATA=/no/such/data does not exist"),
])
def test_bad_input_is_one_line(args, env, fragment):
    res = launch(*args, env=env)
    assert res.returncode == 2 and fragment in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, error", [
    (["--config", "missing.yaml"], "config file missing.yaml does not exist"),
    (["--model.nope=3"], "unknown key 'model.nope'; valid keys here: image_size, widths, "
     "downsample, blocks_per_stage, latent_dim, groups, activation, patch_means, patch_scales"),
    (["--optim.lr=abc"], "optim.lr: expected float, got str 'abc'"),
    (["--bogus"], "unrecognized arguments: --bogus (config overrides look like "
     "--section.key=value)"),
])
@pytest.mark.parametrize("gpus", ["1", "2"])
def test_a_bad_config_is_refused_before_printing_or_running(args, error, gpus):
    """Checked by `vqae config`, as spawner.py checks its jobs: the error's one line, no command."""
    res = launch("--gpus", gpus, "--dry-run", *args)
    assert (res.returncode, res.stdout, res.stderr) == (2, "", f"anton_launcher: error: {error}\n")


def test_help_explains_with_an_example():
    res = launch("--help")
    assert res.returncode == 0 and "anton_launcher --config configs/base.yaml" in res.stdout


@pytest.mark.slow
def test_trains_the_debug_config_end_to_end_on_cpu(tmp_path, sample_dir):
    run = tmp_path / "run"
    overrides = [f"--{k}={v}" for k, v in TINY.items()]
    res = launch("--gpus", "0", "--config", "configs/debug.yaml", *overrides,
                 f"--run.dir={run}", env={"CUDA_VISIBLE_DEVICES": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "val/psnr" in r] == [2, 4]
    assert list((run / "checkpoints").glob("ckpt-*.pt"))
