"""spawner.py --deploy slurm on the real test cluster: ONE job array, both tasks done."""

import json
import shlex

import pytest
import yaml

from tests.launchers.conftest import FINAL, SMALL_JOB, wait_for
from tests.sweeps.test_spawner import ONE_STEP, hostile, write_sweep
from vqae.sweeps.deploy import main
from vqae.sweeps.job_status import read_status
from vqae.sweeps.spec import expand, load_sweep


@pytest.mark.slow
def test_two_job_sweep_is_one_array_whose_tasks_finish(cluster, tmp_path, sample_dir, capsys,
                                                        monkeypatch):
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)  # the jobs' working folder: nothing lands in the repository
    path = write_sweep(tmp_path)
    assert main([str(path), "--deploy", "slurm", "--sbatch", shlex.join(SMALL_JOB)]) == 0
    out = capsys.readouterr().out
    array = out.split("submitted job array ")[1].split()[0]
    cluster.submitted.append(array)
    run_dirs = [tmp_path / "sweep" / n for n in ("codebook_size-16", "codebook_size-32")]
    assert [read_status(d)["slurm_job"] for d in run_dirs] == [f"{array}_0", f"{array}_1"]
    done = wait_for(lambda: all(read_status(d).get("state") in ("done", "failed")
                                for d in run_dirs), 300, "both tasks to end",
                    lambda: [read_status(d) for d in run_dirs])
    assert done
    for run in run_dirs:
        status = read_status(run)
        assert status["state"] == "done" and status["exit_code"] == 0, status
        assert list((run / "checkpoints").glob("ckpt-*.pt")) and (run / "metrics.jsonl").is_file()
    tasks = {cluster.show(f"{array}_{i}").get("ArrayJobId") for i in (0, 1)}
    assert tasks == {array}  # one array, not two jobs
    assert main([str(path), "--deploy", "slurm"]) == 0  # a rerun: nothing left to do
    assert "every job is done" in capsys.readouterr().out


@pytest.mark.slow
def test_hostile_grid_values_run_as_given(cluster, tmp_path, sample_dir, capsys, monkeypatch):
    """Values with newlines, tabs, $(), backticks, quotes, `;` and a leading `--`, in a sweep
    folder whose path holds a space, a comma and a `%`: each array task trains its own job
    with its value unchanged, and nothing injected runs."""
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "pwned"
    values = hostile(marker)[:2]
    path = write_sweep(tmp_path, folder=str(tmp_path / "a sweep,VQAE_X=1%j"), overrides=ONE_STEP,
                       grid={"run.project": values})
    assert main([str(path), "--deploy", "slurm", "--sbatch", shlex.join(SMALL_JOB)]) == 0
    array = capsys.readouterr().out.split("submitted job array ")[1].split()[0]
    cluster.submitted.append(array)
    jobs = expand(load_sweep(path))

    def ended():  # per status.json, or per Slurm when a task died before writing it
        assert not marker.exists(), "an injected command ran"
        return all(read_status(j.run_dir).get("state") in ("done", "failed")
                   or cluster.state(f"{array}_{i}") in FINAL for i, j in enumerate(jobs))

    wait_for(ended, 300, "both tasks to end", lambda: [read_status(j.run_dir) for j in jobs])
    assert not marker.exists()
    for task, (job, value) in enumerate(zip(jobs, values)):
        status = read_status(job.run_dir)
        assert status["state"] == "done" and status["slurm_job"] == f"{array}_{task}", status
        assert yaml.safe_load((job.run_dir / "config.yaml").read_text())["run"]["project"] == value
    assert len(list((tmp_path / "a sweep,VQAE_X=1%j" / "logs").glob("*.out"))) == 2


def start_records(run) -> list[dict]:
    path = run / "slurm.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [r for r in map(json.loads, lines) if r["event"] == "start"]


@pytest.mark.slow
def test_a_later_deploy_into_the_folder_changes_no_pending_or_requeued_task(
        cluster, tmp_path, sample_dir, capsys, monkeypatch):
    """Sweeps A and B share a folder. A is deployed held (pending), then B; A's tasks, released,
    run A's jobs; requeued after B is deployed, A's task 0 runs A's job 0 again."""
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)
    folder = str(tmp_path / "shared")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_sweep(tmp_path / "a", name="a", folder=folder, overrides=ONE_STEP,
                    grid={"run.project": ["a0", "a1"]})
    assert main([str(a), "--deploy", "slurm", "--sbatch", shlex.join([*SMALL_JOB, "--hold"])]) == 0
    array_a = capsys.readouterr().out.split("submitted job array ")[1].split()[0]
    cluster.submitted.append(array_a)
    b = write_sweep(tmp_path / "b", name="b", folder=folder, overrides=ONE_STEP,
                    grid={"run.project": ["b0", "b1"]})
    assert main([str(b), "--deploy", "slurm", "--sbatch", shlex.join(SMALL_JOB)]) == 0
    array_b = capsys.readouterr().out.split("submitted job array ")[1].split()[0]
    cluster.submitted.append(array_b)
    assert main([str(a), "--deploy", "slurm"]) == 2  # A's jobs are queued: refused
    assert "are queued or running" in capsys.readouterr().err
    cluster.cmd("scontrol", "release", array_a)
    jobs = {"a": expand(load_sweep(a)), "b": expand(load_sweep(b))}
    runs = [job.run_dir for sweep in jobs.values() for job in sweep]

    def ended(count=1):
        return all(read_status(r).get("state") in ("done", "failed")
                   and len(start_records(r)) >= count for r in runs)

    wait_for(ended, 300, "four tasks to end", lambda: [read_status(r) for r in runs])
    for name, array in (("a", array_a), ("b", array_b)):
        for task, job in enumerate(jobs[name]):
            status = read_status(job.run_dir)
            assert status["state"] == "done" and status["slurm_job"] == f"{array}_{task}"
            (start,) = start_records(job.run_dir)
            assert f"--run.project={name}{task}" in start["args"]
    cluster.cmd("scontrol", "requeue", f"{array_a}_0")  # a finished task, pending again
    run = jobs["a"][0].run_dir
    wait_for(lambda: len(start_records(run)) == 2 and read_status(run).get("state") == "done",
             300, "the requeued task to end", lambda: (read_status(run), start_records(run)))
    again = start_records(run)[-1]
    assert again["restart_count"] == 1 and again["array_job_id"] == array_a
    assert "--run.project=a0" in again["args"]
    assert [len(start_records(job.run_dir)) for job in jobs["b"]] == [1, 1]


def test_a_refused_array_leaves_no_jobs_file(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
    monkeypatch.chdir(tmp_path)
    path = write_sweep(tmp_path)
    assert main([str(path), "--deploy", "slurm", "--sbatch=--no-such-option"]) == 2
    assert "sbatch refused the array" in capsys.readouterr().err
    assert not list((tmp_path / "sweep").glob("jobs-*"))
    assert not list((tmp_path / "sweep").glob("*/status.json"))
