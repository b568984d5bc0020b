"""`spawner.py SWEEP.yaml --deploy slurm|tmux [--dry-run] [--max-parallel M]` and `--status`.

Slurm: ONE job array (`sbatch --array=<jobs to run>%M slurm_launcher`) whose task i runs job i
of `<sweep folder>/jobs-<stamp>.jsonl` (read by `vqae sweep-job`, see vqae/sweeps/jobs_file.py), a file
this deploy creates and nothing rewrites: a later deploy into the same folder (another sweep, an
edited grid) writes its own, so a pending or requeued task still runs the job it was submitted
for. tmux: a tmuxp workspace with a window per job, loaded detached under a unique session name,
each window running its own script in `<sweep folder>/scripts/<session>/` (bash reads a script
as it runs, so no later deploy may rewrite it); a job waits for one of M slot locks before it
trains. Every value in a generated script or printed command is
quoted by vqae.io.shell; names are checked by it.
Each job records `<sweep folder>/<job>/status.json`; a rerun skips jobs that are done and
resumes the others (`--run.resume=auto`). Imports no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import yaml
from tabulate import tabulate

from vqae.errors import ConfigError, VqaeError
from vqae.io.limits import open_regular
from vqae.io.shell import join, quote
from vqae.sweeps.job_status import DAMAGED, StatusError, StatusNotAFile, read_status, write_status
from vqae.sweeps.jobs_file import new_name
from vqae.sweeps.spec import Job, Sweep, expand, load_sweep, write_jobs

ACTIVE = ("queued", "running", "requeued")  # a requeued Slurm job is pending again


def index_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (Slurm's --array syntax)."""
    parts, start = [], None
    for i, n in enumerate(indices):
        if start is None:
            start = n
        if i + 1 == len(indices) or indices[i + 1] != n + 1:
            parts.append(str(start) if start == n else f"{start}-{n}")
            start = None
    return ",".join(parts)


def job_state(job: Job) -> tuple[str | None, dict, StatusError | None]:
    """(state, status, error) of a job per its status.json: state None when none was written,
    DAMAGED (with the error) when it cannot be read."""
    try:
        status = read_status(job.run_dir)
    except StatusError as err:
        return DAMAGED, {}, err
    return status.get("state"), status, None


def jobs_to_run(jobs: list[Job], force: bool) -> list[int]:
    """Indices of the jobs that are not done; refuses queued/running ones, and those whose
    status is damaged (they may be running), unless forced; a status file that is not a
    regular file always."""
    states = [job_state(job) for job in jobs]
    odd = next((err for _, _, err in states if isinstance(err, StatusNotAFile)), None)
    if odd:
        raise ConfigError(str(odd))
    active = [job.name for job, (state, _, _) in zip(jobs, states) if state in ACTIVE]
    if active and not force:
        raise ConfigError(f"job(s) {', '.join(active)} are queued or running per their "
                          "status.json; check with --status, wait, or pass --force to deploy "
                          "them again")
    damaged = [err for _, _, err in states if err]
    if damaged and not force:
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise ConfigError(f"{damaged[0]}{more}")
    return [i for i, (state, _, _) in enumerate(states) if state != "done"]


def show_jobs(sweep: Sweep, jobs: list[Job], todo: list[int]) -> None:
    rows = [(i, job.name, "run" if i in todo else "done (skipped)", job.run_dir)
            for i, job in enumerate(jobs)]
    print(f"sweep {sweep.name}: {len(jobs)} jobs, {len(todo)} to run")
    print(tabulate(rows, headers=["#", "job", "action", "run folder"]))


# ---- Slurm --------------------------------------------------------------------------------

def sbatch_command(sweep: Sweep, jobs_file: Path, todo: list[int], max_parallel: int,
                   launcher: Path, extra: str) -> list[str]:
    """`env VQAE_JOBS_FILE=... sbatch ...`: the jobs file travels in the environment (sbatch's
    --export list would split a path at its commas; a requeued task gets the same environment,
    so the same file); `%` in the folder is not a pattern."""
    logs = str(jobs_file.parent / "logs").replace("%", "%%")
    return ["env", f"VQAE_JOBS_FILE={jobs_file}", "sbatch", "--parsable",
            f"--array={index_ranges(todo)}%{max_parallel}", f"--job-name={sweep.name}",
            f"--output={logs}/%x-%A_%a.out", "--export=ALL", *shlex.split(extra),
            str(launcher)]


