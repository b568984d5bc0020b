"""--run.overwrite=true removes only what a run writes: every entry checked before anything is
deleted, never an input."""

import os
from pathlib import Path

import pytest

from vqae.errors import ConfigError
from vqae.io.run_outputs import PNG_MAGIC, earlier_outputs, remove

PNG = PNG_MAGIC + b"\x00" * 16
WANDB_RUN = "offline-run-20260101_120000-ab12cd34"


def earlier_run(run):
    """A run folder as `vqae train` (with wandb, offline) leaves it."""
    (run / "checkpoints").mkdir(parents=True)
    for name in ("ckpt-00000002.pt", "best.pt", "best.json", ".best.json.0123abcd.tmp",
                 ".ckpt-00000004.pt.0123456789ab.tmp"):
        (run / "checkpoints" / name).write_bytes(b"x")
    (run / "images").mkdir()
    (run / "images" / "val_true_color_step2.png").write_bytes(PNG)
    wandb_run = run / "wandb" / WANDB_RUN
    (wandb_run / "files" / "media").mkdir(parents=True)
    (wandb_run / "logs").mkdir()
    (wandb_run / "run-ab12cd34.wandb").write_bytes(b"w")
    (run / "wandb" / "latest-run").symlink_to(wandb_run.name)
    (run / "wandb" / "debug.log").symlink_to(f"{wandb_run.name}/logs/debug.log")
    for name in ("metrics.jsonl", "summary.json", "config.yaml", "wandb_run_id.txt"):
        (run / name).write_text("{}\n")
    return run


def test_an_earlier_run_is_removed_and_nothing_else(tmp_path):
    run = earlier_run(tmp_path / "run")
    (run / "notes.txt").write_text("mine")
    found = earlier_outputs(run, "", True, [str(tmp_path / "data")])
    assert sorted(p.name for p in found) == sorted(
        ["checkpoints", "images", "wandb", "metrics.jsonl", "summary.json", "config.yaml",
         "wandb_run_id.txt"])
    remove(found)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]


def _swap(path, make):
    path.unlink()
    make(path)


# what is done to an earlier run -> the entry then refused
STRANGERS = {
    "lmdb in images": (lambda run, data: (run / "images" / "data.mdb").write_bytes(b"lmdb"),
                       "images"),
    "png that is no png": (lambda run, data: (run / "images" / "x_step1.png").write_bytes(b"II*"),
                           "images"),
    "notes in checkpoints": (lambda run, data: (run / "checkpoints" / "notes.txt").write_text("n"),
                             "checkpoints"),
    "folder in checkpoints": (lambda run, data: (run / "checkpoints" / "ckpt-00000009.pt").mkdir(),
                              "checkpoints"),
    "checkpoints a link": (lambda run, data: (os.rename(run / "checkpoints", data),
                                              (run / "checkpoints").symlink_to(data)),
                           "checkpoints"),
    "folder in wandb": (lambda run, data: (run / "wandb" / "tiles").mkdir(), "wandb"),
    "file in a wandb run": (lambda run, data: (run / "wandb" / WANDB_RUN / "data.mdb"
                                               ).write_bytes(b"x"), "wandb"),
    "metrics a folder": (lambda run, data: _swap(run / "metrics.jsonl", Path.mkdir),
                         "metrics.jsonl"),
    "summary a link": (lambda run, data: _swap(run / "summary.json",
                                               lambda p: p.symlink_to(data)), "summary.json"),
}


@pytest.mark.parametrize("case", list(STRANGERS))
def test_anything_a_run_does_not_write_refuses_and_deletes_nothing(tmp_path, case):
    run = earlier_run(tmp_path / "run")
    change, entry = STRANGERS[case]
    (tmp_path / "data").mkdir()
    change(run, tmp_path / "data")
    before = sorted(str(p) for p in run.rglob("*"))
    with pytest.raises(ConfigError) as err:
        earlier_outputs(run, "", True, [])
    msg = str(err.value)
    assert str(run / entry) in msg and "deleted nothing" in msg and "\n" not in msg
    assert sorted(str(p) for p in run.rglob("*")) == before


@pytest.mark.parametrize("where", ["images", "config.yaml", "checkpoints/best.json",
                                   f"wandb/{WANDB_RUN}/files"])
def test_an_input_among_the_outputs_refuses_and_deletes_nothing(tmp_path, where):
    run = earlier_run(tmp_path / "run")
    before = sorted(str(p) for p in run.rglob("*"))
    with pytest.raises(ConfigError, match="deleted nothing") as err:
        earlier_outputs(run, "", True, [str(tmp_path / "splits.parquet"), str(run / where)])
    assert str(run / where.split("/")[0]) in str(err.value)
    assert sorted(str(p) for p in run.rglob("*")) == before


def test_without_overwrite_or_with_resume_nothing_is_checked(tmp_path):
    run = earlier_run(tmp_path / "run")
    (run / "images" / "data.mdb").write_bytes(b"lmdb")
    with pytest.raises(ConfigError, match="--run.resume=auto"):
        earlier_outputs(run, "", False, [])
    assert earlier_outputs(run, "auto", True, []) == []
