"""A real Slurm cluster for the launcher tests, and helpers to submit jobs and wait for them.

`slurm` (session): the cluster that $SLURM_CONF names when `sinfo` answers (CI starts one with
`tests/launchers/slurm_cluster.sh`), else one started here in a temp folder and stopped at the
end (needs root and Debian's slurmctld, slurmd, slurm-client and munge), else a skip (a failure
with VQAE_REQUIRE_DATA=1). `cluster` (per test): the same, cancelling what the test left running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail

REPO = Path(__file__).resolve().parents[2]
CLUSTER = Path(__file__).with_name("slurm_cluster.sh")
LAUNCHER = REPO / "slurm_launcher"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE", "PREEMPTED"}
# what a test cluster can give: no GPU, one CPU per job so that two jobs run side by side
SMALL_JOB = ["--gres=none", "--cpus-per-task=1", "--time=10"]


class Slurm:
    """Talks to one cluster: `env` carries its SLURM_CONF into every command and job."""

    def __init__(self, conf: str):
        self.env = {**os.environ, "SLURM_CONF": conf, "PYTHONUNBUFFERED": "1"}
        for var in [v for v in self.env if v.startswith(("SLURM_", "VQAE_JOBS", "VQAE_DATA"))]:
            if var != "SLURM_CONF":  # pytest itself may run inside a job or a sweep's shell
                del self.env[var]
        self.submitted: list[str] = []

    def cmd(self, *args: str, timeout: float = 30, check: bool = True) -> str:
        res = subprocess.run(args, env=self.env, capture_output=True, text=True,
                             timeout=timeout, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({res.returncode}): {res.stderr}")
        return res.stdout

    def answers(self) -> bool:
        try:
            return bool(self.cmd("sinfo", "-h", "-o", "%T", timeout=10).strip())
        except (AssertionError, OSError, subprocess.TimeoutExpired):
            return False

    def submit(self, workdir: Path, sbatch_args: list[str], train_args: list[str] = (),
               env: dict | None = None, script: Path = LAUNCHER) -> str:
        """`sbatch --chdir=WORKDIR SBATCH_ARGS SCRIPT TRAIN_ARGS` from the repository (the
        submit folder, whose git commit the launcher records); the job runs in WORKDIR (a test's
        tmp_path: nothing lands in the repository), with this environment plus `env`.
        Returns the job id."""
        res = subprocess.run(["sbatch", "--parsable", f"--chdir={workdir}", *sbatch_args,
                              str(script), *train_args],
                             env={**self.env, **(env or {})}, cwd=REPO, capture_output=True,
                             text=True, timeout=30, check=False)
        assert res.returncode == 0, f"sbatch failed: {res.stderr}"
        job = res.stdout.strip().split(";")[0]
        self.submitted.append(job)
        return job

    def show(self, job: str) -> dict[str, str]:
        """`scontrol show job -o JOB` as a dict ({} once the job is forgotten)."""
        out = self.cmd("scontrol", "show", "job", "-o", job, check=False)
        line = out.strip().splitlines()[0] if out.strip() else ""
        return dict(re.findall(r"(\w+)=(\S*)", line))

    def state(self, job: str) -> str:
        return self.show(job).get("JobState", "")

    def wait_state(self, job: str, states: set[str] | str = FINAL, timeout: float = 120,
                   restarts: int | None = None) -> dict[str, str]:
        """Wait until JOB is in one of `states` (and has restarted `restarts` times, if given)."""
        states = {states} if isinstance(states, str) else set(states)

        def reached():
            info = self.show(job)
            ok = info.get("JobState") in states and (
                restarts is None or int(info.get("Restarts", -1)) == restarts)
            if not ok and info.get("JobState") in FINAL - states:  # it ended another way
                raise AssertionError(f"job {job} ended {info['JobState']} (exit "
                                     f"{info.get('ExitCode')}), waiting for {sorted(states)}")
            return info if ok else None

        return wait_for(reached, timeout, f"job {job} in {sorted(states)}"
                        + (f" after {restarts} restart(s)" if restarts is not None else ""),
                        lambda: self.show(job))

    def wait_while_alive(self, job: str, predicate, timeout: float, what: str, describe):
        """`wait_for(predicate)`, failing at once when JOB ends before it holds."""

        def check():
            value = predicate()
            if not value and self.state(job) in FINAL:
                raise AssertionError(f"job {job} ended ({self.state(job)}) before {what}: "
                                     f"{describe()}")
            return value

        return wait_for(check, timeout, what, describe)

    def cancel_leftovers(self) -> None:
        alive = [j for j in self.submitted if self.state(j) not in FINAL | {""}]
        if alive:
            self.cmd("scancel", *alive, check=False)
        self.submitted.clear()


def wait_for(predicate, timeout: float, what: str, describe=lambda: "", interval: float = 0.5):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; "
                                 f"last seen: {describe()}")
        time.sleep(interval)


def _can_start() -> str:
    """Why this machine cannot start a test cluster ("" when it can)."""
    if os.geteuid() != 0:
        return "starting a Slurm test cluster needs root"
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch") if not shutil.which(b)]
    if missing:
        return (f"Slurm not installed ({', '.join(missing)} missing): apt-get install -y "
                "slurmctld slurmd slurm-client munge, or set SLURM_CONF to a running cluster")
    return ""


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    conf = os.environ.get("SLURM_CONF")
    if conf and Slurm(conf).answers():
        cluster = Slurm(conf)
        yield cluster
        cluster.cancel_leftovers()
        return
    reason = _can_start()
    if reason:
        skip_or_fail(reason)
    folder = tmp_path_factory.mktemp("slurm")
    res = subprocess.run(["bash", str(CLUSTER), "start", str(folder)], capture_output=True,
                         text=True, timeout=180, check=False)
    if res.returncode != 0:
        subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], capture_output=True,
                       timeout=120, check=False)
        skip_or_fail(f"could not start a Slurm test cluster: {res.stderr.strip()[-1500:]}")
    try:
        yield Slurm(str(folder / "slurm.conf"))
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(folder)], capture_output=True,
                       timeout=120, check=False)


@pytest.fixture
def cluster(slurm):
    """The session's cluster; jobs a test leaves behind are cancelled after it."""
    yield slurm
    slurm.cancel_leftovers()
