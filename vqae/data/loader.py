"""`Loader`: a DataLoader whose worker processes leave TERM/USR1/INT to the main process.

Slurm, `timeout` and Ctrl-C signal the whole process group. A plain DataLoader's workers die of
TERM (torch installs a handler in them that re-raises it) and the main process then fails with
"DataLoader worker ... exited unexpectedly" instead of checkpointing. Here every worker ignores
these signals (vqae.io.stops.WorkerInit, composed with the caller's worker_init_fn), is forked with
them blocked so that none lands before it ignores them, and is shut down by the main process
(`shutdown`, and at interpreter exit at the latest). The window is closed for fork (the default
on Linux); a forkserver started earlier hands its own signal mask to the workers instead.
"""

from __future__ import annotations

import atexit
import weakref

from torch.utils.data import DataLoader

from vqae.io.stops import WorkerInit, stop_signals_blocked

_LIVE: weakref.WeakSet[Loader] = weakref.WeakSet()


class Loader(DataLoader):
    """DataLoader(dataset, **kwargs) with stop-signal-proof workers and an explicit shutdown."""

    def __init__(self, dataset, **kwargs):
        kwargs["worker_init_fn"] = WorkerInit(kwargs.get("worker_init_fn"))
        super().__init__(dataset, **kwargs)
        self._iterators: weakref.WeakSet = weakref.WeakSet()
        _LIVE.add(self)

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        with stop_signals_blocked():  # workers are forked here (once, if persistent)
            iterator = super().__iter__()
        self._iterators.add(iterator)
        return iterator

    def shutdown(self) -> None:
        """Stop this loader's worker processes now (persistent ones included). They ignore
        TERM, so torch's own fallback (terminate) would not end them: a worker still alive
        after torch's shutdown is killed."""
        for iterator in list(self._iterators):
            stop = getattr(iterator, "_shutdown_workers", None)  # what torch's __del__ calls
            if stop is not None:
                stop()
            for worker in getattr(iterator, "_workers", []):
                if worker.is_alive():
                    worker.kill()
                    worker.join()
        self._iterators.clear()


@atexit.register  # runs before multiprocessing's exit hook, which would terminate() the
def _shutdown_all() -> None:  # workers (ignored) and then wait for them forever
    for loader in list(_LIVE):
        loader.shutdown()
