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
from tests.hostile import run_python, run_vqae
from vqae.cli import parse
from vqae.config import load_config
from vqae.sweeps.deploy import index_ranges, main
from vqae.sweeps.job_status import read_status
from vqae.sweeps.spec import expand, job_names, load_sweep

REPO = Path(__file__).resolve().parents[2]
TINY = {"model.widths": [8, 16], "model.blocks_per_stage": 1, "model.latent_dim": 8,
        "model.groups": 4, "data.batch_size": 4, "data.num_workers": 0, "train.steps": 4,
        "train.eval_every": 2, "train.checkpoint_every": 2, "train.eval_images": 0,
        "run.tracker": "none"}


ONE_STEP = {**TINY, "train.steps": 1, "train.eval_every": 1, "train.checkpoint_every": 1}


def hostile(marker: Path) -> list[str]:
    """Values no shell may interpret (each would create `marker`), nor split, nor read as an
    option: newline, tab, $(), backticks, quotes, `;`, a leading `-`, an option's look, an
    escape character."""
    return [f"a\nX\tfake\t$(touch {marker})\nb",
            f"--run.dir=/tmp/x `touch {marker}`; it's \"q\" \\ \x1b[1m",
            f"x; touch {marker} #", "-n", "--run.dir=/tmp/x", "*", "$HOME ~ !! %s {}",
            "\u00e9 \u00fc"]


def write_sweep(tmp_path: Path, **fields) -> Path:
    spec = {"name": "t", "folder": str(tmp_path / "sweep"),
            "base": [str(REPO / "configs/debug.yaml")], "overrides": TINY,
            "grid": {"quantizer.codebook_size": [16, 32]}, **fields}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def train_config(args: list[str]):
    """The config `vqae train ARGS` would train with (its own argument parser, no training)."""
    _, _, parsed = parse(["train", *args])
    return load_config(parsed.config, parsed.overrides)


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
    cfg = train_config(jobs[-1].args)
    assert (cfg.quantizer.codebook_size, cfg.quantizer.distance, cfg.run.seed) == (32, "cosine", 1)
    assert cfg.optim.lr == 1e-3 and cfg.run.resume == "auto" and cfg.train.steps == 4
    sampled = expand(load_sweep(write_sweep(tmp_path, sample=1, sample_seed=3)))
    assert len(sampled) == 1 and sampled[0].name == "run"  # nothing varies among one job


def test_names_fall_back_to_full_keys_when_short_ones_clash():
    jobs = [{"model.groups": 4, "quantizer.groups": 1}, {"model.groups": 8, "quantizer.groups": 2}]
    assert job_names(jobs) == ["model.groups-4_quantizer.groups-1",
                               "model.groups-8_quantizer.groups-2"]
    assert job_names([{"a.b": [8, 5]}, {"a.b": [4, 4]}]) == ["b-8x5", "b-4x4"]
    long = job_names([{"a.b": "x" * 100}, {"a.b": "x" * 99}])  # cut, told apart by a hash
    assert len(set(long)) == 2 and all(len(n) <= 2 + 40 and n.startswith("b-xxx") for n in long)


