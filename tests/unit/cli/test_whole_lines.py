"""Issue 11 item 12: off a terminal (a pipe, a log file) output is whole lines: a printed
fingerprint, a logged digest and a progress bar's columns are never wrapped or cut; the
terminal is measured only when there is one (``enclaverec.terminal.make_console``)."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys

from enclaverec.cli import output
from enclaverec.terminal import UNWRAPPED_WIDTH, make_console

DIGEST = "ab" * 64  # 128 hex digits: wider than the 80 columns rich assumes


def test_keys_new_fingerprint_is_whole_on_its_line_through_a_pipe(tmp_path):
    """`enclaverec keys new ... | grep fingerprint` (a real pipe, a real process)."""
    (tmp_path / "pass.txt").write_text("whole-lines passphrase\n")
    result = subprocess.run(
        [sys.executable, "-m", "enclaverec.cli.main", "keys", "new", "--out", "k",
         "--passphrase-file", "pass.txt"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "fingerprint" in line]
    assert len(lines) == 1
    assert re.fullmatch(r"fingerprint: sha256:[0-9a-f]{64}", lines[0]), result.stdout


def test_log_lines_keep_long_digests_whole(capsys):
    output.configure_logging("info")
    logging.getLogger("enclaverec.test").info("sealed with key sha256:%s in a/b/c", DIGEST)
    err = capsys.readouterr().err
    assert err == f"INFO     enclaverec.test: sealed with key sha256:{DIGEST} in a/b/c\n"


def test_printed_lines_are_not_wrapped_off_a_terminal(capsys):
    output.stdout_console().print(f"digest: {DIGEST} " + "word " * 40, markup=False)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and f"digest: {DIGEST}" in out


def test_progress_columns_are_not_cut_off_a_terminal(capsys):
    with output.progress() as bar:
        task = bar.add_task("epoch 1/1", total=31300, status="val AUC 0.7782, log loss 0.5615")
        bar.update(task, completed=31300)
    err = capsys.readouterr().err
    assert "31300/31300" in err and "val AUC 0.7782, log loss 0.5615" in err
    assert "…" not in err


def test_sections_off_a_terminal_are_short_lines(capsys):
    output.ConsoleEvents().section("federated (simulated TEE)")
    err = capsys.readouterr().err
    assert err == "── federated (simulated TEE) ──\n"


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_terminal_is_measured_only_when_there_is_one(monkeypatch):
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert make_console(stderr=False).width == UNWRAPPED_WIDTH
    monkeypatch.setattr(sys, "stdout", _FakeTerminal())
    monkeypatch.setenv("COLUMNS", "97")  # what rich reads when it measures a terminal
    assert make_console(stderr=False).width == 97
