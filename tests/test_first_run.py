"""The README's first command on a fresh machine: an empty VQAE_CACHE, a new process.

A warm cache hid that this run failed the first time (the sample check left an LMDB handle
open on the folder it then renamed); so this test downloads the sample into an empty cache.
`.ci/run` also runs the README command exactly as written, in full.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import skip_or_fail
from vqae.training.tracking import read_jsonl

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_first_command_from_an_empty_cache(tmp_path):
    env = {**os.environ, "VQAE_CACHE": str(tmp_path / "cache"), "WANDB_MODE": "offline",
           "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"}
    for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        env[var] = str(tmp_path / "wandb-home")
    env.pop("VQAE_SAMPLE_WHEEL", None)  # the download itself is part of a first run
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "vqae", "train", "--config", "configs/debug.yaml",
           "--train.steps", "4", "--train.eval_every", "2", "--run.dir", str(run)]
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0 and "could not download the sample" in res.stderr:
        skip_or_fail(f"PyPI unreachable: {res.stderr.strip()[-300:]}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "cache" / "BENv2" / ".complete").is_file()
    assert [r["step"] for r in read_jsonl(run / "metrics.jsonl") if "val/psnr" in r] == [2, 4]
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb"))


def test_readme_development_names_the_variables_the_skip_messages_name():
    from tests import conftest

    development = (REPO / "README.md").read_text().split("## Development", 1)[1]
    for variable in ("VQAE_SHARED_DATA", "VQAE_REQUIRE_DATA"):
        assert variable in Path(conftest.__file__).read_text()
        assert f"`{variable}" in development, variable
