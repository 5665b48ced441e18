from __future__ import annotations

import subprocess
import sys

import pytest

from enclaverec.cli.main import main


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as excinfo:
        main(["no-such-command"])
    assert excinfo.value.code == 2


def test_group_without_subcommand_exits_2(capsys):
    assert main(["keys"]) == 2
    assert "new" in capsys.readouterr().err


def test_console_script_imports_no_tensorflow():
    # Building the parser must stay cheap: TensorFlow is imported only by the commands
    # that train, when they run.
    code = (
        "import sys; from enclaverec.cli.main import build_parser; build_parser();"
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