def deploy_slurm(sweep: Sweep, jobs: list[Job], todo: list[int], args) -> int:
    archive = os.environ.get("VQAE_DATA_ARCHIVE")
    if archive and not Path(archive).is_file():
        raise ConfigError(f"VQAE_DATA_ARCHIVE={archive} does not exist; point it at the "
                          ".tar/.tar.gz on shared storage, or unset it")
    if not args.launcher.is_file():
        raise ConfigError(f"Slurm launcher {args.launcher} not found; pass --launcher PATH")
    if not args.dry_run and shutil.which("sbatch") is None:
        raise ConfigError("sbatch not found: run on a Slurm login node, or use --deploy tmux")
    folder = Path(sweep.folder).absolute()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    jobs_file = write_jobs(jobs, folder)  # new, for this array only
    cmd = sbatch_command(sweep, jobs_file, todo, args.max_parallel, args.launcher, args.sbatch)
    if args.dry_run:
        print(join(cmd))
        return 0
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        jobs_file.unlink(missing_ok=True)  # ours, and no array reads it
        raise ConfigError(f"sbatch refused the array: {' '.join(done.stderr.split())}")
    array_id = done.stdout.strip().split(";")[0]
    for i in todo:
        write_status(jobs[i].run_dir, "queued", replace_damaged=args.force, job=jobs[i].name,
                     slurm_job=f"{array_id}_{i}")
    print(f"submitted job array {array_id} ({len(todo)} tasks, at most {args.max_parallel} "
          f"at once) reading {jobs_file}; logs in {folder / 'logs'}")
    return 0


# ---- tmux ---------------------------------------------------------------------------------

JOB_SCRIPT = """#!/usr/bin/env bash
# A job of a vqae sweep, written by spawner.py: waits for a free slot (at most {slots} jobs of
# its tmux session run at once), trains, and records its status. Each value is assigned below
# as one quoted word (vqae.io.shell.quote) and used only as "$variable".
sweep={sweep}
job={name}
run_dir={run_dir}
window={window}
slot={slot}
log={log}
vqae=({python} -m vqae)
train_args=({args})
cd {cwd} || exit 1
exec 9>>"$slot"
flock 9
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{threads}}}  # the cores shared by the jobs at once
echo "sweep $sweep, job $job"
"${{vqae[@]}}" job-status "$run_dir" running --job="$job" --tmux-window="$window"
"${{vqae[@]}}" train "${{train_args[@]}}" 2>&1 | tee -a "$log"
rc=${{PIPESTATUS[0]}}
"${{vqae[@]}}" job-status "$run_dir" --exit-code="$rc" --job="$job"
exit "$rc"
"""


