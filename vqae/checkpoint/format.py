"""What a checkpoint holds, in tensors and plain Python values, and its checks.

Format 3 (vqae/checkpoint/tree.py stores it as one safetensors file) is a dict of tensors and
plain Python values (str, int, float, bool, None, bytes, and lists, tuples and dicts of them):
  model       {parameter or buffer name: tensor}
  config      the resolved config (`vqae.config.to_dict`)
and, in a training checkpoint (`vqae train`), also
  optimizer, scheduler   torch state dicts (tensors, numbers, strings, lists, tuples, dicts;
                         the optimizer's state keyed by int)
  scaler      GradScaler state dict, or None
  position    {"step", "epoch", "consumed"}: ints
  rng         {"python": {"version": int, "state": int64 tensor (625,), "gauss": float|None},
               "numpy": {"algorithm": "MT19937", "key": int64 tensor (624,), "pos": int,
                         "has_gauss": int, "gauss": float},
               "torch": uint8 tensor, "cuda": [uint8 tensor per device]}
Loaded, the dict also holds "format": 3 (from the file's metadata).
Older vqae wrote torch pickles (torch.save), which `vqae convert-checkpoint` rewrites: format 1
(vqae up to 4fe91c4, no "format" key) held the RNG states as `random.getstate()` and
`np.random.get_state()` (a tuple with an ndarray); format 2 held the same dict as format 3.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqae.errors import DataError

FORMAT_VERSION = 3
MODEL_KEYS = ("model", "config")
TRAINING_KEYS = (*MODEL_KEYS, "optimizer", "scheduler", "rng", "position")
POSITION_KEYS = ("step", "epoch", "consumed")
PLAIN_TYPES = (torch.Tensor, str, int, float, bool, bytes, type(None))


class MalformedCheckpoint(DataError):
    """A checkpoint that loads but lacks a key or holds the wrong type under one."""


# ---- RNG states as tensors and plain values ---------------------------------------------

def python_rng_plain(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "state": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def python_rng_tuple(plain: dict[str, Any]) -> tuple:
    return plain["version"], tuple(plain["state"].tolist()), plain["gauss"]


def numpy_rng_plain(state: tuple) -> dict[str, Any]:
    algorithm, key, pos, has_gauss, gauss = state
    return {"algorithm": str(algorithm),
            "key": torch.from_numpy(np.asarray(key).astype(np.int64)),  # (624,) uint32 values
            "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}


def numpy_rng_tuple(plain: dict[str, Any]) -> tuple:
    key = plain["key"].cpu().numpy().astype(np.uint32)
    return plain["algorithm"], key, plain["pos"], plain["has_gauss"], plain["gauss"]


# ---- structural checks -------------------------------------------------------------------

def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).replace('torch.', '')} tensor of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def _need(ok: bool, path: Path, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise MalformedCheckpoint(
            f"checkpoint {path}: {key} is {_describe(value)}, expected {expected}; the file is "
            "damaged or was not written by `vqae train`")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _tensor(value: Any, dtype: torch.dtype, length: int | None = None) -> bool:
    return (isinstance(value, torch.Tensor) and value.dtype == dtype and value.dim() == 1
            and (length is None or len(value) == length))


def _dict(path: Path, key: str, value: Any, keys: tuple[str, ...] = ()) -> dict:
    _need(isinstance(value, dict) and all(isinstance(k, str) for k in value), path, key, value,
          "a dict with string keys")
    missing = [k for k in keys if k not in value]
    if missing:
        raise MalformedCheckpoint(f"checkpoint {path}: {key} lacks {missing}; the file is "
                                  "damaged or was not written by `vqae train`")
    return value


def check_rng(path: Path, rng: Any) -> None:
    _dict(path, "rng", rng, ("python", "numpy", "torch"))
    py = _dict(path, "rng.python", rng["python"], ("version", "state", "gauss"))
    _need(_is_int(py["version"]), path, "rng.python.version", py["version"], "an int")
    _need(_tensor(py["state"], torch.int64, len(random.getstate()[1])), path,
          "rng.python.state", py["state"], "an int64 tensor of shape [625]")
    _need(py["gauss"] is None or isinstance(py["gauss"], float), path, "rng.python.gauss",
          py["gauss"], "a float or None")
    npy = _dict(path, "rng.numpy", rng["numpy"], ("algorithm", "key", "pos", "has_gauss",
                                                  "gauss"))
    _need(npy["algorithm"] == "MT19937", path, "rng.numpy.algorithm", npy["algorithm"],
          "'MT19937'")
    _need(_tensor(npy["key"], torch.int64, 624), path, "rng.numpy.key", npy["key"],
          "an int64 tensor of shape [624]")
    for name in ("pos", "has_gauss"):
        _need(_is_int(npy[name]), path, f"rng.numpy.{name}", npy[name], "an int")
    _need(isinstance(npy["gauss"], float), path, "rng.numpy.gauss", npy["gauss"], "a float")
    _need(_tensor(rng["torch"], torch.uint8), path, "rng.torch", rng["torch"],
          "a uint8 tensor")
    cuda = rng.get("cuda", [])
    _need(isinstance(cuda, list) and all(_tensor(t, torch.uint8) for t in cuda), path,
          "rng.cuda", cuda, "a list of uint8 tensors")


def check_position(path: Path, position: Any) -> None:
    _dict(path, "position", position, POSITION_KEYS)
    extra = sorted(set(position) - set(POSITION_KEYS))
    if extra:
        raise MalformedCheckpoint(f"checkpoint {path}: position holds unknown keys {extra} "
                                  f"besides {list(POSITION_KEYS)}; the file is damaged or was "
                                  "not written by `vqae train`")
    for name in POSITION_KEYS:
        value = position[name]
        _need(_is_int(value) and value >= 0, path, f"position.{name}", value,
              "an int >= 0")


def check_state(path: Path, state: Any, training: bool = False) -> dict[str, Any]:
    """`state` if it has the structure of a checkpoint (a training one with `training`), else a
    one-line MalformedCheckpoint naming the file and the key."""
    if not isinstance(state, dict):
        raise MalformedCheckpoint(f"checkpoint {path} holds {_describe(state)}, not a dict; it "
                                  "was not written by `vqae train`")
    fmt = state.get("format", 1)
    _need(_is_int(fmt), path, "format", fmt, "an int")
    if fmt > FORMAT_VERSION:
        raise DataError(f"checkpoint {path} has format {fmt}, newer than this vqae reads "
                        f"({FORMAT_VERSION}); upgrade vqae")
    missing = sorted(set(TRAINING_KEYS if training else MODEL_KEYS) - set(state))
    if missing:
        what = ("is not a training checkpoint of `vqae train` (a run resumes only from one)"
                if training else "was not written by `vqae train`")
        raise MalformedCheckpoint(f"checkpoint {path} lacks {missing}; it {what}")
    for name, value in _dict(path, "model", state["model"]).items():
        _need(isinstance(value, torch.Tensor), path, f"model[{name!r}]", value, "a tensor")
    _dict(path, "config", state["config"])
    if training:
        _dict(path, "optimizer", state["optimizer"], ("state", "param_groups"))
        _dict(path, "scheduler", state["scheduler"])
        scaler = state.get("scaler")
        _need(scaler is None or isinstance(scaler, dict), path, "scaler", scaler,
              "a dict or None")
        check_position(path, state["position"])
        check_rng(path, state["rng"])
    return state


def check_scheduler(path: Path, saved: dict, fresh: dict) -> None:
    """The scheduler's load_state_dict sets attributes from the dict: the same keys, types and
    (no serialized lambdas) lr_lambdas as a fresh one, or a DataError."""
    for key in sorted(set(saved) | set(fresh)):
        ok = key in saved and key in fresh and type(saved[key]) is type(fresh[key])
        if not ok or (key == "lr_lambdas" and saved[key] != fresh[key]):
            raise MalformedCheckpoint(f"checkpoint {path}: scheduler.{key} does not match this version's "
                            "LambdaLR state; the file is damaged or not from `vqae train`")


def check_optimizer_shapes(path: Path, opt: torch.optim.Optimizer) -> None:
    """Loaded moment tensors have their parameter's shape (a wrong one fails only mid-step)."""
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != p.shape:
                    raise MalformedCheckpoint(f"checkpoint {path}: optimizer state {key} has shape "
                                    f"{list(value.shape)} for a parameter of shape "
                                    f"{list(p.shape)}; resume with the config it was trained "
                                    "with")


