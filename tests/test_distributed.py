"""From environment variables to (rank, world size, local rank, device), as a pure function."""

import pytest

from vqae.distributed import DistEnv, plan, read_ranks
from vqae.errors import ConfigError

TORCHRUN = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "n1"}
SRUN = {"SLURM_PROCID": "6", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8",
        "SLURM_LOCALID": "2", "SLURM_JOB_NODELIST": "gpu[01-02]"}


@pytest.mark.parametrize("environ, gpus, expected", [
    ({}, 0, DistEnv(0, 1, 0, "cpu")),
    ({}, 4, DistEnv(0, 1, 0, "cuda:0")),
    (TORCHRUN, 4, DistEnv(5, 8, 1, "cuda:1")),  # every rank used to land on cuda:0
    (TORCHRUN, 0, DistEnv(5, 8, 1, "cpu")),  # gloo on CPU
    (SRUN, 4, DistEnv(6, 8, 2, "cuda:2")),
    (SRUN, 1, DistEnv(6, 8, 2, "cuda:0")),  # --gpus-per-task=1: the one GPU it sees is its own
    ({**SRUN, **TORCHRUN}, 4, DistEnv(5, 8, 1, "cuda:1")),  # torchrun inside an allocation
    # the batch script's own shell: Slurm's job-wide task count, but no step of several tasks
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_LOCALID": "0"}, 4,
     DistEnv(0, 1, 0, "cuda:0")),
])
def test_environment_to_rank_and_device(environ, gpus, expected):
    assert plan(environ, "auto", gpus) == expected


def test_explicit_devices():
    assert plan(TORCHRUN, "cpu", 4).device == "cpu"
    assert plan(TORCHRUN, "cuda", 2).device == "cuda:1"
    with pytest.raises(ConfigError, match="no CUDA GPU is visible"):
        plan({}, "cuda", 0)


def test_more_local_ranks_than_gpus_is_refused():
    with pytest.raises(ConfigError, match="local rank 3 needs GPU 3 but 2 are visible"):
        plan({**TORCHRUN, "LOCAL_RANK": "3"}, "auto", 2)


def test_bad_variables_are_named():
    with pytest.raises(ConfigError, match="RANK='x'"):
        read_ranks({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="do not fit a world of 2"):
        plan({"RANK": "2", "WORLD_SIZE": "2"}, "auto", 0)
