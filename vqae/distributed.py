"""Process-group setup from torchrun or Slurm variables; DDP with NCCL on GPUs, gloo on CPU.

Multi-node runs are started by torchrun or srun; this module only reads what they set.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vqae.errors import ConfigError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


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


def read_env(environ: dict | None = None) -> DistEnv:
    """torchrun's RANK/WORLD_SIZE/LOCAL_RANK first, else srun's SLURM_PROCID/NTASKS/LOCALID."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return DistEnv(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                       int(env.get("SLURM_LOCALID", 0)))
    return DistEnv()


def init_distributed(device: torch.device) -> DistEnv:
    """Join the process group when several processes were started; a no-op for one."""
    env = read_env()
    if not env.enabled or dist.is_initialized():
        return env
    if "MASTER_ADDR" not in os.environ:
        if "SLURM_JOB_NODELIST" not in os.environ:
            raise ConfigError("several processes but no MASTER_ADDR: start with torchrun or srun")
        os.environ["MASTER_ADDR"] = first_host(os.environ["SLURM_JOB_NODELIST"])
    os.environ.setdefault("MASTER_PORT", str(29500 + int(os.environ.get("SLURM_JOB_ID", 0)) % 1000))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)
    return env


def resolve_device(name: str, env: DistEnv) -> torch.device:
    """auto -> CUDA when present; asking for CUDA without a GPU is an error, not a CPU run."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"run.device={name!r}; valid: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but no CUDA GPU is visible; use --run.device=cpu")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(env.local_rank)
    return torch.device("cuda", env.local_rank)


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