def session_name(sweep: Sweep) -> str:
    """Unique per deploy: tmuxp silently does nothing for a session name that exists."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", new_name(f"{sweep.name}-"))


def job_script(sweep: Sweep, job: Job, slot: Path, slots: int, window: str) -> str:
    return JOB_SCRIPT.format(
        sweep=quote(sweep.name), name=quote(job.name), run_dir=quote(job.run_dir),
        window=quote(window), slot=quote(slot), log=quote(job.run_dir / "train.log"),
        python=quote(sys.executable), args=join(job.args), cwd=quote(os.getcwd()),
        slots=int(slots), threads=max(1, (os.cpu_count() or 1) // slots))


def tmux_workspace(sweep: Sweep, jobs: list[Job], todo: list[int], max_parallel: int,
                   session: str) -> dict:
    folder = Path(sweep.folder).absolute()
    scripts, slots = folder / "scripts" / session, folder / "slots"
    scripts.parent.mkdir(parents=True, exist_ok=True)
    scripts.mkdir()  # new: a script a window may still be reading is never rewritten
    slots.mkdir(exist_ok=True)
    windows = []
    for k, i in enumerate(todo):
        job = jobs[i]
        script = scripts / f"{job.name}.sh"
        script.write_text(job_script(sweep, job, slots / f"slot-{k % max_parallel}.lock",
                                     max_parallel, f"{session}:{job.name}"))
        # the window runs the script itself: tmuxp's send-keys to a shell waited up to a minute
        # for a prompt on a machine without a terminal
        windows.append({"window_name": job.name,
                        "window_shell": join(["bash", script]), "panes": ["pane"]})
    return {"session_name": session, "start_directory": os.getcwd(), "windows": windows}


def deploy_tmux(sweep: Sweep, jobs: list[Job], todo: list[int], args) -> int:
    session = session_name(sweep)
    workspace = tmux_workspace(sweep, jobs, todo, args.max_parallel, session)
    path = Path(sweep.folder).absolute() / "tmux" / f"{session}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(workspace, sort_keys=False))
    socket = ["-L", args.tmux_socket] if args.tmux_socket else []
    cmd = ["tmuxp", "load", "-d", "-y", "--no-progress", *socket, str(path)]
    if args.dry_run:
        print(join(cmd))
        return 0
    for i in todo:
        write_status(jobs[i].run_dir, "queued", replace_damaged=args.force, job=jobs[i].name,
                     tmux_window=f"{session}:{jobs[i].name}")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError("tmuxp not found: pip install tmuxp (and install tmux)") from None
    if done.returncode != 0:
        raise ConfigError(f"tmuxp could not load {path}: {' '.join(done.stderr.split())}")
    attach = join(["tmux", *socket, "attach", "-t", session])
    print(f"tmux session {session}: {len(todo)} windows, at most {args.max_parallel} running "
          f"at once; watch with `{attach}`")
    return 0


# ---- status -------------------------------------------------------------------------------

METRICS_TAIL = 64 << 10  # bytes read from the end of metrics.jsonl: its last few records


def last_step(run_dir: Path) -> str:
    """The step of the last whole record of the job's metrics.jsonl ("" when there is none yet,
    "?" when the file cannot be read or holds no record with a step in its last 64 KiB)."""
    path = run_dir / "metrics.jsonl"
    try:
        if not os.path.lexists(path):
            return ""
        with open_regular(path, "metrics file", ConfigError) as f:  # never a FIFO, a device
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - METRICS_TAIL))
            tail = f.read(METRICS_TAIL)
    except (ConfigError, OSError, ValueError):
        return "?"
    for line in reversed(tail.splitlines()[-3:]):  # the last one may be half written
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if type(step) is int:
            return str(step)
    return "?" if tail.strip() else ""


def show_status(sweep: Sweep, jobs: list[Job]) -> int:
    rows, damaged = [], []
    for job in jobs:
        state, s, err = job_state(job)
        if err:
            damaged.append(str(err))
        rows.append((job.name, state or "not started", s.get("exit_code", ""),
                     last_step(job.run_dir), s.get("start") or "", s.get("end") or "",
                     s.get("slurm_job") or s.get("tmux_window") or ""))
    print(tabulate(rows, headers=["job", "state", "exit", "step", "start", "end", "where"]))
    counts = {}
    for row in rows:
        counts[row[1]] = counts.get(row[1], 0) + 1
    print(f"sweep {sweep.name}: " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    for message in damaged:
        print(message)
    return 0


# ---- entry point --------------------------------------------------------------------------

def build_parser(launcher: Path) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="spawner.py", description=__doc__.splitlines()[0])
    p.add_argument("sweep", type=Path, help="sweep YAML (configs/sweeps/*.yaml)")
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--deploy", choices=("slurm", "tmux"), help="where to run the jobs")
    action.add_argument("--status", action="store_true", help="table of the jobs' status")
    p.add_argument("--dry-run", action="store_true",
                   help="write the jobs file and scripts, print the command, submit nothing")
    p.add_argument("--max-parallel", type=int, metavar="M",
                   help="jobs running at once (default: the sweep's max_parallel)")
    p.add_argument("--force", action="store_true", help="deploy queued/running jobs again")
    p.add_argument("--sbatch", default="", metavar="OPTIONS",
                   help='extra sbatch options, e.g. "-p gpu -A myproject --time=12:00:00"')
    p.add_argument("--launcher", type=Path, default=launcher, help="the sbatch script")
    p.add_argument("--tmux-socket", metavar="NAME", help="tmux -L socket name")
    return p


def run(args) -> int:
    sweep = load_sweep(args.sweep)
    jobs = expand(sweep)
    if args.status:
        return show_status(sweep, jobs)
    args.max_parallel = args.max_parallel or sweep.max_parallel
    if args.max_parallel < 1:
        raise ConfigError("--max-parallel must be at least 1")
    todo = jobs_to_run(jobs, args.force)
    show_jobs(sweep, jobs, todo)
    if not todo:
        print("every job is done; nothing to deploy")
        return 0
    return (deploy_slurm if args.deploy == "slurm" else deploy_tmux)(sweep, jobs, todo, args)


def main(argv: list[str] | None = None, launcher: Path | None = None) -> int:
    default = launcher or Path(__file__).resolve().parents[2] / "slurm_launcher"
    args = build_parser(default).parse_args(argv)
    try:
        return run(args)
    except VqaeError as err:
        print(f"spawner.py: error: {err}", file=sys.stderr)
        return err.exit_code
