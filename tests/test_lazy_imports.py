"""Reading an LMDB imports neither rasterio (GeoTIFFs only) nor wandb (its tracker only): each
costs seconds of start-up in every run and DataLoader worker. Checked in a fresh interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.training.test_train import TINY
from vqae.data.sample import LMDB_NAME

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("rasterio", "wandb")

READ_BATCHES = """
import sys
from torch.utils.data import DataLoader
import vqae.training.trainer
from vqae.config import DataConfig
from vqae.data.device_input import DeviceInput, Prefetcher
from vqae.data.source import DataSource

cfg = DataConfig(path=sys.argv[1], splits=sys.argv[2])
with DataSource(cfg) as source:
    for native in (False, True):  # data.resample=cpu, then device
        loader = DataLoader(source.dataset("train", native=native), batch_size=4)
        batch = next(iter(Prefetcher(loader, DeviceInput("cpu", cfg.bands, native=native))))
        assert batch["image"].shape == (4, 12, 120, 120)
"""

TRAIN = """
import sys
from vqae.cli import main

assert main(sys.argv[1:]) == 0
"""

REPORT = "\nprint('LOADED', [m for m in {heavy} if m in sys.modules])\n"


def run_python(code: str, *args: str) -> str:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-c", code + REPORT.format(heavy=HEAVY), *args],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()[-1]


def test_reading_an_lmdb_imports_neither_rasterio_nor_wandb(sample_dir):
    assert run_python(READ_BATCHES, str(sample_dir / LMDB_NAME),
                      str(sample_dir / "metadata.parquet")) == "LOADED []"


@pytest.mark.slow
def test_training_on_an_lmdb_imports_neither_rasterio_nor_wandb(sample_dir, tmp_path):
    args = ["train", "--config", str(REPO / "configs/debug.yaml"), *TINY, "--train.steps=2",
            "--run.tracker=none", f"--run.dir={tmp_path / 'run'}",
            f"--data.path={sample_dir / LMDB_NAME}",
            f"--data.splits={sample_dir / 'metadata.parquet'}"]
    assert run_python(TRAIN, *args) == "LOADED []"
