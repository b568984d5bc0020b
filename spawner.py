#!/usr/bin/env python3
"""Hyperparameter sweeps as ONE Slurm job array or as the windows of a tmux session.

    python spawner.py configs/sweeps/debug.yaml --deploy tmux --max-parallel 2
    python spawner.py configs/sweeps/debug.yaml --deploy slurm --sbatch "-p gpu -A myproj"
    python spawner.py configs/sweeps/debug.yaml --status

The sweep format is documented in vqae/sweeps/spec.py; all the logic lives in vqae.sweeps.deploy (no torch).
"""

import sys
from pathlib import Path

from vqae.sweeps.deploy import main

if __name__ == "__main__":
    sys.exit(main(launcher=Path(__file__).resolve().parent / "slurm_launcher"))
