"""Hyperparameter sweeps (`spawner.py`): from a sweep YAML to Slurm job arrays or tmux windows.

- `spec`: the sweep YAML (`Sweep`, `load_sweep`) and its expansion into named jobs
- `jobs_file`: the read-only jobs file a Slurm array reads by task index (`vqae sweep-job`)
- `job_status`: each job's `status.json`
- `deploy`: `spawner.py`'s body: submit an array, load a tmux workspace, show the status

Values reach scripts and commands quoted by `vqae.io.shell`. Imports no torch: a login node
submits a sweep without it.
"""
