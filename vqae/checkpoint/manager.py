"""Atomic checkpoints, RNG state capture, a manager that keeps the last N plus the best, and
`load_model`, the one way to rebuild a trained model.

A checkpoint is a dict of tensors and plain Python values (vqae/checkpoint/format.py) stored as
one safetensors file: the tensors under path-like keys, the rest as JSON in its metadata
(vqae/checkpoint/tree.py). Loading parses no pickle, so no code in a checkpoint file can run,
whoever wrote it. Files of an older vqae (torch pickles) are recognised without unpickling them
and pointed at `vqae convert-checkpoint`. Writes go to a temp file in the same folder, are
fsynced and renamed over the target, so a crash or SIGKILL leaves either the old file or the new
one, never a torn one under the final name.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError

from vqae.checkpoint.format import (
    FORMAT_VERSION,
    check_state,
    numpy_rng_plain,
    numpy_rng_tuple,
    python_rng_plain,
    python_rng_tuple,
)
from vqae.checkpoint.tree import (
    FORMAT_KEY,
    TREE_KEY,
    TreeError,
    flatten,
    read_safetensors,
    write_safetensors,
)
from vqae.errors import ConfigError, DataError, one_line
from vqae.io.atomic import TEMP_SUFFIX, replace, temp_path, write_atomic, write_with

log = logging.getLogger(__name__)

CKPT_PATTERN = re.compile(r"^ckpt-(\d{8,})\.pt$")
# Globals the torch pickles of older vqae name beyond what weights_only allows: numpy's RNG
# state, an ndarray (format 1, vqae up to 4fe91c4); format 2 names none of them.
LEGACY_GLOBALS = frozenset({"numpy.ndarray", "numpy.dtype", "numpy.dtypes.UInt32DType",
                            "numpy.core.multiarray._reconstruct",
                            "numpy._core.multiarray._reconstruct"})
ZIP_MAGIC = b"PK\x03\x04"  # torch.save since torch 1.6: a zip holding data.pkl


class UnreadableCheckpoint(DataError):
    """Truncated, damaged, or not a checkpoint at all (a torn write: resume skips it)."""


class OldFormatCheckpoint(DataError):
    """A torch pickle of an older vqae: `vqae convert-checkpoint` rewrites it as safetensors."""


class UnsafeCheckpoint(DataError):
    """A pickle naming Python objects no vqae checkpoint holds (crafted to run code, or
    damaged), or a kind of pickle vqae never wrote: refused."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any],
                    verify: Callable[[Path], None] | None = None) -> Path:
    """Write `state` (tensors and plain values only; TypeError names any other) as a
    safetensors checkpoint of the current format to `path` atomically (temp file + fsync +
    rename + directory fsync); `verify(temp file)` may raise to keep the old file."""
    target = Path(path)
    tensors, tree = flatten({k: v for k, v in state.items() if k != FORMAT_KEY})
    metadata = {FORMAT_KEY: str(FORMAT_VERSION), TREE_KEY: tree}
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_with(target, lambda f: write_safetensors(f, tensors, metadata), durable=True,
                   verify=verify)
    except OSError as err:
        raise DataError(f"cannot write checkpoint {target}: {err}; the disk is full or not "
                        "writable: free space or choose another --run.dir, then continue "
                        "with --run.resume=auto") from err
    return target


def _unreadable(path: Path, why: str) -> UnreadableCheckpoint:
    return UnreadableCheckpoint(
        f"checkpoint {path} is unreadable (truncated or not a checkpoint: {why}); pass another "
        "checkpoint, or --run.resume=auto to take the newest valid one")


def _old_torch_file(path: Path) -> DataError:
    """What a torch zip is, from the globals its pickle names, listed without unpickling it:
    an older vqae's checkpoint (to convert), a hostile or foreign pickle, or damage."""
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except pickle.UnpicklingError as err:  # an opcode torch.save never writes
        return UnsafeCheckpoint(f"checkpoint {path} refused: its pickle is not one torch.save "
                                f"writes ({one_line(err)}); it was not loaded")
    except (RuntimeError, ValueError, OSError, EOFError, MemoryError) as err:
        return _unreadable(path, one_line(err))
    strange = [n for n in names if n not in LEGACY_GLOBALS]
    if strange:
        return UnsafeCheckpoint(
            f"checkpoint {path} refused: it names Python objects no vqae checkpoint holds "
            f"({', '.join(strange[:4])}); crafted to run code or damaged, it was not loaded")
    return OldFormatCheckpoint(
        f"checkpoint {path} was written by an older vqae (a torch pickle): convert it once "
        f"with `vqae convert-checkpoint {path}` (or the folder holding it), then run again")


