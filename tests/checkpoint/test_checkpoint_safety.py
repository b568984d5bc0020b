"""No code runs from a checkpoint file: hostile pickles refused by every command that reads one,
old-format files (torch pickles) pointed at `vqae convert-checkpoint`, hostile or garbage
safetensors files and malformed structures as one-line errors.

Every file here is built in tmp_path: the hostile pickles with an object whose `__reduce__` runs
a shell command that would create a marker file.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
import struct

import numpy as np
import pytest
import torch

from tests.checkpoint.test_checkpoint import write_tree
from vqae.checkpoint.manager import load_checkpoint, save_checkpoint
from vqae.checkpoint.tree import MAX_STRING, MAX_TREE_CHARS, write_safetensors
from vqae.cli import main

TINY = ["model.widths=[8,16]", "model.blocks_per_stage=1", "model.latent_dim=8",
        "model.groups=4", "quantizer.codebook_size=32", "quantizer.kmeans_iters=2",
        "data.batch_size=2", "data.num_workers=0", "data.split_ratios=[2,1,1]",
        "train.eval_images=0", "train.deterministic=true", "train.eval_every=100",
        "run.tracker=none"]


class RunsCode:
    """Unpickling this runs `touch MARKER`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    from tests.fakes import write_fake_tree

    root = tmp_path_factory.mktemp("safety") / "tiffs"
    write_fake_tree(root, n=12, seed=5)
    return root


def tiny_config(data):
    from vqae.config import load_config

    return load_config(None, [*TINY, f"data.path={data}"])


def training_state(data) -> dict:
    """A training checkpoint's state as `vqae train` builds it (one optimizer step taken)."""
    from vqae.checkpoint.manager import capture_rng_state
    from vqae.config import to_dict
    from vqae.models import build_model
    from vqae.training.schedule import build_optimizer

    cfg = tiny_config(data)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt, sched = build_optimizer(model, cfg)
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.01)
    opt.step()
    sched.step()
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "scaler": None, "rng": capture_rng_state(),
            "position": {"step": 1, "epoch": 0, "consumed": 1}, "config": to_dict(cfg)}


