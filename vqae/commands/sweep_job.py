"""`vqae sweep-job JOBS_FILE INDEX`: job INDEX of a sweep's jobs file, for launchers.

Prints the job's name, run folder and `vqae train` arguments, each followed by a NUL byte, the
one character no argument can hold: bash reads them with `mapfile -d '' -t fields <FILE`, with
no `eval` and no word splitting. A missing or damaged record is a one-line error naming the file
and line. Loads no torch.
"""

from __future__ import annotations

import os
import sys

from vqae.sweeps.jobs_file import read_job


def add_arguments(parser) -> None:
    parser.add_argument("jobs_file", help="the jobs file of the array (spawner.py writes a new "
                        "<sweep folder>/jobs-<stamp>.jsonl per deploy)")
    parser.add_argument("index", type=int, help="the job's index (a Slurm array task id)")


def run(args) -> int:
    job = read_job(args.jobs_file, args.index)
    fields = [job.name, str(job.run_dir), *job.args]
    sys.stdout.flush()
    sys.stdout.buffer.write(b"".join(os.fsencode(f) + b"\0" for f in fields))
    sys.stdout.buffer.flush()
    return 0