def test_index_ranges():
    assert index_ranges([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and index_ranges([3]) == "3"


@pytest.mark.parametrize("fields, fragment", [
    ({"gird": {}}, "unknown key(s) gird; valid keys:"),
    ({"grid": {"quantizer.codebook_size": []}}, ("grid.quantizer.codebook_size must be a "
                                                 "non-empty list")),
    ({"base": ["configs/missing.yaml"]}, "base config(s) configs/missing.yaml not found"),
    ({"grid": {"quantizer.codebook_size": [16, 0]}}, ("job codebook_size-0: "
                                                      "quantizer.codebook_size=0 is out of range")),
    ({"overrides": {"model.bogus": 1}}, "unknown key 'model.bogus'"),
    ({"seeds": 0}, "seeds must be a count >= 1"),
    ({"name": "evil\ntouch pwned_name\n#"},
     "name 'evil\\ntouch pwned_name\\n#' is not a valid name: use only letters, digits"),
    ({"name": "-rf"}, "name '-rf' is not a valid name"),
    ({"name": "../up"}, "name '../up' is not a valid name"),
    ({"name": "a b"}, "name 'a b' is not a valid name"),
    ({"grid": {"run.project;touch x": ["a", "b"]}}, ("grid key 'run.project;touch x' is not a "
                                                     "config key")),
    ({"variants": [{"train": {"steps": 2}}]}, "variants[0] key 'train' is not a config key"),
    ({"folder": "a\nb"}, "folder: 'a\\nb' is not a path"),
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
        assert command.startswith("tmuxp load -d" if deploy == "tmux" else "env VQAE_JOBS_FILE=")
    (jobs_file,) = (tmp_path / "sweep").glob("jobs-*.jsonl")  # the slurm deploy's, read-only
    assert shlex.split(command)[:3] == ["env", f"VQAE_JOBS_FILE={jobs_file}", "sbatch"]
    assert "--array=0-1%4" in command and jobs_file.stat().st_mode & 0o777 == 0o444
    record = json.loads(jobs_file.read_text().splitlines()[1])
    assert record["index"] == 1 and record["name"] == "codebook_size-32"
    assert Path(record["run_dir"]) == tmp_path / "sweep" / "codebook_size-32"
    assert "--quantizer.codebook_size=32" in record["args"]
    assert len(list((tmp_path / "sweep" / "scripts").glob("t-*/*.sh"))) == 2
    assert not list((tmp_path / "sweep").glob("*/status.json"))  # nothing was started


def test_hostile_values_reach_train_as_one_argument_each(tmp_path):
    """Each job's record, as `vqae sweep-job` hands it to a launcher, is exactly the job's
    arguments, and `vqae train`'s own parser reads each value back unchanged."""
    marker = tmp_path / "pwned"
    values = hostile(marker)
    path = write_sweep(tmp_path, grid={"run.project": values})
    assert main([str(path), "--deploy", "slurm", "--dry-run"]) == 0
    (jobs_file,) = (tmp_path / "sweep").glob("jobs-*.jsonl")
    jobs = expand(load_sweep(path))
    for i, (job, value) in enumerate(zip(jobs, values)):
        res = subprocess.run([sys.executable, "-m", "vqae", "sweep-job", str(jobs_file), str(i)],
                             capture_output=True, check=False)
        assert res.returncode == 0, res.stderr
        fields = [os.fsdecode(f) for f in res.stdout.split(b"\0")]
        assert fields == [job.name, str(job.run_dir), *job.args, ""]  # each ends with a NUL
        cfg = train_config(fields[2:-1])
        assert cfg.run.project == value and cfg.run.dir == str(job.run_dir)
    assert not marker.exists()


def test_damaged_jobs_file_is_refused_naming_file_and_line(tmp_path):
    from vqae.errors import ConfigError
    from vqae.sweeps.jobs_file import Job, read_job, write_jobs

    path = write_jobs([Job("ok", tmp_path / "ok", ["--run.project=a\nb"])], tmp_path)
    path.chmod(0o644)  # written read-only
    record = json.loads(path.read_text())
    damaged = [
        "ok\t/tmp/ok\t--run.project=x",  # the old tab-separated line
        json.dumps({**record, "index": 2, "name": "a\nb"}),
        json.dumps({**record, "index": 9}),
        json.dumps({**record, "index": 4, "args": ["--run.project=a\0--run.dir=/"]}),
        json.dumps({**record, "index": 5, "run_dir": "relative"}),
        '{"index": 6, "name": "torn"',
    ]
    path.write_text(path.read_text() + "\n".join(damaged))  # the last line has no newline
    assert read_job(path, 0) == Job("ok", tmp_path / "ok", ["--run.project=a\nb"])
    for index in range(1, 7):
        with pytest.raises(ConfigError, match=f"jobs file {path} line {index + 1} is "):
            read_job(path, index)
    res = subprocess.run([sys.executable, "-m", "vqae", "sweep-job", str(path), "7"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 2 and not res.stdout
    assert res.stderr.strip().splitlines() == [
        f"vqae sweep-job: error: jobs file {path} has 6 job(s); job 7 (line 8) does not exist"]


def tmux_available() -> None:
    if shutil.which("tmux") is None or shutil.which("tmuxp") is None:
        skip_or_fail("tmux or tmuxp is not installed (apt-get install tmux; pip install tmuxp)")


def wait_for_states(run_dirs, states, timeout=300.0, healthy=lambda: True) -> list[dict]:
    end = time.time() + timeout
    while time.time() < end:
        assert healthy(), "an injected command ran"
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


@pytest.mark.slow
def test_tmux_deploy_refuses_a_hostile_name_and_runs_hostile_values_as_given(
        tmp_path, sample_dir, capsys, monkeypatch):
    tmux_available()
    monkeypatch.chdir(tmp_path)
    marker, socket = tmp_path / "pwned", f"vqae-test-hostile-{os.getpid()}"
    values = hostile(marker)[:2]  # newline, tab, $(); a leading --, backticks, quotes, `;`
    try:
        evil = write_sweep(tmp_path, name=f"evil\ntouch {marker}\n#")
        assert main([str(evil), "--deploy", "tmux", "--tmux-socket", socket]) == 2
        assert "name 'evil\\ntouch" in capsys.readouterr().err
        path = write_sweep(tmp_path, grid={"run.project": values}, overrides=ONE_STEP)
        assert main([str(path), "--deploy", "tmux", "--max-parallel", "2",
                     "--tmux-socket", socket]) == 0
        jobs = expand(load_sweep(path))
        states = wait_for_states([job.run_dir for job in jobs], {"done", "failed"}, 240,
                                 lambda: not marker.exists())
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    assert not marker.exists()
    for job, value, state in zip(jobs, values, states):
        assert state["state"] == "done" and state["job"] == job.name, state
        config = yaml.safe_load((job.run_dir / "config.yaml").read_text())
        assert config["run"]["project"] == value


# ---- hostile sweeps, jobs files and status files ------------------------------------------

@pytest.mark.parametrize("fields, fragment", [
    ({"seeds": 3_000_000_000}, ("6,000,000,000 jobs (2 grid points x 1 variant x "
                                "3,000,000,000 seeds) are more than the 10,000 a sweep may "
                                "hold; lower seeds")),
    ({"grid": {f"model.k{i}": list(range(10)) for i in range(9)}},
     ("1,000,000,000 jobs (1,000,000,000 grid points x 1 variant x 1 seed) are more than the "
      "10,000 a sweep may hold; lower grid or set sample: N (a random subset of the grid)")),
    ({"grid": {f"model.k{i}": list(range(10)) for i in range(9)}, "sample": 20_000},
     ("20,000 jobs (20,000 of 1,000,000,000 grid points x 1 variant x 1 seed) are more than "
      "the 10,000 a sweep may hold; lower sample")),
    ({"grid": {f"model.k{i}": [1, 2] for i in range(200)}, "seeds": [1, 2]},
     "about 10^60 jobs (about 10^60 grid points x 1 variant x 2 seeds) are more than"),
])
def test_too_many_jobs_are_refused_in_one_line_before_any_is_built(tmp_path, fields, fragment):
    path = write_sweep(tmp_path, **fields)
    res = run_python(f"import sys; from vqae.sweeps.deploy import main\n"
                      f"sys.exit(main([{str(path)!r}, '--deploy', 'slurm', '--dry-run']))")
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith(f"spawner.py: error: sweep {path}: {fragment}"), res.stderr[-2000:]
    assert not (tmp_path / "sweep").exists()


def test_a_sample_of_a_huge_grid_is_drawn_without_building_the_grid(tmp_path):
    """9 keys x 10 values, sample: 2: 10^9 grid points, of which two are built (the whole
    product took 3.8 GB, then MemoryError); the same seed draws the same points."""
    grid = {f"model.k{i}": list(range(10)) for i in range(9)}
    path = write_sweep(tmp_path, grid=grid, sample=2, sample_seed=5)
    res = run_python("import json; from vqae.sweeps.spec import grid_points, load_sweep\n"
                      f"print(json.dumps(grid_points(load_sweep({str(path)!r}))))")
    assert res.returncode == 0, res.stderr[-2000:]
    drawn = json.loads(res.stdout)
    import random
    keep = sorted(random.Random(5).sample(range(10**9), 2))  # the draw it always made
    assert drawn == [{k: int(d) for k, d in zip(grid, f"{i:09d}")} for i in keep]


def test_sampled_and_full_grids_keep_their_points_and_order(tmp_path):
    """Points, names and their order as the whole product (itertools.product) gave them."""
    import itertools
    import random

    from vqae.sweeps.spec import grid_points

    grid = {"quantizer.codebook_size": [16, 32, 64], "optim.lr": [1e-3, 2e-3],
            "model.latent_dim": [4, 8, 16, 32]}
    full = load_sweep(write_sweep(tmp_path, grid=grid))
    product = [dict(zip(full.grid, v)) for v in itertools.product(*full.grid.values())]
    assert list(full.grid) == sorted(grid) and grid_points(full) == product
    for seed in range(5):
        sweep = load_sweep(write_sweep(tmp_path, grid=grid, sample=7, sample_seed=seed))
        keep = sorted(random.Random(seed).sample(range(len(product)), 7))
        assert grid_points(sweep) == [product[i] for i in keep]
    names = [j.name for j in expand(load_sweep(write_sweep(tmp_path, grid=grid, sample=3)))]
    assert names == ["latent_dim-4_codebook_size-32", "latent_dim-16_codebook_size-16",
                     "latent_dim-16_codebook_size-32"]  # as the code before this test gave


def sweep_job(path: Path, index: int) -> subprocess.CompletedProcess:
    return run_vqae("sweep-job", path, index, timeout=60)


def test_jobs_file_is_read_no_further_than_its_line(tmp_path):
    """A 60 GB jobs file (sparse: one line of NULs) is refused after reading 1 MiB, a record
    nested 100000 brackets deep in one line: nothing else is read whole, nothing recurses."""
    from vqae.sweeps.jobs_file import Job, write_jobs

    path = write_jobs([Job("ok", tmp_path / "ok", ["--run.project=a"])], tmp_path)
    deep = json.dumps({"index": 1, "name": "deep", "run_dir": "/x", "args": []})
    deep = deep.replace("[]", "[" * 100_000 + "]" * 100_000)
    path.chmod(0o644)
    path.write_text(path.read_text() + deep + "\n" + "x" * (2 << 20) + "\n")
    res = sweep_job(path, 0)
    assert res.returncode == 0 and res.stdout.startswith("ok\0"), res.stderr
    res = sweep_job(path, 1)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        (f"vqae sweep-job: error: jobs file {path} line 2 is not a valid job record (nested too "
         "deeply); run spawner.py again to write a new jobs file")], res.stderr[-2000:]
    for index in (2, 3):  # the long line, or any after it
        res = sweep_job(path, index)
        assert res.stderr.strip().splitlines() == [
            (f"vqae sweep-job: error: jobs file {path} line 3 is longer than 1,048,576 bytes, "
             "so no job record; run spawner.py again to write a new jobs file")], res.stderr
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as f:
        f.truncate(60 << 30)
    res = sweep_job(huge, 0)
    assert res.returncode == 2 and "line 1 is longer than 1,048,576 bytes" in res.stderr, \
        res.stderr[-2000:]


def test_jobs_file_that_is_no_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "jobs.jsonl"
    os.mkfifo(fifo)
    res = sweep_job(fifo, 0)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        (f"vqae sweep-job: error: jobs file {fifo} is a FIFO (named pipe), not a regular file; "
         "pass a plain file")]
    res = sweep_job(tmp_path, 0)
    assert res.returncode == 2 and f"jobs file {tmp_path} is a folder" in res.stderr
    res = sweep_job(tmp_path / "missing.jsonl", -1)
    assert res.returncode == 2 and "does not exist (written by spawner.py)" in res.stderr
    (tmp_path / "one.jsonl").write_text("")
    for index in (-1, 10_000):
        res = sweep_job(tmp_path / "one.jsonl", index)
        assert res.stderr.strip().splitlines() == [
            (f"vqae sweep-job: error: jobs file {tmp_path / 'one.jsonl'}: job {index} does not "
             "exist (jobs are numbered from 0, at most 10,000 of them)")]


def spawner(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    """`spawner.py ARGS` in a child with bounded memory and time (a FIFO must not hang it)."""
    return run_python(f"import sys; from vqae.sweeps.deploy import main\n"
                      f"sys.exit(main({[str(a) for a in args]!r}))", timeout=timeout)


def test_damaged_status_files_show_as_damaged_and_block_a_deploy_until_forced(tmp_path):
    path = write_sweep(tmp_path, grid={"quantizer.codebook_size": [16, 32, 64]})
    runs = [job.run_dir for job in expand(load_sweep(path))]
    for run in runs:
        run.mkdir(parents=True)
    (runs[0] / "status.json").write_text("[]")
    (runs[1] / "status.json").write_text('{"state": "done", "exit_code": 0}')
    (runs[2] / "status.json").write_text('{"state": "running", "start": ' + "[" * 30_000 + "]"
                                         * 30_000 + "}")
    res = spawner(path, "--status")
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    table = res.stdout.splitlines()
    assert table[2].split()[:2] == ["codebook_size-16", "damaged"]
    assert table[3].split()[:2] == ["codebook_size-32", "done"]
    assert table[4].split()[:2] == ["codebook_size-64", "damaged"]
    assert table[5] == "sweep t: 2 damaged, 1 done"
    assert table[6:] == [
        (f"status file {runs[0] / 'status.json'} is damaged: expected a JSON object, got list; "
         "remove it, or deploy with --force to replace it"),
        (f"status file {runs[2] / 'status.json'} is damaged: nested too deeply; remove it, or "
         "deploy with --force to replace it")]
    (runs[1] / "status.json").write_text("{}" + " " * 70_000)
    res = spawner(path, "--status")
    assert res.stdout.splitlines()[-2] == (
        f"status file {runs[1] / 'status.json'} is damaged: more than 65,536 bytes; remove it, "
        "or deploy with --force to replace it")
    res = spawner(path, "--deploy", "tmux", "--dry-run")
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        (f"spawner.py: error: status file {runs[0] / 'status.json'} is damaged: expected a JSON "
         "object, got list; remove it, or deploy with --force to replace it (and 2 more)")]
    res = spawner(path, "--deploy", "tmux", "--dry-run", "--force")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3 to run" in res.stdout


def test_write_status_replaces_a_damaged_file_only_when_told(tmp_path):
    from vqae.sweeps.job_status import StatusError, write_status

    (tmp_path / "status.json").write_text('{"state": "bogus"}')
    res = run_vqae("job-status", tmp_path, "running", timeout=30)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        (f"vqae job-status: error: status file {tmp_path / 'status.json'} is damaged: no state "
         "of queued, running, done, failed, requeued; remove it, or deploy with --force to "
         "replace it")]
    with pytest.raises(StatusError):
        write_status(tmp_path, "queued")
    status = write_status(tmp_path, "queued", replace_damaged=True, job="a")
    assert read_status(tmp_path) == status and status["state"] == "queued"


def test_a_fifo_as_status_json_hangs_nothing_and_is_never_written_through(tmp_path):
    """The Slurm launcher calls `vqae job-status`: a FIFO there would hang the job."""
    path = write_sweep(tmp_path)
    run = expand(load_sweep(path))[0].run_dir
    run.mkdir(parents=True)
    fifo = run / "status.json"
    os.mkfifo(fifo)
    res = run_vqae("job-status", run, "running", timeout=30)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        (f"vqae job-status: error: status file {fifo} is a FIFO (named pipe), not a regular "
         "file; remove it (the job writes a new one)")]
    res = spawner(path, "--status", timeout=30)
    assert res.returncode == 0 and "codebook_size-16  damaged" in res.stdout, res.stderr
    for force in ([], ["--force"]):
        res = spawner(path, "--deploy", "slurm", "--dry-run", *force, timeout=30)
        assert res.returncode == 2 and res.stderr.strip().splitlines() == [
            (f"spawner.py: error: status file {fifo} is a FIFO (named pipe), not a regular file; "
             "remove it (the job writes a new one)")]
    assert fifo.is_fifo()


def test_status_step_of_hostile_metrics_files(tmp_path):
    from vqae.sweeps.deploy import last_step

    def metrics(text=None):
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        run.mkdir()
        if text is not None:
            (run / "metrics.jsonl").write_text(text)
        return run

    assert last_step(metrics()) == "" and last_step(metrics("")) == ""
    assert last_step(metrics('{"step": 3}\n{"step": 7, "loss": 1}\n')) == "7"
    assert last_step(metrics('{"step": 3}\n{"step": 7, "lo')) == "3"  # the last half written
    assert last_step(metrics('{"step": 3}\n{"step": ' + "[" * 50_000 + "\n")) == "3"
    assert last_step(metrics('{"step": "x"}\n[1]\n')) == "?"
    fifo = metrics()
    os.mkfifo(fifo / "metrics.jsonl")
    assert last_step(fifo) == "?"  # refused, not opened: nothing blocks
    folder = metrics()
    (folder / "metrics.jsonl").mkdir()
    assert last_step(folder) == "?"
    huge = metrics()
    with open(huge / "metrics.jsonl", "wb") as f:  # sparse: 60 GB of NULs, read is the tail
        f.truncate(60 << 30)
    assert last_step(huge) == "?"


def sbatch_env_file(out: str) -> Path:
    """The jobs file a printed `env VQAE_JOBS_FILE=... sbatch ...` command hands its array."""
    return Path(shlex.split(out.strip().splitlines()[-1])[1].split("=", 1)[1])


def test_a_deploy_never_rewrites_the_jobs_file_of_an_earlier_one(tmp_path, capsys):
    """Sweeps A and B with one folder, and A edited and deployed again: each array reads its
    own jobs file, so A's pending (or requeued) task 0 still runs A's job 0."""
    folder = tmp_path / "shared"
    a = write_sweep(tmp_path, name="a", folder=str(folder),
                    grid={"quantizer.codebook_size": [16, 32]})
    assert main([str(a), "--deploy", "slurm", "--dry-run"]) == 0
    file_a = sbatch_env_file(capsys.readouterr().out)
    before = file_a.read_bytes()
    b = write_sweep(tmp_path, name="b", folder=str(folder), grid={"optim.lr": [1e-3, 2e-3]})
    assert main([str(b), "--deploy", "slurm", "--dry-run"]) == 0
    file_b = sbatch_env_file(capsys.readouterr().out)
    a2 = write_sweep(tmp_path, name="a", folder=str(folder),
                     grid={"quantizer.codebook_size": [64, 16]})
    assert main([str(a2), "--deploy", "slurm", "--dry-run"]) == 0
    file_a2 = sbatch_env_file(capsys.readouterr().out)
    assert len({file_a, file_b, file_a2}) == 3 and file_a.read_bytes() == before
    for jobs_file, name in ((file_a, "codebook_size-16"), (file_b, "lr-0.001"),
                            (file_a2, "codebook_size-64")):
        res = run_vqae("sweep-job", jobs_file, 0, timeout=60)
        assert res.returncode == 0 and res.stdout.split("\0")[0] == name, res.stderr
    assert not (folder / "jobs.jsonl").exists()


def test_a_tmux_deploy_never_rewrites_the_scripts_of_an_earlier_one(tmp_path, capsys):
    """bash reads a script as it runs it: a window waiting for its slot must run what it was
    deployed with, whatever is deployed into the same folder later."""
    folder = tmp_path / "shared"
    first = write_sweep(tmp_path, folder=str(folder), grid={"run.project": ["x", "y"]})
    assert main([str(first), "--deploy", "tmux", "--dry-run"]) == 0
    (script,) = [s for s in (folder / "scripts").rglob("project-x.sh")]
    before = script.read_bytes()
    second = write_sweep(tmp_path, folder=str(folder), grid={"run.project": ["x", "z"]},
                         overrides={**TINY, "train.steps": 9})
    assert main([str(second), "--deploy", "tmux", "--dry-run"]) == 0
    scripts = sorted((folder / "scripts").rglob("project-x.sh"))
    assert len(scripts) == 2 and script.read_bytes() == before
    assert len({s.parent for s in scripts}) == 2 and len(list((folder / "tmux").iterdir())) == 2


def test_write_jobs_creates_a_new_file_each_time_and_refuses_what_it_could_not_read(tmp_path):
    from vqae.errors import ConfigError
    from vqae.sweeps.jobs_file import Job, read_job, write_jobs

    jobs = [Job("a", tmp_path / "a", ["--run.project=a"])]
    first, second = write_jobs(jobs, tmp_path), write_jobs(jobs, tmp_path)
    assert first != second and read_job(first, 0) == read_job(second, 0) == jobs[0]
    assert first.name.startswith("jobs-") and first.suffix == ".jsonl"
    with pytest.raises(ConfigError, match="job big: its record takes 1,048,7.. bytes, more than "
                                          "the 1,048,576 a jobs file line may hold"):
        write_jobs([Job("big", tmp_path / "big", ["--run.project=" + "x" * (1 << 20)])], tmp_path)
    assert len(list(tmp_path.glob("jobs-*"))) == 2
