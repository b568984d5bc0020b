"""Ranks and devices from torchrun's or Slurm's variables; DDP with NCCL on GPUs, gloo on CPU.

Multi-node runs are started by torchrun or srun; this module only reads what they set. The
environment is read once, before anything touches a GPU: `plan` maps (variables, requested
device, visible GPUs) to the rank, the world size and this process's device, as a pure function.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vqae.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"  # "cpu" or "cuda:<index>"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def first_host(nodelist: str) -> str:
    """First host of a Slurm node list (`node[01-04],gpu7` -> `node01`)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist],
                             capture_output=True, text=True, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.CalledProcessError):
        pass  # no scontrol here: parse the simple forms ourselves
    head = nodelist.split(",")[0]
    if "[" in head:
        prefix, rest = head.split("[", 1)
        return prefix + rest.split("-")[0].split(",")[0].rstrip("]")
    return head


def _int(environ: Mapping[str, str], name: str, default: int = 0) -> int:
    try:
        return int(environ.get(name, default))
    except ValueError:
        raise ConfigError(f"environment variable {name}={environ[name]!r} is not a number"
                          ) from None


def read_ranks(environ: Mapping[str, str]) -> tuple[int, int, int]:
    """(rank, world size, local rank): torchrun's RANK/WORLD_SIZE/LOCAL_RANK first, else the
    variables srun sets for each task of a step (a batch script's own shell is one process)."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return _int(environ, "RANK"), _int(environ, "WORLD_SIZE"), _int(environ, "LOCAL_RANK")
    tasks = _int(environ, "SLURM_STEP_NUM_TASKS", 1)
    if tasks > 1 and "SLURM_PROCID" in environ:
        return _int(environ, "SLURM_PROCID"), tasks, _int(environ, "SLURM_LOCALID")
    return 0, 1, 0


def plan(environ: Mapping[str, str], device: str, gpus: int) -> DistEnv:
    """Rank, world size, local rank and device of this process.

    Each process takes the GPU of its local rank; when it sees one GPU only (Slurm's
    --gpus-per-task, or CUDA_VISIBLE_DEVICES set per process) that GPU is its own.
    """
    rank, world, local = read_ranks(environ)
    if not (0 <= rank < world and local >= 0):
        raise ConfigError(f"rank {rank} / local rank {local} do not fit a world of {world}")
    if device == "cuda" and gpus == 0:
        raise ConfigError("run.device=cuda but no CUDA GPU is visible; use --run.device=cpu")
    if device == "cpu" or gpus == 0:
        return DistEnv(rank, world, local, "cpu")
    if gpus > 1 and local >= gpus:
        raise ConfigError(f"local rank {local} needs GPU {local} but {gpus} are visible; start "
                          f"at most {gpus} processes per node")
    return DistEnv(rank, world, local, f"cuda:{local if gpus > 1 else 0}")


def visible_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def single_device(name: str = "auto") -> torch.device:
    """The device of a one-process command (evaluate, the codec): auto, cpu or cuda."""
    return plan({}, name, visible_gpus()).torch_device


def setup(device: str = "auto") -> DistEnv:
    """Read the environment once, pin this process's GPU, join the process group if several."""
    env = plan(os.environ, device, visible_gpus())
    if env.device.startswith("cuda"):
        torch.cuda.set_device(env.torch_device)  # before anything else touches the GPU
    if env.enabled and not dist.is_initialized():
        _init_group(env)
    return env


def _init_group(env: DistEnv) -> None:
    if "MASTER_ADDR" not in os.environ:
        if "SLURM_JOB_NODELIST" not in os.environ:
            raise ConfigError("several processes but no MASTER_ADDR: start with torchrun or srun")
        os.environ["MASTER_ADDR"] = first_host(os.environ["SLURM_JOB_NODELIST"])
    # one port per job, so jobs sharing a node don't collide (ids 1000 apart did, with % 1000)
    job = int(os.environ.get("SLURM_JOB_ID", 0))
    os.environ.setdefault("MASTER_PORT", str(15000 + job % 40000))
    backend = "nccl" if env.device.startswith("cuda") else "gloo"
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)


def all_reduce_max(value: float, device: torch.device) -> float:
    """The largest value over ranks (e.g. "any rank got SIGTERM"); local value without DDP."""
    if not dist.is_initialized():
        return value
    t = torch.tensor([value], dtype=torch.float32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
