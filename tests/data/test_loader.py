"""`Loader`: workers that outlive TERM to their process group, whenever it lands, and that never
hold up the exit of the main process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# TERM to the whole process group every millisecond while 20 epochs fork 2 fresh workers each:
# some TERMs land between a worker's fork and its worker_init_fn (a plain DataLoader with
# worker_init_fn=ignore_stop_signals loses workers there).
PELTED = """
import os, signal, threading, time
from vqae.data.loader import Loader
from vqae.io.stops import StopFlag

def init(worker_id):
    os.environ["INIT_RAN"] = "1"

class Probe:
    def __len__(self):
        return 8
    def __getitem__(self, i):
        ignored = signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        return int(ignored and os.environ.get("INIT_RAN") == "1")

done = False
def pelt():
    while not done:
        os.killpg(0, signal.SIGTERM)
        time.sleep(0.001)

with StopFlag() as stop:
    loader = Loader(Probe(), batch_size=4, num_workers=2, worker_init_fn=init)
    thread = threading.Thread(target=pelt)
    thread.start()
    try:
        seen = [int(b.sum()) for _ in range(20) for b in loader]
    finally:
        done = True
        thread.join()
print("batches", len(seen), "all ignored TERM after init", sum(seen) == 8 * 20,
      "stop requested", stop.requested)
"""

# persistent workers still alive at exit, no explicit shutdown: multiprocessing's exit hook
# would terminate() them (TERM, ignored) and wait forever
LEFT_RUNNING = """
from vqae.data.loader import Loader
loader = Loader(list(range(8)), batch_size=2, num_workers=2, persistent_workers=True)
iterator = iter(loader)
next(iterator)
print("exiting")
"""


def run_script(code: str, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True, check=False)


def test_workers_survive_term_to_the_process_group_from_fork_on():
    res = run_script(PELTED, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "batches 40 all ignored TERM after init True stop requested True" in res.stdout


def test_live_persistent_workers_do_not_hold_up_the_exit():
    res = run_script(LEFT_RUNNING, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "exiting", res.stderr[-3000:]
