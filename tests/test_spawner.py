"""spawner.py: sweep expansion, validation before anything runs, status, and a real tmux deploy."""

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import skip_or_fail
from vqae.config import load_config
from vqae.jobstatus import read_status
from vqae.spawn import index_ranges, main
from vqae.sweep import expand, job_names, load_sweep

REPO = Path(__file__).resolve().parents[1]
TINY = {"model.widths": [8, 16], "model.blocks_per_stage": 1, "model.latent_dim": 8,
        "model.groups": 4, "data.batch_size": 4, "data.num_workers": 0, "train.steps": 4,
        "train.eval_every": 2, "train.checkpoint_every": 2, "train.eval_images": 0,
        "run.tracker": "none"}


def write_sweep(tmp_path: Path, **fields) -> Path:
    spec = {"name": "t", "folder": str(tmp_path / "sweep"),
            "base": [str(REPO / "configs/debug.yaml")], "overrides": TINY,
            "grid": {"quantizer.codebook_size": [16, 32]}, **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_variants_seeds_and_sample_expand_to_named_jobs(tmp_path):
    path = write_sweep(tmp_path, grid={"quantizer.codebook_size": [16, 32], "optim.lr": [1e-3]},
                       variants=[{"quantizer.name": "vq"}, {"quantizer.distance": "cosine"}],
                       seeds=2)
    jobs = expand(load_sweep(path))
    names = [j.name for j in jobs]
    assert len(jobs) == 2 * 1 * 2 * 2 and len(set(names)) == 8
    assert names[0] == "codebook_size-16_name-vq_seed-0"  # keys a job lacks stay out
    assert names[-1] == "codebook_size-32_distance-cosine_seed-1"
    assert jobs[0].run_dir == tmp_path / "sweep" / names[0]
    # the arguments resolve to the job's config, exactly as vqae train will read them
    args = jobs[-1].args
    files = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    cfg = load_config(files, [a[2:] for a in args if a.startswith("--") and "." in a])
    assert (cfg.quantizer.codebook_size, cfg.quantizer.distance, cfg.run.seed) == (32, "cosine", 1)
    assert cfg.optim.lr == 1e-3 and cfg.run.resume == "auto" and cfg.train.steps == 4
    sampled = expand(load_sweep(write_sweep(tmp_path, sample=1, sample_seed=3)))
    assert len(sampled) == 1 and sampled[0].name == "run"  # nothing varies among one job


def test_names_fall_back_to_full_keys_when_short_ones_clash():
    jobs = [{"model.groups": 4, "quantizer.groups": 1}, {"model.groups": 8, "quantizer.groups": 2}]
    assert job_names(jobs) == ["model.groups-4_quantizer.groups-1",
                               "model.groups-8_quantizer.groups-2"]
    assert job_names([{"a.b": [8, 5]}, {"a.b": [4, 4]}]) == ["b-8x5", "b-4x4"]


def test_index_ranges():
    assert index_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and index_ranges([3]) == "3"


@pytest.mark.parametrize("fields, fragment", [
    ({"gird": {}}, "unknown key(s) gird; valid keys:"),
    ({"grid": {"quantizer.codebook_size": []}}, "grid.quantizer.codebook_size must be a "
                                                "non-empty list"),
    ({"base": ["configs/missing.yaml"]}, "base config(s) configs/missing.yaml not found"),
    ({"grid": {"quantizer.codebook_size": [16, 0]}}, "job codebook_size-0: "
                                                     "quantizer.codebook_size=0 is out of range"),
    ({"overrides": {"model.bogus": 1}}, "unknown key 'model.bogus'"),
    ({"seeds": 0}, "seeds must be a count >= 1"),
])
def test_bad_sweeps_fail_in_one_line_before_anything_is_written(tmp_path, capsys, fields,
                                                                 fragment):
    path = write_sweep(tmp_path, **fields)
    assert main([str(path), "--deploy", "tmux"]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "sweep").exists()


def test_missing_archive_is_refused_before_submitting(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VQAE_DATA_ARCHIVE", str(tmp_path / "nope.tar.gz"))
    assert main([str(write_sweep(tmp_path)), "--deploy", "slurm"]) == 2
    assert "VQAE_DATA_ARCHIVE" in capsys.readouterr().err
    assert not list((tmp_path / "sweep").glob("*/status.json"))


def test_dry_run_writes_everything_and_imports_no_torch(tmp_path):
    code = ("import runpy, sys; sys.argv = sys.argv[1:]\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'spawner.py imported torch'\n")
    path = write_sweep(tmp_path)
    for deploy in ("tmux", "slurm"):
        res = subprocess.run([sys.executable, "-c", code, str(REPO / "spawner.py"), str(path),
                              "--deploy", deploy, "--dry-run"], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        command = res.stdout.strip().splitlines()[-1]
        assert command.startswith("tmuxp load -d" if deploy == "tmux" else "sbatch --parsable")
    assert "--array=0-1%4" in command and "VQAE_JOBS_FILE=" in command
    lines = (tmp_path / "sweep" / "jobs.tsv").read_text().splitlines()
    name, run_dir, args = lines[1].split("\t")
    assert name == "codebook_size-32" and Path(run_dir) == tmp_path / "sweep" / name
    assert "--quantizer.codebook_size=32" in shlex.split(args)
    assert len(list((tmp_path / "sweep" / "scripts").glob("*.sh"))) == 2
    assert not list((tmp_path / "sweep").glob("*/status.json"))  # nothing was started


def tmux_available() -> None:
    if shutil.which("tmux") is None or shutil.which("tmuxp") is None:
        skip_or_fail("tmux or tmuxp is not installed (apt-get install tmux; pip install tmuxp)")


def wait_for_states(run_dirs, states, timeout=300.0) -> list[dict]:
    end = time.time() + timeout
    while time.time() < end:
        current = [read_status(d) for d in run_dirs]
        if all(s.get("state") in states for s in current):
            return current
        time.sleep(0.5)
    raise AssertionError(f"jobs did not reach {states}: {current}")


@pytest.mark.slow
def test_tmux_deploy_runs_jobs_one_after_the_other(tmp_path, sample_dir, capsys):
    tmux_available()
    socket = f"vqae-test-{os.getpid()}"
    path = write_sweep(tmp_path)
    try:
        assert main([str(path), "--deploy", "tmux", "--max-parallel", "1",
                     "--tmux-socket", socket]) == 0
        session = capsys.readouterr().out.split("tmux session ")[1].split(":")[0]
        listed = subprocess.run(["tmux", "-L", socket, "ls"], capture_output=True, text=True)
        assert session in listed.stdout  # the session appeared
        run_dirs = [tmp_path / "sweep" / n for n in ("codebook_size-16", "codebook_size-32")]
        first, second = wait_for_states(run_dirs, {"done", "failed"})
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    assert first["state"] == second["state"] == "done", (first, second)
    assert first["exit_code"] == 0 and first["tmux_window"] == f"{session}:codebook_size-16"
    ordered = sorted([first, second], key=lambda s: s["start"])
    assert ordered[1]["start"] >= ordered[0]["end"]  # --max-parallel 1: one after the other
    for run in run_dirs:
        assert list((run / "checkpoints").glob("ckpt-*.pt")) and (run / "metrics.jsonl").is_file()
    assert main([str(path), "--status"]) == 0
    out = capsys.readouterr().out
    assert "codebook_size-32  done" in out and "2 done" in out
    assert main([str(path), "--deploy", "tmux", "--tmux-socket", socket]) == 0  # a rerun
    assert "every job is done" in capsys.readouterr().out
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    assert json.loads((run_dirs[0] / "status.json").read_text())["state"] == "done"