def _kind(path: Path) -> str:
    """"safetensors", "zip" or "pickle", from the first bytes (never unpickled)."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head[8:9] == b"{":  # u64 header length, then the JSON header
        return "safetensors"
    if head[:4] == ZIP_MAGIC:
        return "zip"
    return "pickle" if head[:1] == b"\x80" else "safetensors"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """What the checkpoint `path` holds, its tensors on `map_location`: the one load of the
    package. Only safetensors is parsed, never a pickle, so no code in the file runs. Failures
    are one-line DataErrors naming the file: UnreadableCheckpoint (torn or damaged),
    OldFormatCheckpoint (an older vqae's torch pickle: convert it) or UnsafeCheckpoint (any
    other pickle: refused)."""
    path, device = Path(path), torch.device(map_location)
    if not path.exists():
        raise DataError(f"checkpoint {path} does not exist; pass a file written by `vqae train` "
                        "(runs/<name>/checkpoints/*.pt)")
    if not path.is_file():
        raise UnreadableCheckpoint(f"checkpoint {path} is not a regular file; pass a file "
                                   "written by `vqae train`")
    try:
        kind = _kind(path)
        if kind == "zip":
            raise _old_torch_file(path)
        if kind == "pickle":
            raise UnsafeCheckpoint(f"checkpoint {path} refused: it is a pickle (a legacy "
                                   "torch.save or pickle.dump), which vqae never wrote; it was "
                                   "not loaded")
        return read_safetensors(path, device)
    except MemoryError as err:
        raise UnreadableCheckpoint(f"checkpoint {path} is unreadable: it declares more data "
                                   "than fits in memory") from err
    except TreeError as err:
        raise _unreadable(path, f"it holds {err}") from err
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        # a header, offsets or size safetensors refused; a file that vanished or shrank
        raise _unreadable(path, one_line(err)) from err


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu",
                    training: bool = False) -> dict[str, Any]:
    """`load_checkpoint` and its structural check (a training checkpoint with `training`):
    every failure is one DataError naming the file (and the key)."""
    return check_state(Path(path), load_checkpoint(path, map_location), training)


def model_from_state(path: str | os.PathLike, state: dict[str, Any], device: Any = "cpu"):
    """(model, config) rebuilt from a checked checkpoint `state` read from `path`."""
    from vqae.config import from_dict
    from vqae.models import build_model

    try:
        cfg = from_dict(state["config"])
    except ConfigError as err:
        raise DataError(f"checkpoint {path} holds a config this version cannot use: {err}"
                        ) from err
    model = build_model(cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise DataError(f"checkpoint {path}: weights do not fit the model its config describes "
                        f"({first})") from err
    return model.to(device).eval(), cfg


def load_model(path: str | os.PathLike, device: Any = "cpu"):
    """(model, config) rebuilt from the config and weights saved in a checkpoint, in eval mode."""
    return model_from_state(path, read_checkpoint(path, device), device)


def fit_and_save(model, dataset, paths: list[Path], state: Callable[[], dict[str, Any]],
                 device: Any, batch_size: int = 16, workers: int = 0, progress: bool = True,
                 stop: Callable[[], bool] | None = None) -> str:
    """Fit `model`'s prior on every patch of `dataset`, then write `state()` holding the fitted
    model to each of `paths` (atomically); returns the fit's report. `stop` cuts the fit
    short with Stopped, the files untouched (`vqae fit-prior` and the end of `vqae train`)."""
    from vqae.entropy.fit import fit_prior, report

    fits = fit_prior(model, dataset, device, batch_size, workers, progress, stop)
    saved = state()
    saved["model"] = {k: v.cpu() for k, v in model.state_dict().items()}
    for path in paths:
        save_checkpoint(path, saved)
    _, h, w = model.latent_shape()
    return report(fits, model.quantizer.codebook_size, h * w, model.image_size**2)


def capture_rng_state() -> dict[str, Any]:
    """States of python random, numpy's global RNG, torch CPU and every visible CUDA device, as
    tensors and plain values (the layout is in vqae/checkpoint/format.py)."""
    return {
        "python": python_rng_plain(random.getstate()),
        "numpy": numpy_rng_plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state; CUDA states are restored for the devices present in both."""
    random.setstate(python_rng_tuple(state["python"]))
    np.random.set_state(numpy_rng_tuple(state["numpy"]))
    torch.set_rng_state(state["torch"].cpu())
    saved = list(state.get("cuda", []))
    if not torch.cuda.is_available():
        if saved:
            log.warning("checkpoint holds CUDA RNG states but CUDA is not available; skipped")
        return
    present = torch.cuda.device_count()
    if len(saved) != present:
        log.warning("checkpoint holds %d CUDA RNG states, %d devices visible: restoring %d",
                    len(saved), present, min(len(saved), present))
    for device, rng in enumerate(saved[:present]):
        torch.cuda.set_rng_state(rng.cpu(), device)