def old_format_rng() -> dict:
    """RNG states as vqae up to 4fe91c4 saved them (numpy's holds an ndarray)."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state(), "cuda": []}


def cli(capsys, *args):
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err.strip()


def train_args(data, run, *extra):
    return ["train", "--data", str(data), *(f"--{o}" for o in TINY), f"--run.dir={run}",
            *extra]


def assert_one_line_error(rc, err, path):
    assert rc != 0
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(path) in err, err


# ---- hostile pickles ----------------------------------------------------------------------

def hostile(path, marker, encoding="zip", state=None):
    """A checkpoint-looking dict with a code-running object beside valid-looking keys."""
    state = {**(state or {"model": {"w": torch.zeros(2)}, "config": {}}),
             "rng": RunsCode(marker), "position": {"step": 1, "epoch": 0, "consumed": 1}}
    if encoding == "pickle":
        path.write_bytes(pickle.dumps(state, protocol=2))
    elif encoding == "zip4":  # STACK_GLOBAL, an opcode torch.save does not write
        torch.save(state, path, pickle_protocol=4)
    else:
        torch.save(state, path, _use_new_zipfile_serialization=encoding == "zip")
    return path


def command_lines(ckpt, tmp_path, data):
    vqz = tmp_path / "bits"
    vqz.mkdir(exist_ok=True)
    (vqz / "p.vqz").write_bytes(b"VQZ" + bytes(40))
    out = tmp_path / "out"
    return {
        "evaluate": ["evaluate", ckpt, "--device", "cpu"],
        "compress": ["compress", ckpt, data, "-o", out],
        "decompress": ["decompress", vqz, "-o", out, "--ckpt", ckpt],
        "rd": ["rd", "--ckpt", ckpt, "--data", data, "--out", out],
        "fit-prior": ["fit-prior", ckpt],
        "train-resume": train_args(data, tmp_path / "run", "--train.steps=2",
                                   f"--run.resume={ckpt}"),
        "convert-checkpoint": ["convert-checkpoint", ckpt],
    }


@pytest.mark.parametrize("command", ["evaluate", "compress", "decompress", "rd", "fit-prior",
                                     "train-resume", "convert-checkpoint"])
def test_hostile_checkpoint_runs_no_code_in_any_command(tmp_path, capsys, fake_data, command):
    marker = tmp_path / "MARKER"
    ckpt = hostile(tmp_path / "evil.pt", marker)
    rc, err = cli(capsys, *command_lines(ckpt, tmp_path, fake_data)[command])
    assert not marker.exists()
    assert_one_line_error(rc, err, ckpt)
    assert "refused" in err or "cannot be converted" in err


@pytest.mark.parametrize("encoding", ["legacy", "pickle", "zip4"])
@pytest.mark.parametrize("command", ["evaluate", "convert-checkpoint"])
def test_hostile_checkpoint_in_other_encodings(tmp_path, capsys, encoding, command):
    marker = tmp_path / "MARKER"
    ckpt = hostile(tmp_path / "evil.pt", marker, encoding)
    rc, err = cli(capsys, command, ckpt)
    assert not marker.exists()
    assert_one_line_error(rc, err, ckpt)
    assert "refused" in err


def test_hostile_newest_checkpoint_stops_auto_resume(tmp_path, capsys, fake_data):
    marker, run = tmp_path / "MARKER", tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    newest = hostile(run / "checkpoints" / "ckpt-00000002.pt", marker)
    rc, err = cli(capsys, *train_args(fake_data, run, "--train.steps=2", "--run.resume=auto"))
    assert not marker.exists()
    assert_one_line_error(rc, err, newest)
    assert not (run / "metrics.jsonl").exists()  # no fresh start either


def test_hostile_pickle_beside_an_old_rng_state_is_refused_not_converted(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    state = {"model": {"w": torch.zeros(2)}, "config": {}, "numpy": np.random.get_state()}
    ckpt = hostile(tmp_path / "evil.pt", marker, state=state)
    for args in (["evaluate", ckpt], ["convert-checkpoint", ckpt]):
        rc, err = cli(capsys, *args)
        assert not marker.exists()
        assert_one_line_error(rc, err, ckpt)
        assert "posix.system" in err or "cannot be converted" in err
    assert "convert-checkpoint" not in cli(capsys, "evaluate", ckpt)[1]


def test_object_array_in_an_old_rng_state_is_not_converted(tmp_path, capsys):
    rng = old_format_rng()
    rng["numpy"] = ("MT19937", np.array([1, "x"], dtype=object), 0, 0, 0.0)
    ckpt = tmp_path / "odd.pt"
    torch.save({"model": {}, "config": {}, "rng": rng}, ckpt)
    rc, err = cli(capsys, "convert-checkpoint", ckpt)
    assert_one_line_error(rc, err, ckpt)
    assert "cannot be converted" in err


@pytest.mark.timeout(60)
def test_a_shared_list_bomb_is_refused_not_walked(tmp_path, capsys):
    """A pickle can share one list many times over: 2 ** 60 paths in a few hundred bytes."""
    shared = [1]
    for _ in range(60):
        shared = [shared, shared]
    ckpt = tmp_path / "dag.pt"
    torch.save({"model": {}, "config": {}, "rng": old_format_rng(), "extra": shared}, ckpt)
    rc, err = cli(capsys, "convert-checkpoint", ckpt, "-o", tmp_path / "new.pt")
    assert_one_line_error(rc, err, ckpt)
    assert "nests deeper" in err and not (tmp_path / "new.pt").exists()


@pytest.mark.parametrize("keep", [0, 7, 9, 3000, -1])
def test_torn_checkpoint_is_unreadable_not_refused(tmp_path, capsys, fake_data, keep):
    ckpt = save_checkpoint(tmp_path / "torn.pt", training_state(fake_data))
    ckpt.write_bytes(ckpt.read_bytes()[:keep])
    rc, err = cli(capsys, "evaluate", ckpt)
    assert_one_line_error(rc, err, ckpt)
    assert "unreadable" in err


def test_torn_old_format_file_is_unreadable(tmp_path, capsys, fake_data):
    ckpt = tmp_path / "torn.pt"
    torch.save(training_state(fake_data), ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:3000])
    rc, err = cli(capsys, "evaluate", ckpt)
    assert_one_line_error(rc, err, ckpt)
    assert "unreadable" in err


# ---- old format -> convert ----------------------------------------------------------------

def old_format_file(path, data):
    """A training checkpoint as vqae up to 4fe91c4 wrote it (format 1)."""
    state = training_state(data)
    state["rng"] = old_format_rng()
    torch.save(state, path)
    return path, state


def interim_format_file(path, data):
    """A training checkpoint as the interim format 2 wrote it: a torch pickle of tensors and
    plain values only."""
    state = {**training_state(data), "format": 2}
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("make", [old_format_file, interim_format_file])
def test_every_old_format_is_recognised_without_unpickling(tmp_path, capsys, fake_data, make,
                                                           monkeypatch):
    ckpt, _ = make(tmp_path / "old.pt", fake_data)

    def no_unpickling(*args, **kwargs):
        raise AssertionError("a command unpickled a checkpoint")

    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    rc, err = cli(capsys, "evaluate", ckpt, "--device", "cpu")
    assert_one_line_error(rc, err, ckpt)
    assert f"vqae convert-checkpoint {ckpt}" in err and "older vqae" in err


def test_old_format_checkpoint_names_the_conversion(tmp_path, capsys, fake_data):
    ckpt, _ = old_format_file(tmp_path / "old.pt", fake_data)
    for args in (["evaluate", ckpt, "--device", "cpu"],
                 train_args(fake_data, tmp_path / "r", "--train.steps=2",
                            f"--run.resume={ckpt}")):
        rc, err = cli(capsys, *args)
        assert_one_line_error(rc, err, ckpt)
        assert f"vqae convert-checkpoint {ckpt}" in err


def test_old_format_newest_checkpoint_stops_auto_resume(tmp_path, capsys, fake_data):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    newest, _ = old_format_file(run / "checkpoints" / "ckpt-00000001.pt", fake_data)
    rc, err = cli(capsys, *train_args(fake_data, run, "--train.steps=2", "--run.resume=auto"))
    assert_one_line_error(rc, err, newest)
    assert f"vqae convert-checkpoint {run / 'checkpoints'}" in err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-00000001.pt"]


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def draws():
    return random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist()


def test_convert_keeps_weights_optimizer_and_rng(tmp_path, capsys, fake_data):
    from vqae.checkpoint.manager import restore_rng_state

    old, state = old_format_file(tmp_path / "old.pt", fake_data)
    old_bytes = old.read_bytes()
    rc, out = main(["convert-checkpoint", str(old), "-o", str(tmp_path / "new.pt")]), None
    out = capsys.readouterr().out
    assert rc == 0 and "verified" in out
    assert old.read_bytes() == old_bytes  # -o leaves the original alone
    new = load_checkpoint(tmp_path / "new.pt")
    assert new["format"] == 3
    for key in ("model", "optimizer", "scheduler", "position", "config"):
        assert_same(state[key], new[key])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    expected = draws()
    restore_rng_state(new["rng"])
    assert draws() == expected
    # converting again: nothing to do, the file is left as is
    again = (tmp_path / "new.pt").read_bytes()
    assert main(["convert-checkpoint", str(tmp_path / "new.pt")]) == 0
    assert "in the current format (3) already" in capsys.readouterr().out
    assert (tmp_path / "new.pt").read_bytes() == again


def test_convert_the_interim_format(tmp_path, capsys, fake_data):
    old, state = interim_format_file(tmp_path / "old.pt", fake_data)
    os.link(old, tmp_path / "best.pt")
    assert main(["convert-checkpoint", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "format 2 -> 3 (safetensors), verified" in out and "a hard link of" in out
    assert os.path.samefile(old, tmp_path / "best.pt")
    new = load_checkpoint(old)
    assert_same({**state, "format": 3}, new)
    assert type(new["optimizer"]["param_groups"][0]["betas"]) is tuple
    assert list(new["optimizer"]["state"]) == list(state["optimizer"]["state"])  # int keys
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def downgrade(state: dict) -> dict:
    """A training state as vqae up to 4fe91c4 held it (format 1)."""
    py, npy = state["rng"]["python"], state["rng"]["numpy"]
    rng = {**state["rng"], "python": (py["version"], tuple(py["state"].tolist()), py["gauss"]),
           "numpy": (npy["algorithm"], npy["key"].numpy().astype(np.uint32), npy["pos"],
                     npy["has_gauss"], npy["gauss"])}
    return {**{k: v for k, v in state.items() if k != "format"}, "rng": rng}


@pytest.mark.slow
def test_converted_run_folder_resumes_exactly(tmp_path, capsys, caplog, fake_data):
    common = ["--train.steps=4", "--train.checkpoint_every=2"]
    assert main(train_args(fake_data, tmp_path / "a", *common)) == 0
    reference = load_checkpoint(tmp_path / "a/checkpoints/ckpt-00000004.pt")
    middle = load_checkpoint(tmp_path / "a/checkpoints/ckpt-00000002.pt")
    ckpts = tmp_path / "b" / "checkpoints"
    ckpts.mkdir(parents=True)
    torch.save(downgrade(middle), ckpts / "ckpt-00000002.pt")
    os.link(ckpts / "ckpt-00000002.pt", ckpts / "best.pt")
    shutil.copy(tmp_path / "a/checkpoints/best.json", ckpts / "best.json")
    capsys.readouterr()
    assert main(["convert-checkpoint", str(tmp_path / "b")]) == 0
    assert os.path.samefile(ckpts / "best.pt", ckpts / "ckpt-00000002.pt")  # still one file
    with caplog.at_level(logging.INFO, logger="vqae.training"):
        assert main(train_args(fake_data, tmp_path / "b", *common, "--run.resume=auto")) == 0
    assert f"resumed from {ckpts / 'ckpt-00000002.pt'} at step 2" in caplog.text
    resumed = load_checkpoint(ckpts / "ckpt-00000004.pt")
    assert_same(reference["model"], resumed["model"])
    assert_same(reference["optimizer"], resumed["optimizer"])


# ---- malformed structures -----------------------------------------------------------------

MODEL_CASES = {
    "not a dict": (lambda s: [s["model"]], "holds a list, not a dict"),
    "model a string": (lambda s: {**s, "model": "weights"}, "model is a str"),
    "model value a list": (lambda s: {**s, "model": {**s["model"], "encoder.x": [1.0]}},
                           "model['encoder.x'] is a list, expected a tensor"),
    "config a list": (lambda s: {**s, "config": [1]}, "config is a list"),
    "format from the future": (lambda s: {**s, "format": 99}, "newer than this vqae"),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_malformed_model_checkpoint_is_one_line(tmp_path, capsys, fake_data, case):
    change, message = MODEL_CASES[case]
    ckpt = tmp_path / "bad.pt"
    write_tree(ckpt, change(training_state(fake_data)))
    rc, err = cli(capsys, "evaluate", ckpt, "--device", "cpu")
    assert_one_line_error(rc, err, ckpt)
    assert message in err


def _moment_reshaped(s):
    opt = s["optimizer"]
    first = next(iter(opt["state"]))
    moments = {**opt["state"][first], "exp_avg": torch.zeros(3)}
    return {**s, "optimizer": {**opt, "state": {**opt["state"], first: moments}}}


TRAINING_CASES = {
    "rng missing": (lambda s: {k: v for k, v in s.items() if k != "rng"}, "lacks ['rng']"),
    "position step a string": (lambda s: {**s, "position": {**s["position"], "step": "1"}},
                               "position.step is a str"),
    "position extra key": (lambda s: {**s, "position": {**s["position"], "x": 1}},
                           "position holds unknown keys ['x']"),
    "rng torch a list": (lambda s: {**s, "rng": {**s["rng"], "torch": [1, 2]}},
                         "rng.torch is a list"),
    "optimizer a list": (lambda s: {**s, "optimizer": [1]}, "optimizer is a list"),
    "scheduler extra attribute": (lambda s: {**s, "scheduler": {**s["scheduler"],
                                                                 "optimizer": 1}},
                                  "scheduler.optimizer does not match"),
    "optimizer moment of another shape": (_moment_reshaped,
                                          "optimizer state exp_avg has shape [3]"),
}


@pytest.mark.parametrize("case", TRAINING_CASES)
def test_malformed_training_checkpoint_is_one_line_on_resume(tmp_path, capsys, fake_data,
                                                             case):
    change, message = TRAINING_CASES[case]
    ckpt = tmp_path / "bad.pt"
    write_tree(ckpt, change(training_state(fake_data)))
    rc, err = cli(capsys, *train_args(fake_data, tmp_path / "run", "--train.steps=2",
                                      f"--run.resume={ckpt}"))
    assert_one_line_error(rc, err, ckpt)
    assert message in err


# ---- hostile or garbage safetensors files -------------------------------------------------

def raw_checkpoint(path, tree: str, tensors=None, metadata=None):
    """A safetensors file with the JSON `tree` (text, not checked) as its vqae metadata."""
    tensors = {"model/w": torch.zeros(2)} if tensors is None else tensors
    with open(path, "wb") as f:
        write_safetensors(f, tensors, {"format": "3", "vqae": tree} if metadata is None
                          else metadata)
    return path


W = '{"$tensor": "model/w"}'
DEEP = 100_000

METADATA_CASES = {
    "not JSON": (f'{{"model": {{"w": {W}}}, "config": ', {}, "not JSON"),
    "a list": (f"[{W}]", {}, "holds a list, not a dict"),
    "a number": ("7", {"tensors": {}}, "holds a int, not a dict"),
    "deep nesting": ("[" * DEEP + "]" * DEEP, {"tensors": {}}, "nested deeper than"),
    "nesting past the limit": ("[" * 40 + W + "]" * 40, {}, "nested deeper than 32"),
    "a missing tensor": ('{"model": {"w": {"$tensor": "model/nope"}}, "config": {}}', {},
                         "refers to a missing tensor 'model/nope'"),
    "a tensor referenced twice": (f'{{"model": {{"w": {W}, "v": {W}}}, "config": {{}}}}', {},
                                  "refers twice to tensor 'model/w'"),
    "a tensor outside the tree": (
        f'{{"model": {{"w": {W}}}, "config": {{}}}}',
        {"tensors": {"model/w": torch.zeros(2), "evil/payload": torch.zeros(9)}},
        "1 tensor(s) outside the state tree (evil/payload)"),
    "a huge string": (json.dumps({"model": {}, "config": {"x": "a" * (MAX_TREE_CHARS + 1)}}),
                      {"tensors": {}}, "at most 16,777,216"),
    "a long string": (json.dumps({"model": {}, "config": {"x": "a" * (MAX_STRING + 1)}}),
                      {"tensors": {}}, "a string of 65,537 characters"),
    "a long key": (json.dumps({"model": {}, "config": {"a" * (MAX_STRING + 1): 1}}),
                   {"tensors": {}}, "a string of 65,537 characters"),
    "a NaN literal": (f'{{"model": {{"w": {W}}}, "config": {{"x": NaN}}}}', {},
                      "the literal NaN"),
    "a repeated key": (f'{{"model": {{"w": {W}}}, "model": {{}}, "config": {{}}}}', {},
                       "repeats a key"),
    "an unknown tag": (f'{{"model": {{"w": {W}}}, "config": {{"$eval": "os.system"}}}}', {},
                       "keys $eval that is no tag vqae writes"),
    "a tag beside other keys": ('{"model": {"w": {"$tensor": "model/w", "x": 1}}}', {},
                                "no tag vqae writes"),
    "a bad float tag": (f'{{"model": {{"w": {W}}}, "config": {{"x": {{"$float": "1e999"}}}}}}',
                        {}, "no tag vqae writes"),
    "bad $items": (f'{{"model": {{"w": {W}}}, "config": {{"$items": [[1.5, 2]]}}}}', {},
                   "$items that are not"),
    "repeated $items keys": (f'{{"model": {{"w": {W}}}, "x": {{"$items": [[1, 2], [1, 3]]}}}}',
                             {}, "distinct str or int keys"),
    "bad $bytes": (f'{{"model": {{"w": {W}}}, "config": {{"$bytes": "%%%"}}}}', {},
                   "not base64"),
    "an int of 5000 digits": (f'{{"model": {{"w": {W}}}, "config": {{"x": {"9" * 5000}}}}}', {},
                              "not JSON"),
    "no vqae metadata": ("", {"metadata": {}}, "without vqae's metadata"),
    "format not a number": ("{}", {"metadata": {"format": "three", "vqae": "{}"}},
                            "not a version number"),
    "format 2 in safetensors": ("{}", {"metadata": {"format": "2", "vqae": "{}"}},
                                "format 2 in a safetensors file"),
    "format from the future": ("{}", {"metadata": {"format": "99", "vqae": "{}"}},
                               "has format 99, newer than this vqae reads (3); upgrade vqae"),
}


@pytest.mark.parametrize("case", METADATA_CASES)
def test_hostile_or_garbage_metadata_is_one_line(tmp_path, capsys, case):
    tree, options, message = METADATA_CASES[case]
    ckpt = raw_checkpoint(tmp_path / "bad.pt", tree, **options)
    rc, err = cli(capsys, "evaluate", ckpt, "--device", "cpu")
    assert_one_line_error(rc, err, ckpt)
    assert message in err and len(err) < 600, err


def header_file(path, header, data=b""):
    """A file laid out as safetensors: u64 length, `header` (bytes or a dict), then `data`."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
