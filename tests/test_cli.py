import subprocess
import sys

from vqae.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_python_m_vqae_is_the_same_program():
    res = subprocess.run([sys.executable, "-m", "vqae", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "sample-data" in res.stdout


def test_unknown_command_and_option_exit_nonzero(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["stage", "a", "b", "--bogus"])
    assert "unrecognized arguments" in capsys.readouterr().err


def test_config_error_is_one_line_and_exit_2(capsys):
    assert main(["stats", "--data.bands=[B10]"]) == 2
    err = capsys.readouterr().err
    assert "unknown S2 band" in err and "Traceback" not in err


def test_overrides_take_key_value_and_key_equals_value():
    from vqae.cli import parse
    from vqae.commands.common import config_from_args

    _, _, args = parse(["train", "--run.dir", "runs/base", "--optim.lr=1e-3", "--data", "010",
                        "--optim.weight_decay", "0.01"])
    cfg = config_from_args(args)
    assert cfg.run.dir == "runs/base" and cfg.optim.lr == 1e-3
    assert cfg.optim.weight_decay == 0.01 and cfg.data.path.endswith("/010")
    _, _, args = parse(["train", "--optim.lr", "-1"])  # a negative number is a value
    assert args.overrides == ["optim.lr=-1"]


def test_override_without_value_is_a_usage_error(capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["train", "--run.dir"])
    assert exc.value.code == 2 and "--run.dir (no value given)" in capsys.readouterr().err


def readme_commands() -> list[list[str]]:
    """Every `vqae ...` command in the README's bash blocks, as argv after `vqae`."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in line.split("&&"):
                words = shlex.split(part)
                if "vqae" in words:
                    commands.append(words[words.index("vqae") + 1:])
    return commands


def test_readme_commands_parse_as_written():
    """Each command of the README parses, and its config files and overrides resolve; the first
    one also runs for real, from a cold cache (tests/test_first_run.py)."""
    from vqae.cli import parse
    from vqae.commands.common import config_from_args

    commands = readme_commands()
    assert len(commands) >= 6 and ["train", "--config", "configs/debug.yaml"] in commands
    for argv in commands:
        name, module, args = parse(argv)
        if getattr(module, "ACCEPTS_OVERRIDES", False):
            config_from_args(args)  # config files exist and every override is valid


def test_ci_runs_the_readme_commands_as_written():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    readme, ci = (repo / "README.md").read_text(), (repo / ".ci" / "run").read_text()
    first = "pip install torch==2.13.0 -e . && vqae train --config configs/debug.yaml"
    tests = 'pip install torch==2.13.0 -e ".[dev]" && python -m pytest -q'
    for command in (first, tests):
        assert command in readme and command in ci.splitlines()


def test_command_integer_options_are_bounded_usage_errors(capsys):
    import pytest

    for argv, fragment in [
        (["compress", "c.pt", "d", "-o", "o", "--batch-size", "0"], "--batch-size: 0 is outside"),
        (["compress", "c.pt", "d", "-o", "o", "--workers", "-1"], "--workers: -1 is outside 0"),
        (["fit-prior", "c.pt", "--batch-size", "-3"], "--batch-size: -3 is outside 1"),
        (["rd", "--ckpt", "c.pt", "--out", "o", "--batch-size", "0"], "--batch-size: 0"),
        (["encode", "o", "--workers", "100000"], "--workers: 100000 is outside 1..1024"),
        (["preview", "--limit", "9" * 5000], "is outside 0..2147483647"),
    ]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and fragment in err and "Traceback" not in err, err
        assert len(err) < 2000
