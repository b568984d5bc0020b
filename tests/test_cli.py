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