META = {"format": "3", "vqae": f'{{"model": {{"w": {W}}}, "config": {{}}}}'}
HEADER_CASES = {
    "header past the end": (b"{" + b" " * 50, b"", lambda raw: b"\xff" * 8 + raw[8:]),
    "header not JSON": (b"{not json at all}", b"", None),
    "data past the end": ({"__metadata__": META, "model/w": {**F32, "data_offsets": [0, 800]}},
                          bytes(8), None),
    "offsets disagree with the shape": ({"__metadata__": META, "model/w": {**F32, "shape": [3]}},
                                        bytes(8), None),
    "overlapping tensors": ({"__metadata__": META, "model/w": F32,
                             "model/v": {**F32, "data_offsets": [4, 12]}}, bytes(12), None),
    "a hole before the data": ({"__metadata__": META, "model/w": {**F32,
                                                                 "data_offsets": [4, 12]}},
                               bytes(12), None),
    "metadata value not a string": ({"__metadata__": {"format": 3, "vqae": "{}"}}, b"", None),
    "an unknown dtype": ({"__metadata__": META, "model/w": {**F32, "dtype": "PYOBJ"}},
                         bytes(8), None),
    "a negative shape": ({"__metadata__": META, "model/w": {**F32, "shape": [-2]}}, bytes(8),
                         None),
}


@pytest.mark.parametrize("case", HEADER_CASES)
def test_garbage_safetensors_headers_are_unreadable_one_line(tmp_path, capsys, case):
    header, data, mangle = HEADER_CASES[case]
    ckpt = header_file(tmp_path / "bad.pt", header, data)
    if mangle is not None:
        ckpt.write_bytes(mangle(ckpt.read_bytes()))
    rc, err = cli(capsys, "evaluate", ckpt, "--device", "cpu")
    assert_one_line_error(rc, err, ckpt)
    assert "unreadable" in err and len(err) < 600, err


def test_garbage_metadata_in_the_newest_checkpoint_is_skipped_by_auto_resume(tmp_path, caplog):
    from vqae.checkpoint.manager import CheckpointManager

    mgr = CheckpointManager(tmp_path)
    mgr.save(1, {"model": {"w": torch.ones(2)}, "config": {}})
    raw_checkpoint(mgr.path_for(2), "[" * DEEP, tensors={})
    with caplog.at_level(logging.WARNING, logger="vqae.checkpoint.manager"):
        path, _ = mgr.latest_valid()
    assert path == mgr.path_for(1) and "ckpt-00000002.pt" in caplog.text
