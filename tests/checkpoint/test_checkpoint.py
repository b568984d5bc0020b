import json
import logging
import math
import os
import random

import numpy as np
import pytest
import torch

from vqae.checkpoint.format import FORMAT_VERSION
from vqae.checkpoint.manager import (
    CheckpointManager,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from vqae.checkpoint.tree import flatten, write_safetensors
from vqae.errors import DataError


def _state(step):
    return {"step": step, "model": {"w": torch.full((4,), float(step))},
            "config": {"model": {"widths": [8, 16]}}, "rng": capture_rng_state()}


def test_save_checkpoint_roundtrip_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "a.pt"
    save_checkpoint(target, _state(3))
    save_checkpoint(target, _state(4))  # overwrite in place
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.pt"]
    loaded = load_checkpoint(target)
    assert loaded["step"] == 4 and loaded["config"] == {"model": {"widths": [8, 16]}}
    torch.testing.assert_close(loaded["model"]["w"], torch.full((4,), 4.0))


def test_failed_save_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "a.pt"
    save_checkpoint(target, {"step": 1})

    class Unpicklable:
        def __reduce__(self):
            raise TypeError("cannot pickle")

    with pytest.raises(TypeError):
        save_checkpoint(target, {"step": 2, "bad": Unpicklable()})
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert load_checkpoint(target)["step"] == 1


def _draws():
    return (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist())


def test_rng_roundtrip_reproduces_draws():
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    _draws()  # move away from the seeded state
    saved = capture_rng_state()
    first = _draws()
    _draws()
    restore_rng_state(saved)
    assert _draws() == first


def test_rng_roundtrip_through_a_checkpoint_file(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "r.pt", {"rng": capture_rng_state()})
    first = _draws()
    restore_rng_state(load_checkpoint(tmp_path / "r.pt")["rng"])
    assert _draws() == first


def test_manager_prunes_to_keep_last(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for step in (10, 20, 30, 40):
        path = mgr.save(step, _state(step))
        assert path.name == f"ckpt-{step:08d}.pt"
    assert [s for s, _ in mgr.checkpoints()] == [30, 40]
    assert sorted(p.name for p in mgr.dir.iterdir()) == ["ckpt-00000030.pt", "ckpt-00000040.pt"]


def test_manager_best_tracks_improvement_and_survives_pruning(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1)
    mgr.save(1, _state(1), metric=30.0)
    mgr.save(2, _state(2), metric=32.0)
    mgr.save(3, _state(3), metric=31.0)  # worse: best stays at step 2
    mgr.save(4, _state(4), metric=float("nan"))
    mgr.save(5, _state(5))
    assert [s for s, _ in mgr.checkpoints()] == [5]
    assert load_checkpoint(mgr.best_path)["step"] == 2
    # a new manager (resume) knows the best so far
    again = CheckpointManager(tmp_path, keep_last=1)
    assert again.best() == {"step": 2, "metric": 32.0, "better": "max"}
    again.save(6, _state(6), metric=31.5)
    assert load_checkpoint(mgr.best_path)["step"] == 2
    assert not list(mgr.dir.glob(".*"))  # no temp files


def test_manager_best_min(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _state(1), metric=0.5, better="min")
    mgr.save(2, _state(2), metric=0.3, better="min")
    mgr.save(3, _state(3), metric=0.4, better="min")
    assert load_checkpoint(mgr.best_path)["step"] == 2
    with pytest.raises(ValueError, match="better"):
        mgr.save(4, _state(4), metric=1.0, better="up")


@pytest.mark.parametrize("keep_bytes", [0, 10, 0.5, -10])
def test_latest_valid_skips_truncated_newest(tmp_path, caplog, keep_bytes):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (100, 200):
        mgr.save(step, _state(step))
    newest = mgr.path_for(200)
    data = newest.read_bytes()
    cut = int(len(data) * keep_bytes) if isinstance(keep_bytes, float) else keep_bytes % len(data)
    newest.write_bytes(data[:cut])
    with caplog.at_level(logging.WARNING, logger="vqae.checkpoint.manager"):
        found = mgr.latest_valid()
    assert found is not None
    path, state = found
    assert path == mgr.path_for(100) and state["step"] == 100
    assert "ckpt-00000200.pt" in caplog.text


def write_tree(path, state, fmt=None):
    """A safetensors checkpoint holding any `state` (a list, say), the format in its metadata
    taken from state["format"] (default: the current one) or `fmt`, as save_checkpoint would
    write it if it wrote anything."""
    if isinstance(state, dict):
        state = dict(state)
        fmt = fmt or str(state.pop("format", FORMAT_VERSION))
    tensors, tree = flatten(state)
    with open(path, "wb") as f:
        write_safetensors(f, tensors, {"format": fmt or str(FORMAT_VERSION), "vqae": tree})
    return path


def test_latest_valid_skips_non_dict_and_handles_empty(tmp_path, caplog):
    mgr = CheckpointManager(tmp_path)
    assert mgr.latest_valid() is None
    mgr.save(1, _state(1))
    write_tree(mgr.path_for(2), [1, 2, torch.zeros(2)])  # a state vqae never writes
    with caplog.at_level(logging.WARNING, logger="vqae.checkpoint.manager"):
        _, state = mgr.latest_valid()
    assert state["step"] == 1 and "not a dict" in caplog.text
    mgr.path_for(1).write_bytes(b"garbage" * 10)
    with caplog.at_level(logging.WARNING, logger="vqae.checkpoint.manager"):
        assert mgr.latest_valid() is None


def test_prune_removes_stale_temp_files(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.dir.mkdir(parents=True)
    stale = mgr.dir / ".ckpt-00000001.pt.abc123.tmp"  # left by a SIGKILL mid-write
    stale.write_bytes(b"partial")
    mgr.save(2, _state(2))
    assert not stale.exists()
    assert [s for s, _ in mgr.checkpoints()] == [2]


def test_best_is_a_hard_link_where_supported(tmp_path):
    mgr = CheckpointManager(tmp_path)
    mgr.save(1, _state(1), metric=1.0)
    assert os.path.samefile(mgr.best_path, mgr.path_for(1))


def test_checkpoint_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = CheckpointManager(tmp_path).save(1, _state(1), metric=1.0)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by the group, like any output


def test_read_checkpoint_and_load_model_name_the_file(tmp_path):
    from vqae.checkpoint.manager import load_model, read_checkpoint
    from vqae.config import Config, to_dict
    from vqae.models import build_model

    with pytest.raises(DataError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pt")
    torn = tmp_path / "torn.pt"
    save_checkpoint(torn, _state(1))
    torn.write_bytes(torn.read_bytes()[:200])
    with pytest.raises(DataError, match=f"checkpoint {torn} is unreadable"):
        read_checkpoint(torn)
    save_checkpoint(tmp_path / "other.pt", {"weights": 1})
    with pytest.raises(DataError, match=r"lacks \['config', 'model'\]"):
        read_checkpoint(tmp_path / "other.pt")
    cfg = Config()
    cfg.model.widths = [8]
    model = build_model(cfg)
    save_checkpoint(tmp_path / "ok.pt", {"model": model.state_dict(), "config": to_dict(cfg)})
    loaded, loaded_cfg = load_model(tmp_path / "ok.pt")
    assert loaded_cfg == cfg and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values()))
    wrong = to_dict(cfg)
    wrong["model"]["widths"] = [16]
    save_checkpoint(tmp_path / "wrong.pt", {"model": model.state_dict(), "config": wrong})
    with pytest.raises(DataError, match="weights do not fit"):
        load_model(tmp_path / "wrong.pt")
    wrong["model"]["widths"] = [0]
    save_checkpoint(tmp_path / "bad.pt", {"model": model.state_dict(), "config": wrong})
    with pytest.raises(DataError, match="config this version cannot use"):
        load_model(tmp_path / "bad.pt")


# ---- the format: one safetensors file ----------------------------------------------------

def test_a_checkpoint_is_one_safetensors_file_with_path_keys_and_json_metadata(tmp_path):
    from safetensors import safe_open

    state = {"model": {"enc.weight": torch.ones(2, 3)}, "config": {"a": 1},
             "rng": capture_rng_state(), "optimizer": {"state": {0: {"exp_avg": torch.ones(3)}},
                                                       "param_groups": [{"params": [0]}]}}
    path = save_checkpoint(tmp_path / "ckpt-00000001.pt", state)
    assert path.read_bytes()[8:9] == b"{"  # u64 header length, JSON header: no pickle
    with safe_open(path, framework="pt") as f:  # safetensors itself reads it
        meta = f.metadata()
        assert sorted(f.keys()) == ["model/enc.weight", "optimizer/state/0/exp_avg",
                                    "rng/numpy/key", "rng/python/state", "rng/torch"]
        assert torch.equal(f.get_tensor("model/enc.weight"), torch.ones(2, 3))
    assert meta["format"] == str(FORMAT_VERSION)
    assert json.loads(meta["vqae"])["model"] == {"enc.weight": {"$tensor": "model/enc.weight"}}


AWKWARD = {
    "floats": [float("nan"), float("inf"), -float("inf"), -0.0, 1e-310, 0.1 + 0.2],
    "ints": [0, -1, 2**80, True, False, None],
    "tuple": (0.9, 0.999, ("nested", 1)),
    "int keys": {0: "a", 7: {"b": 2}},
    "dollar keys": {"$tensor": "not a reference", "$x": [1]},
    "mixed keys": {1: "one", "1": "string one"},
    "bytes": b"\x00\xff bytes",
    "text": "\u00e9\u4e2d\"\\/\n",
    "empty": [{}, [], (), ""],
}


def test_plain_values_round_trip_exactly(tmp_path):
    save_checkpoint(tmp_path / "a.pt", AWKWARD)
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert loaded.pop("format") == FORMAT_VERSION
    assert repr(loaded) == repr(AWKWARD)  # nan == nan is False; repr shows types and values
    assert type(loaded["tuple"]) is tuple and type(loaded["tuple"][2]) is tuple
    assert math.copysign(1, loaded["floats"][3]) == -1
    assert [type(k) for k in loaded["mixed keys"]] == [int, str]


def bits(t):
    return t.contiguous().reshape(-1).view(torch.uint8)


def test_awkward_tensors_round_trip(tmp_path):
    base = torch.arange(12, dtype=torch.float32)
    tensors = {"scalar": torch.tensor(3.5), "empty": torch.zeros(0, 4),
               "transposed": base.reshape(3, 4).t(), "view a": base[:6], "view b": base[2:8],
               "whole": base, "bf16": torch.randn(5).bfloat16(), "bool": torch.ones(2).bool(),
               "int8": torch.tensor([-3, 4], dtype=torch.int8), "nan": torch.tensor([math.nan]),
               "step": torch.tensor(7.0), "uint8": torch.get_rng_state()}
    save_checkpoint(tmp_path / "t.pt", {**tensors, "list": [base[:2], base[:2]]})
    loaded = load_checkpoint(tmp_path / "t.pt")
    for key, value in tensors.items():
        got = loaded[key]
        assert got.dtype == value.dtype and got.shape == value.shape and got.is_contiguous()
        assert torch.equal(bits(got), bits(value)), key  # bit for bit, NaN included
    loaded["view a"][0] = 100.0  # tensors that shared a storage come back as their own
    assert loaded["whole"][0] == 0 and loaded["view b"][0] == 2
    assert loaded["list"][1][0] == 0 and loaded["list"][0] is not loaded["list"][1]


def test_map_location_moves_every_tensor(tmp_path):
    save_checkpoint(tmp_path / "m.pt", {"model": {"w": torch.ones(2)}, "rng": capture_rng_state()})
    loaded = load_checkpoint(tmp_path / "m.pt", map_location="meta")
    assert loaded["model"]["w"].device.type == "meta"
    assert loaded["rng"]["torch"].device.type == "meta"


def test_values_a_checkpoint_cannot_hold_are_a_type_error(tmp_path):
    for bad in ({"x": {1.5: "float key"}}, {"x": {(1, 2): 1}}, {"x": object()},
                {"x": torch.zeros(2).to_sparse()}):
        with pytest.raises(TypeError, match="x"):
            save_checkpoint(tmp_path / "bad.pt", bad)
    assert not list(tmp_path.iterdir())


def test_full_disk_is_one_data_error_and_leaves_no_temp_file(small_disk):
    disk = small_disk("64k")
    save_checkpoint(disk / "a.pt", {"w": torch.zeros(10)})
    with pytest.raises(DataError, match="disk is full or not writable"):
        save_checkpoint(disk / "a.pt", {"w": torch.zeros(100_000)})
    assert [p.name for p in disk.iterdir()] == ["a.pt"]
    assert load_checkpoint(disk / "a.pt")["w"].shape == (10,)