MAX_VALUES = 1_000_000  # a base-model training state holds a few thousand
MAX_NESTING = 32


def check_plain(value: Any, where: str = "state") -> None:
    """Raise TypeError naming the first value that is neither a tensor nor a plain Python value
    (an ndarray left in a converted state, say), or when the state nests deeper than
    MAX_NESTING or holds more than MAX_VALUES values: a pickle can share one list many times
    over, and walking it as a tree would take exponential time."""
    todo, seen = [(value, where, 0)], 0
    while todo:
        value, where, depth = todo.pop()
        seen += 1
        if seen > MAX_VALUES or depth > MAX_NESTING:
            raise TypeError(f"{where}: the state nests deeper than {MAX_NESTING} levels or holds "
                            f"more than {MAX_VALUES:,} values; not a vqae training state")
        if isinstance(value, dict):
            for k, v in value.items():
                todo += [(k, f"{where} key", depth + 1), (v, f"{where}[{k!r}]", depth + 1)]
        elif isinstance(value, (list, tuple)):
            todo += [(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
        elif not isinstance(value, PLAIN_TYPES):
            raise TypeError(f"{where} is a {type(value).__name__}: a checkpoint holds only "
                            "tensors and plain Python values")


# ---- formats 1 and 2 -> 3 ---------------------------------------------------------------

def upgrade(state: dict[str, Any]) -> dict[str, Any]:
    """An older state as the current format (format 1's RNG states re-expressed, every other
    value kept)."""
    state = dict(state)
    rng = state.get("rng")
    if isinstance(rng, dict):
        rng = dict(rng)
        if isinstance(rng.get("python"), tuple):
            rng["python"] = python_rng_plain(rng["python"])
        if isinstance(rng.get("numpy"), tuple):
            rng["numpy"] = numpy_rng_plain(rng["numpy"])
        state["rng"] = rng
    state["format"] = FORMAT_VERSION
    return state
