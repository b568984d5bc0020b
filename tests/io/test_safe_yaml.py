"""Hostile config text: alias bombs, deep nesting, other encodings, non-regular files, huge
values. Each is one short ConfigError line naming the file or override, found fast."""

from __future__ import annotations

import os
import re

import pytest

from tests.hostile import one_line, run_vqae
from vqae.config import load_config
from vqae.errors import ConfigError
from vqae.sweeps.spec import load_sweep


def alias_bomb(levels: int = 10, indent: str = "") -> str:
    """Each level a list of nine aliases of the level below: 9**levels strings when expanded."""
    lines = [f'{indent}- &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{indent}- &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def flow_bomb(levels: int = 10) -> str:
    parts = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    parts += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return f"[{', '.join(parts)}]"


def test_alias_bomb_under_run_name_fails_fast(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("run:\n  name:\n" + alias_bomb(indent="    "))
    message = one_line(run_vqae("config", "--config", path, timeout=30), "config")
    assert str(path) in message and "aliases are not allowed" in message
    assert len(message) < 500


def test_alias_bomb_as_override_fails_fast():
    proc = run_vqae("config", f"--model.widths={flow_bomb()}", timeout=30)
    message = one_line(proc, "config")
    assert "override --model.widths" in message and "aliases are not allowed" in message
    assert len(message) < 500


@pytest.mark.parametrize("text, fragment", [
    ("run: &r {name: x}\n", "anchor &r"),
    ("model: {widths: &w [8, 16]}\nrun: {name: *w}\n", "anchor &w"),
    ("run: {name: *n}\n", "alias *n"),
    ("run:\n  <<: {name: x}\n", "merge key <<"),
])
def test_anchors_aliases_and_merge_keys_refused(tmp_path, text, fragment):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(fragment)) as exc:
        load_config([str(path)])
    assert str(path) in str(exc.value)


def test_deep_nesting_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("[" * 5000 + "]" * 5000 + "\n")
    message = one_line(run_vqae("config", "--config", path), "config")
    assert str(path) in message and "nesting deeper than" in message


def test_non_utf8_file_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("run:\n  name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml is not UTF-8 text \(byte 0xe9"):
        load_config([str(path)])


@pytest.mark.parametrize("text", ["[1, 2]\n", "5\n", "just text\n"])
def test_non_mapping_file_names_the_file(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="c.yaml holds .* not a mapping"):
        load_config([str(path)])


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "folder"])
def test_non_regular_config_file_refused_without_blocking(tmp_path, kind):
    path = tmp_path / "c.yaml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    message = one_line(run_vqae("config", "--config", path, timeout=30), "config")
    assert str(path) in message and "not a regular file" in message


def test_oversized_config_file_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# padding\n" * 200_000)  # 2 MB
    with pytest.raises(ConfigError, match="big.yaml is 2,000,000 bytes, more than"):
        load_config([str(path)])


def test_huge_int_override_is_one_line():
    message = one_line(run_vqae("config", "--run.seed=" + "9" * 5000), "config")
    assert "override --run.seed" in message and len(message) < 500


def test_error_echo_is_bounded():
    values = ", ".join(["1"] * 50_000)
    with pytest.raises(ConfigError) as exc:
        load_config(overrides=[f"train.eval_depths=[{values}, -1]"])
    assert "train.eval_depths" in str(exc.value) and len(str(exc.value)) < 500


def test_sweep_file_refuses_aliases(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("grid:\n  run.seed: &s [1, 2]\n  train.steps: *s\n")
    with pytest.raises(ConfigError, match="sweep file .*sweep.yaml: anchor &s"):
        load_sweep(path)


def test_written_config_has_no_aliases_and_reads_back(tmp_path):
    from vqae.config import dump_yaml

    cfg = load_config(overrides=["quantizer.name=rvq", "quantizer.depth=2"])
    cfg.train.eval_depths = cfg.model.widths = [1, 2]  # one list object in two places
    text = dump_yaml(cfg, tmp_path / "c.yaml")
    assert "&" not in text and "*" not in text
    assert load_config([str(tmp_path / "c.yaml")]).train.eval_depths == [1, 2]
