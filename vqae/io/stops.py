"""Graceful stops: TERM, USR1 and INT ask a long command to finish its step, save and exit 75.

Slurm (scancel, preemption, the time limit), GNU `timeout` and Ctrl-C signal the whole process
group, worker processes included. Workers therefore ignore these signals (`ignore_stop_signals`
as a DataLoader `worker_init_fn` or a Pool `initializer`) and are shut down by the main process,
which holds a `StopFlag` and stops at its next safe point. A second INT interrupts at once.
A worker forked while a signal is in flight must not die of it before `ignore_stop_signals` runs
(torch installs a SIGTERM handler in its DataLoader workers that kills them): fork workers
inside `stop_signals_blocked()`, so they start with these signals blocked, and let
`ignore_stop_signals` unblock them once they are ignored (a pending one is then discarded).
Stdlib only: light commands (job-status) use the exit code without importing torch.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable, Iterator

from vqae.errors import VqaeError

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped on a signal with its state saved; requeue or resume
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Stopped(VqaeError):
    """A loop that a StopFlag cut short: an inner one (evaluation, prior fitting) raises it for
    its caller to save what it can; a command raises it with its output consistent, and the
    CLI prints its message and exits EXIT_PREEMPTED."""

    exit_code = EXIT_PREEMPTED


def ignore_stop_signals(*_: object) -> None:
    """In a worker process: leave TERM/USR1/INT to the main process (which stops the workers).
    Takes and ignores arguments, so it serves as a DataLoader worker_init_fn too. Unblocks
    the signals afterwards (see `stop_signals_blocked`): one that arrived meanwhile is dropped."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class WorkerInit:
    """`ignore_stop_signals`, then the caller's own worker_init_fn (if any): a DataLoader's
    worker_init_fn. A class, not a closure, so it pickles for spawned workers."""

    def __init__(self, then: Callable[[int], None] | None = None):
        self.then = then

    def __call__(self, worker_id: int) -> None:
        ignore_stop_signals()
        if self.then is not None:
            self.then(worker_id)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold TERM/USR1/INT back from this thread (and the processes it forks) meanwhile; one
    that arrives is delivered when the block ends, so nothing is lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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
        if self.requested:  # Slurm and a launcher often send the same request twice
            log.info("received %s: already stopping", name)
            return
        hint = "; Ctrl-C again stops at once, unsaved" if signum == signal.SIGINT else ""
        log.warning("received %s: %s (exit status %d)%s", name, self.what, EXIT_PREEMPTED, hint)
        self.requested, self.signal_name = True, name
