"""`vqae job-status RUN_DIR [STATE] [--exit-code N] [--slurm-job ID] [--tmux-window W]`.

Launchers call it around `vqae train`; `spawner.py --status` reads the files it writes.
Without STATE, the state follows `--exit-code`: 0 done, 75 requeued (checkpointed on a
signal), anything else failed.
"""

from __future__ import annotations

from vqae.errors import ConfigError
from vqae.io.stops import EXIT_PREEMPTED
from vqae.sweeps.job_status import STATES, write_status


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="the job's run folder (--run.dir)")
    parser.add_argument("state", nargs="?", choices=STATES,
                        help="new state; default: derived from --exit-code")
    parser.add_argument("--exit-code", type=int, metavar="N", help="vqae train's exit status")
    parser.add_argument("--slurm-job", help="Slurm job id (array: JOB_TASK)")
    parser.add_argument("--tmux-window", help="tmux session:window")
    parser.add_argument("--job", help="the job's name in its sweep")


def run(args) -> int:
    state, code = args.state, args.exit_code
    if state is None and code is not None:
        state = "done" if code == 0 else "requeued" if code == EXIT_PREEMPTED else "failed"
    if state is None:
        raise ConfigError("give a STATE or --exit-code N")
    write_status(args.run_dir, state, exit_code=code, slurm_job=args.slurm_job,
                 tmux_window=args.tmux_window, job=args.job)
    return 0
