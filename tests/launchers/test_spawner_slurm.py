"""spawner.py --deploy slurm on the real test cluster: ONE job array, both tasks done."""

import shlex

import pytest

from tests.launchers.conftest import SMALL_JOB, wait_for
from tests.test_spawner import write_sweep
from vqae.jobstatus import read_status
from vqae.spawn import main


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
