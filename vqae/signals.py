"""Graceful stops: TERM, USR1 and INT ask a long command to finish its step, save and exit 75.

Slurm (scancel, preemption, the time limit), GNU `timeout` and Ctrl-C signal the whole process
group, worker processes included. Workers therefore ignore these signals (`ignore_stop_signals`
as a DataLoader `worker_init_fn` or a Pool `initializer`) and are shut down by the main process,
which holds a `StopFlag` and stops at its next safe point. A second INT interrupts at once.
Stdlib only: light commands (job-status) use the exit code without importing torch.
"""

from __future__ import annotations

import logging
import signal

from vqae.errors import VqaeError

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on a signal with its state saved; requeue or resume
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def ignore_stop_signals(*_: object) -> None:
    """In a worker process: leave TERM/USR1/INT to the main process (which stops the workers).
    Takes and ignores arguments, so it serves as a DataLoader worker_init_fn too."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StopFlag:
    """Set by TERM / USR1 / INT; the holder checks `requested` at safe points and stops there.

    A context manager: the previous handlers come back afterwards, so a process that goes on
    (a test, a notebook) still dies on SIGTERM. The first INT sets the flag; a second one
    raises KeyboardInterrupt, for a user who does not want to wait.
    """

    def __init__(self, what: str = "saving at the next step"):
        self.what = what
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopFlag:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        log.warning("received %s: %s (exit status %d)", name, self.what, EXIT_PREEMPTED)
        self.requested, self.signal_name = True, self.signal_name or name


class Stopped(VqaeError):
    """A command stopped on TERM/USR1/INT with its output consistent (exit status 75)."""

    exit_code = EXIT_PREEMPTED
