"""README "Use it from Python": its lines, exactly as written, run and round-trip a patch."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np

from tests.codec.conftest import assert_structured
from vqae.data.source import read_patch

README = Path(__file__).resolve().parents[2] / "README.md"


def python_block() -> str:
    """The one ```python block of the README's "Use it from Python" section."""
    section = README.read_text().split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1
    return blocks[0]


def test_the_readme_round_trip_runs_as_written(structured_ckpt, tmp_path, monkeypatch):
    code = python_block()
    assert len(code.strip().splitlines()) == 5
    ckpt = tmp_path / "runs" / "debug" / "checkpoints" / "best.pt"  # what `vqae train` writes
    ckpt.parent.mkdir(parents=True)
    shutil.copy(structured_ckpt, ckpt)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, f"{README}:Use it from Python", "exec"), scope)  # noqa: S102
    data, bands, codec = scope["data"], scope["bands"], scope["codec"]
    assert isinstance(data, bytes) and data[:4] == b"\x89VQZ"
    assert list(bands) == list(codec.bands)
    assert all(a.dtype == np.uint16 and a.shape == (120, 120) for a in bands.values())
    assert_structured(bands, "README round trip")
    x = codec.image(read_patch(codec.config.data.path)).numpy()  # (C, 120, 120) as read
    y = np.stack([bands[b] for b in codec.bands]).astype(np.float64)
    mse = ((np.clip(x, 0, 10000) - np.clip(y, 0, 10000)) ** 2).mean()
    assert 10 * np.log10(10000**2 / mse) > 20  # DESIGN.md's PSNR (about 25 dB for this model)
    assert codec.decompress(data)["B04"].tobytes() == bands["B04"].tobytes()  # deterministic
    assert os.listdir(tmp_path) == ["runs"]  # the round trip writes no file
