import json

import cv2
import numpy as np
import pytest
import torch

from vqae.errors import ConfigError
from vqae.training.images import ERROR_MAX, LINE, panel_labels, render_panel, stretch
from vqae.training.tracking import (
    JsonlTracker,
    MultiTracker,
    NullTracker,
    WandbTracker,
    format_table,
    make_tracker,
    read_jsonl,
    wandb_logged_in,
)

ALL_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        folder = tmp_path / var.lower()
        folder.mkdir()
        monkeypatch.setenv(var, str(folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return tmp_path


def _image(h=6, w=9):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200  # pure red in RGB
    return img


# --- local tracker ---

def test_jsonl_tracker_lines_images_summary(tmp_path):
    run = tmp_path / "run"
    with JsonlTracker(run) as tracker:
        tracker.log({"train/loss": torch.tensor(0.5), "train/lr": np.float32(1e-3)}, step=1)
        tracker.log({"val/psnr": 31.5, "codebook/usage/0": 0.25, "val/bad": float("nan")}, step=2)
        tracker.log_images({"val/true_color": _image()}, step=2)
        tracker.summary({"best/psnr": 31.5})
        tracker.summary({"steps": 2})
    records = read_jsonl(run / "metrics.jsonl")
    assert records[0] == {"step": 1, "train/loss": 0.5, "train/lr": pytest.approx(1e-3)}
    assert records[1] == {"step": 2, "val/psnr": 31.5, "codebook/usage/0": 0.25, "val/bad": "nan"}
    png = run / "images" / "val_true_color_step2.png"
    back = cv2.imread(str(png), cv2.IMREAD_COLOR)
    assert back.shape == (6, 9, 3)
    assert back[0, 0].tolist() == [0, 0, 200]  # BGR on disk: the red stays red
    assert json.loads((run / "summary.json").read_text()) == {"best/psnr": 31.5, "steps": 2}


def test_jsonl_tracker_appends_across_restarts(tmp_path):
    for step in (1, 2):
        tracker = JsonlTracker(tmp_path)
        tracker.log({"x": step}, step)
        tracker.close()
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]


def test_jsonl_tracker_rejects_bad_images(tmp_path):
    tracker = JsonlTracker(tmp_path)
    with pytest.raises(ValueError, match="uint8"):
        tracker.log_images({"x": np.zeros((4, 4, 3), np.float32)}, 0)
    with pytest.raises(ValueError, match="RGB"):
        tracker.log_images({"x": np.zeros((4, 4), np.uint8)}, 0)
    tracker.close()


def test_null_and_multi_tracker(tmp_path):
    calls = []

    class Recorder(NullTracker):
        def log(self, metrics, step):
            calls.append(("log", step))

        def close(self):
            calls.append(("close", None))

    with MultiTracker(Recorder(), NullTracker(), Recorder()) as multi:
        multi.log({"a": 1}, 3)
        multi.log_images({"b": _image()}, 3)
        multi.summary({"c": 1})
    assert calls == [("log", 3), ("log", 3), ("close", None), ("close", None)]


def test_make_tracker_kinds_and_ranks(tmp_path):
    assert isinstance(make_tracker("wandb", tmp_path / "r1", {}, rank=1), NullTracker)
    assert not (tmp_path / "r1").exists()  # other ranks write nothing
    local = make_tracker("none", tmp_path / "r0", {})
    assert isinstance(local, JsonlTracker)
    local.close()
    with pytest.raises(ConfigError, match="wandb, none"):
        make_tracker("tensorboard", tmp_path, {})


def test_wandb_logged_in_reads_env_and_netrc(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not wandb_logged_in()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert wandb_logged_in()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert not wandb_logged_in()
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert wandb_logged_in()


# --- wandb (real offline runs) ---

def test_make_tracker_wandb_offline_run(wandb_env):
    run_dir = wandb_env / "run"
    config = {"model": {"widths": [8, 16]}, "optim": {"lr": 1e-3}}
    tracker = make_tracker("wandb", run_dir, config, project="vqae-test")
    for step in range(1, 4):
        tracker.log({"train/loss": 1.0 / step, "codebook/usage/0": 0.5}, step)
    tracker.log_images({"val/true_color": _image(12, 30)}, step=3)
    tracker.summary({"val/psnr": 30.0})
    tracker.close()

    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    run_id = (run_dir / "wandb_run_id.txt").read_text().strip()
    assert list(runs[0].glob(f"run-{run_id}.wandb"))
    media = list((runs[0] / "files" / "media").rglob("*.png"))
    assert len(media) == 1
    assert cv2.imread(str(media[0])).shape == (12, 30, 3)
    records = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    assert (run_dir / "images" / "val_true_color_step3.png").is_file()


def test_wandb_prints_no_history_or_summary_at_its_end(wandb_env):
    """The run's own final table is the result: wandb's end-of-run history and summary (30
    lines) would scroll it away. Its start lines (where the run is saved) stay. In a fresh
    process: wandb keeps its output settings per process."""
    import os
    import subprocess
    import sys

    run_dir = wandb_env / "run"
    code = ("import sys; from vqae.training.tracking import make_tracker\n"
            "t = make_tracker('wandb', sys.argv[1], {}, project='vqae-test')\n"
            "[t.log({'train/loss': 1.0 / s}, s) for s in (1, 2, 3)]\n"
            "t.summary({'val/psnr': 30.0}); t.close()\n"
            "print(t.trackers[1].run.id)\n")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    res = subprocess.run([sys.executable, "-c", code, str(run_dir)], env=env, timeout=120,
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    printed = res.stdout + res.stderr
    assert "Run history" not in printed and "Run summary" not in printed, printed
    assert "Run data is saved locally in" in printed
    run_id = res.stdout.split()[-1]
    run = next((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert (run / f"run-{run_id}.wandb").stat().st_size > 0


def test_wandb_tracker_resumes_same_run_id(wandb_env):
    run_dir = wandb_env / "run"
    first = WandbTracker(run_dir, {"a": 1}, project="vqae-test")
    first_id = first.run.id
    first.log({"train/loss": 1.0}, 1)
    first.close()
    second = WandbTracker(run_dir, {"a": 1}, project="vqae-test")
    assert second.run.id == first_id
    assert second.run.config["a"] == 1
    second.log({"train/loss": 0.5}, 2)
    second.close()


# --- console table ---

def test_format_table():
    table = format_table({"val/psnr": 31.23456, "val/dead_codes/0": 3,
                          "val/bpp": torch.tensor(0.015625), "steps": 123456.0}, title="eval")
    lines = table.splitlines()
    assert lines[0] == "eval"
    assert "metric" in lines[1] and "value" in lines[1]
    body = "\n".join(lines[3:])
    assert "31.23" in body and "0.01562" in body and "123456.0" in body
    assert [line.split()[0] for line in lines[3:]] == ["val/psnr", "val/dead_codes/0",
                                                       "val/bpp", "steps"]


# --- image panels ---

def _batch(b=2, h=16, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((b, len(ALL_BANDS), h, w), generator=g) * 4000 + 200


def test_render_panel_shapes_and_dtypes():
    x = _batch()
    panels = render_panel(x, x + 50, ALL_BANDS)
    assert set(panels) == {"true_color", "false_color"}
    for panel in panels.values():
        assert panel.dtype == np.uint8
        # a header, 2 rows, 3 tiles, 2 px gaps
        assert panel.shape == (2 * LINE + 2 + 2 * 16 + 2, 3 * 20 + 2 * 2, 3)


def test_render_panel_identical_gives_constant_error_map():
    x = _batch(b=1)
    panel = render_panel(x, x.clone(), ALL_BANDS)["true_color"][2 * LINE + 2:]  # no header
    original, recon, error = panel[:, :20], panel[:, 22:42], panel[:, 44:]
    np.testing.assert_array_equal(original, recon)
    assert (error == error[0, 0]).all()
    # a large error saturates to the colormap's other end
    hot = render_panel(x, x + 2 * ERROR_MAX, ALL_BANDS)["true_color"][2 * LINE + 2:, 44:]
    assert (hot == hot[0, 0]).all() and not np.array_equal(hot[0, 0], error[0, 0])


def test_render_panel_labels_its_columns_with_the_error_scale_and_the_step():
    x = _batch(b=1, h=120, w=120)
    title, columns = panel_labels("true_color", 300, ERROR_MAX)
    assert title == "true color (B04 B03 B02), step 300"
    assert columns == ["original", "reconstruction", "|error| 0-500 DN"]
    at = {step: render_panel(x, x + 50, ALL_BANDS, step=step)["false_color"] for step in (10, 20)}
    header, body = at[10][:2 * LINE], at[10][2 * LINE + 2:]
    for column in range(3):  # black text over each column
        label = header[LINE:, column * 122:column * 122 + 120]
        assert (label < 100).all(axis=2).sum() > 20, column
    assert not np.array_equal(at[10][:LINE], at[20][:LINE])  # the step is in the title
    np.testing.assert_array_equal(body, at[20][2 * LINE + 2:])
    plain = render_panel(x, x + 50, ALL_BANDS)["false_color"]  # no step given: none shown
    assert not np.array_equal(plain[:LINE], at[10][:LINE])


def test_render_panel_skips_missing_composites_and_checks_shapes():
    bands = ["B02", "B03", "B04"]
    x = _batch()[:, 1:4]
    assert set(render_panel(x.numpy(), x.numpy(), bands)) == {"true_color"}
    assert render_panel(x, x, ["B02", "B03", "B05"]) == {}
    with pytest.raises(ValueError, match="3, H, W"):
        render_panel(x, x[:, :2], bands)


def test_stretch_uses_original_limits_for_both():
    original = np.linspace(0, 1000, 100, dtype=np.float32).reshape(1, 10, 10)
    a, b = stretch(original, original * 2)
    assert a.shape == (10, 10, 1) and a.min() == 0 and a.max() == 255
    assert (b[original[0] > 510] == 255).all()  # the brighter copy saturates
    flat_a, _ = stretch(np.full((1, 4, 4), 7.0), np.full((1, 4, 4), 7.0))
    assert (flat_a == 0).all()  # a flat band does not divide by zero


def test_wandb_defaults_to_offline_when_not_logged_in(wandb_env, monkeypatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("NETRC", str(wandb_env / "no-netrc"))
    tracker = WandbTracker(wandb_env / "run", {}, project="vqae-test")
    assert tracker.run.settings.mode == "offline"
    tracker.close()
    assert list((wandb_env / "run" / "wandb").glob("offline-run-*"))
