"""spawner.py --deploy slurm on the real test cluster: ONE job array, both tasks done."""

import shlex

import pytest
import yaml

from tests.launchers.conftest import FINAL, SMALL_JOB, wait_for
from tests.test_spawner import ONE_STEP, hostile, write_sweep
from vqae.jobstatus import read_status
from vqae.spawn import main
from vqae.sweep import expand, load_sweep


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