class CheckpointManager:
    """Keeps `<run_dir>/checkpoints/ckpt-<step:08d>.pt` (last `keep_last`) and `best.pt`.

    The best metric so far lives in `best.json` beside them, so it survives a resume.
    Only rank 0 should own a manager.
    """

    def __init__(self, run_dir: str | os.PathLike, keep_last: int = 3,
                 subdir: str = "checkpoints"):
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.dir = Path(run_dir) / subdir
        self.keep_last = keep_last
        self.best_path = self.dir / "best.pt"
        self._best_json = self.dir / "best.json"

    def path_for(self, step: int) -> Path:
        return self.dir / f"ckpt-{step:08d}.pt"

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(step, path) of the step checkpoints present, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir()
                 if (m := CKPT_PATTERN.match(p.name))]
        return sorted(found)

    def best(self) -> dict[str, Any] | None:
        """{"step", "metric", "better"} of best.pt, or None before the first metric."""
        if not self._best_json.is_file():
            return None
        return json.loads(self._best_json.read_text())

    def save(self, step: int, state: dict[str, Any], metric: float | None = None,
             better: str = "max") -> Path:
        """Write the step checkpoint, update best.pt if `metric` improves, prune old ones."""
        if better not in ("max", "min"):
            raise ValueError(f"better must be 'max' or 'min', got {better!r}")
        path = save_checkpoint(self.path_for(step), state)
        if metric is not None and self._improves(float(metric), better):
            self._link_best(path)
            self._write_best_json({"step": step, "metric": float(metric), "better": better})
            log.info("new best checkpoint at step %d (metric %.6g)", step, metric)
        self._prune()
        return path

    def _improves(self, metric: float, better: str) -> bool:
        if math.isnan(metric):
            return False
        best = self.best()
        if best is None or best.get("better") != better:
            return True
        return metric > best["metric"] if better == "max" else metric < best["metric"]

    def _link_best(self, source: Path) -> None:
        # A hard link costs no space and outlives pruning of `source`; copy where links fail.
        tmp = temp_path(self.best_path)
        try:
            try:
                os.link(source, tmp)
            except OSError:
                log.debug("hard link to %s failed; copying instead", source)
                shutil.copyfile(source, tmp)
            replace(tmp, self.best_path)
        finally:
            tmp.unlink(missing_ok=True)

    def _write_best_json(self, record: dict[str, Any]) -> None:
        write_atomic(self._best_json, json.dumps(record), durable=True)

    def _prune(self) -> None:
        for _, path in self.checkpoints()[:-self.keep_last]:
            path.unlink(missing_ok=True)
        # Temp files left by a process killed mid-write; safe as only rank 0 writes here.
        for stale in self.dir.glob(f".*{TEMP_SUFFIX}"):
            stale.unlink(missing_ok=True)

    def latest_valid(self, map_location: Any = "cpu") -> tuple[Path, dict[str, Any]] | None:
        """Newest checkpoint that loads as a dict; torn or corrupt ones are skipped, warned.
        An old-format or refused (unsafe) one is an error: skipping it would quietly restart
        the run from an older step, or from scratch."""
        for _, path in reversed(self.checkpoints()):
            try:
                state = load_checkpoint(path, map_location)
            except OldFormatCheckpoint as err:
                raise OldFormatCheckpoint(
                    f"checkpoint {path}, the newest of the run, was written by an older vqae: "
                    f"convert the run's checkpoints once with `vqae convert-checkpoint "
                    f"{self.dir}`, then resume") from err
            except UnreadableCheckpoint as err:
                log.warning("skipping unreadable checkpoint %s: %s", path,
                            one_line(err.__cause__ or err))
                continue
            if not isinstance(state, dict):
                log.warning("skipping checkpoint %s: holds %s, not a dict", path,
                            type(state).__name__)
                continue
            return path, state
        return None
