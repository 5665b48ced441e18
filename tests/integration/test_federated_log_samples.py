"""Issue 11 item 15, against a real run: every log sample of the walk-through in
``docs/federated.md`` (sections before "Checkpoints and restarts", which needs a killed
aggregator) matches a line that a short ``federated simulate`` writes, logger included."""

from __future__ import annotations

import subprocess
import sys

import pytest
from doc_log_samples import DOC, sample_lines, sample_pattern

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def walk_through_samples() -> list[tuple[int, str]]:
    restarts = next(
        number
        for number, line in enumerate(DOC.read_text().splitlines(), start=1)
        if line.startswith("## ") and "Checkpoints and restarts" in line
    )
    return [(number, line) for number, line in sample_lines() if number < restarts]


def test_walk_through_log_samples_match_a_real_run(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "enclaverec.cli.main", "federated", "simulate",
         "--dataset", "synthetic", "--parties", "2", "--rounds", "1", "--model", "logreg",
         "--output", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    logged = result.stderr.splitlines()
    for log in sorted((out / "logs").glob("*.log")):
        logged += log.read_text().splitlines()
    samples = walk_through_samples()
    assert len(samples) >= 15
    missing = [
        f"docs/federated.md:{number}: {line}"
        for number, line in samples
        if not any(sample_pattern(line).fullmatch(real) for real in logged)
    ]
    assert not missing, "\n".join(missing)
