"""A checkpoint on disk (format 3): one safetensors file, read without any pickle.

Every tensor of the state is stored under a path-like key: `model/encoder.0.weight`,
`optimizer/state/3/exp_avg`, `rng/torch`, `rng/cuda/0`. Everything else is JSON in the file's
`__metadata__` (a dict of strings):

  "format"  "3"
  "vqae"    the state tree as strict JSON, in which
              {"$tensor": key}          is the tensor stored under `key`,
              {"$tuple": [...]}         a tuple (random.setstate and Adam's betas need one),
              {"$items": [[k, v], ...]} a dict with int keys (an optimizer's state is keyed by
                                        parameter index) or keys starting with "$",
              {"$float": "nan" | "inf" | "-inf"}   a float JSON cannot write,
              {"$bytes": base64 text}
            and any other object is a dict with string keys.

Reading: safetensors checks the header's length, the dtypes and shapes against the offsets, and
the offsets against the file's size, and reads the tensors into memory of their own (pread, not
a mapping that a later write to the file would change); then this module checks the tree: at
most MAX_TREE_CHARS of JSON without NaN literals or repeated keys, nesting at most MAX_DEPTH,
strings of at most MAX_STRING characters, known tags only, every reference to a tensor the file
holds and every tensor referenced exactly once.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

from vqae.checkpoint.format import FORMAT_VERSION
from vqae.errors import DataError, cut

FORMAT_KEY, TREE_KEY = "format", "vqae"
MAX_TREE_CHARS = 16 << 20  # a base-model training state's tree is ~60 KB
MAX_DEPTH = 32  # a training state nests 7 levels (optimizer/state/$items/pair/moments/$tensor)
MAX_STRING = 1 << 16  # config paths and names; never a blob
DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16",
          torch.bfloat16: "BF16", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
          torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
          **{getattr(torch, f"uint{n}"): f"U{n}" for n in (16, 32, 64)
             if hasattr(torch, f"uint{n}")}}  # torch >= 2.3
FLOATS = ("nan", "inf", "-inf")


class TreeError(ValueError):
    """The metadata of a safetensors file is not a state tree vqae wrote."""


# ---- writing -----------------------------------------------------------------------------

def _plain_error(where: str, value: Any) -> TypeError:
    return TypeError(f"{where or 'state'} is a {type(value).__name__}: a checkpoint holds only "
                     "tensors and plain Python values")


def flatten(state: Any) -> tuple[dict[str, torch.Tensor], str]:
    """(tensors by path-like key, the JSON tree referring to them) of `state`; TypeError names
    the first value that is neither a tensor nor a plain Python value."""
    tensors: dict[str, torch.Tensor] = {}

    def tensor(value: torch.Tensor, path: str) -> dict[str, str]:
        if value.layout != torch.strided or value.dtype not in DTYPES:
            raise TypeError(f"{path} is a {value.layout} {value.dtype} tensor, which a "
                            "safetensors checkpoint cannot hold")
        key, n = path, 1
        while key in tensors or key == "__metadata__":  # a dict key holding "/" could collide
            key, n = f"{path}#{n}", n + 1
        # each tensor is written from its own bytes, so views of one storage (tied weights)
        # need no clone: they come back as tensors of their own
        tensors[key] = value.detach().cpu().contiguous()
        return {"$tensor": key}

    def encode(value: Any, path: str) -> Any:
        join = (lambda k: f"{path}/{k}") if path else str
        if isinstance(value, torch.Tensor):
            return tensor(value, path or "state")
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return float(value) if math.isfinite(value) else {"$float": repr(float(value))}
        if isinstance(value, bytes):
            return {"$bytes": base64.b64encode(value).decode("ascii")}
        if isinstance(value, (list, tuple)):
            items = [encode(v, join(i)) for i, v in enumerate(value)]
            return items if isinstance(value, list) else {"$tuple": items}
        if isinstance(value, dict):
            for k in value:
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise _plain_error(f"{path or 'state'} key", k)
            if all(isinstance(k, str) and not k.startswith("$") for k in value):
                return {k: encode(v, join(k)) for k, v in value.items()}
            return {"$items": [[k, encode(v, join(k))] for k, v in value.items()]}
        raise _plain_error(path, value)

    tree = encode(state, "")
    return tensors, json.dumps(tree, allow_nan=False, separators=(",", ":"))


def write_safetensors(f: BinaryIO, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str]) -> None:
    """The safetensors bytes of `tensors` (CPU, contiguous, little-endian host) and `metadata`
    into the open file `f`: the header's length (u64 little-endian), the JSON header padded
    with spaces to a multiple of 8, then each tensor's bytes straight from its memory, in the
    order safetensors itself writes (larger elements first, then by key)."""
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for key in order:
        t = tensors[key]
        end = offset + t.numel() * t.element_size()
        header[key] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                       "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)))
    f.write(text)
    for key in order:
        if tensors[key].numel():
            f.write(tensors[key].reshape(-1).view(torch.uint8).numpy())


# ---- reading -----------------------------------------------------------------------------

def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise TreeError("an object repeats a key")
    return found


def _no_constant(name: str) -> None:
    raise TreeError(f"the literal {name}, which strict JSON has not")


def _string(value: str) -> str:
    if len(value) > MAX_STRING:
        raise TreeError(f"a string of {len(value):,} characters (at most {MAX_STRING:,})")
    return value


def unflatten(text: str, take: Callable[[str], torch.Tensor]) -> Any:
    """The state tree of the JSON `text`, each reference replaced by `take(key)`; TreeError
    says what is wrong with a tree vqae did not write."""
    if len(text) > MAX_TREE_CHARS:
        raise TreeError(f"a state tree of {len(text):,} characters (at most {MAX_TREE_CHARS:,})")
    try:
        tree = json.loads(text, object_pairs_hook=_no_repeats, parse_constant=_no_constant)
    except RecursionError:
        raise TreeError(f"a state tree nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as err:  # JSONDecodeError, an int of too many digits, _no_repeats
        raise TreeError(f"a state tree that is not JSON ({cut(str(err), 120)})") from err

    def decode(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise TreeError(f"a state tree nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            return _string(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if isinstance(value, list):
            return [decode(v, depth + 1) for v in value]
        if not any(k.startswith("$") for k in value):
            return {_string(k): decode(v, depth + 1) for k, v in value.items()}
        return tagged(value, depth)

    def tagged(value: dict[str, Any], depth: int) -> Any:
        tag, arg = next(iter(value.items())) if len(value) == 1 else ("", None)
        if tag == "$tensor" and isinstance(arg, str):
            return take(arg)
        if tag == "$tuple" and isinstance(arg, list):
            return tuple(decode(v, depth + 1) for v in arg)
        if tag == "$items" and isinstance(arg, list):
            return items(arg, depth)
        if tag == "$float" and arg in FLOATS:
            return float(arg)
        if tag == "$bytes" and isinstance(arg, str):
            try:
                return base64.b64decode(_string(arg), validate=True)
            except binascii.Error as err:
                raise TreeError(f"$bytes that are not base64 ({err})") from err
        keys = cut(", ".join(sorted(value)), 80)
        raise TreeError(f"an object with keys {keys} that is no tag vqae writes")

    def items(pairs: list[Any], depth: int) -> dict[Any, Any]:
        found: dict[Any, Any] = {}
        for pair in pairs:
            ok = isinstance(pair, list) and len(pair) == 2 and (
                isinstance(pair[0], str) or type(pair[0]) is int)
            if not ok or pair[0] in found:
                raise TreeError("$items that are not [key, value] pairs with distinct str or "
                                "int keys")
            found[_string(pair[0]) if isinstance(pair[0], str) else pair[0]] = decode(
                pair[1], depth + 1)
        return found

    return decode(tree, 0)


def _version(path: Path, metadata: dict[str, str] | None) -> int:
    text = (metadata or {}).get(FORMAT_KEY)
    if text is None or TREE_KEY not in metadata:
        raise TreeError("a safetensors file without vqae's metadata (format and vqae)")
    if not (text.isascii() and text.isdigit() and len(text) < 6):
        raise TreeError(f"format {cut(text, 40)!r}, not a version number")
    if int(text) > FORMAT_VERSION:
        raise DataError(f"checkpoint {path} has format {int(text)}, newer than this vqae reads "
                        f"({FORMAT_VERSION}); upgrade vqae")
    if int(text) != FORMAT_VERSION:
        raise TreeError(f"format {int(text)} in a safetensors file (vqae writes "
                        f"{FORMAT_VERSION})")
    return int(text)


def read_safetensors(path: Path, device: torch.device) -> Any:
    """The state tree of the safetensors checkpoint `path`, its tensors on `device`, with
    "format" set in a dict state. Raises safetensors' SafetensorError (header, offsets, size),
    TreeError (metadata), or a DataError for a newer format."""
    from safetensors import safe_open

    used: set[str] = set()
    with safe_open(path, framework="pt", device="cpu", backend="pread") as f:
        metadata = f.metadata()
        version = _version(path, metadata)
        keys = set(f.keys())

        def take(key: str) -> torch.Tensor:
            if key not in keys or key in used:
                what = "refers twice to" if key in used else "refers to a missing"
                raise TreeError(f"a state tree that {what} tensor {cut(key, 80)!r}")
            used.add(key)
            t = f.get_tensor(key)
            return t if device.type == "cpu" else t.to(device)

        state = unflatten(metadata[TREE_KEY], take)
    if keys - used:
        extra = cut(", ".join(sorted(keys - used)[:3]), 120)
        raise TreeError(f"{len(keys - used)} tensor(s) outside the state tree ({extra})")
    if isinstance(state, dict):
        state[FORMAT_KEY] = version
    return state
