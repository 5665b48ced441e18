"""`enclaverec federated simulate` through the CLI: the §4 report for each data set kind,
and the plaintext baseline's warning."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from enclaverec.report import validate_metrics

pytestmark = pytest.mark.multiprocess


def simulate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enclaverec.cli.main", "federated", "simulate", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_synthetic_run_reports_the_oracle_and_the_linear_baseline(tmp_path):
    out = tmp_path / "run"
    result = simulate(
        "--dataset", "synthetic", "--parties", "2", "--rounds", "1", "--model", "logreg",
        "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics["mode"] == "federated" and metrics["dataset"] == "synthetic"
    assert metrics["baseline_logreg_auc"] < metrics["oracle_auc"]
    assert metrics["test_covers_all_parties"] is True
    assert (out / "curves.png").stat().st_size > 0
    assert "round 1/1: validation AUC" in result.stderr
    # The round's training loss (the parties' reported means) reaches the history and
    # the curves (issue 11 item 13).
    assert all(0 < entry["train_loss"] < 5 for entry in metrics["history"]), metrics["history"]


def test_the_plaintext_baseline_warns_and_attests_no_one(tmp_path):
    out = tmp_path / "run"
    result = simulate(
        "--dataset", "movielens-100k", "--parties", "2", "--rounds", "1", "--model", "logreg",
        "--tee", "none", "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "measurement baseline" in " ".join(result.stderr.split())
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tee"] == "none" and metrics["attested_peers"] == []


def test_refuses_to_write_into_a_used_folder(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "something").write_text("x")
    result = simulate(
        "--dataset", "movielens-100k", "--parties", "2", "--output", str(tmp_path / "used")
    )
    assert result.returncode == 2
    assert "refusing to write into the non-empty folder" in result.stderr
    assert "--overwrite" in result.stderr


def test_a_failed_role_names_its_cause_on_the_terminal(tmp_path):
    # The parties refuse their own flag (--threads 0): every party exits 2 at once. The
    # error names each party's last error line, not only its log file.
    from federation_helpers import logreg_plan, party_shares

    from enclaverec.errors import EnclaveRecError
    from enclaverec.federated.simulate import SimulationOptions, run_simulation
    from enclaverec.tee.kinds import TEEKind

    options = SimulationOptions(
        parties=2,
        plan=logreg_plan(rounds=1, parties=2),
        tee=TEEKind.NONE,
        parties_attest=False,
        output=tmp_path / "run",
        timeout_seconds=120,
        party_extra_args=("--threads", "0"),
    )
    with pytest.raises(EnclaveRecError) as excinfo:
        run_simulation(options, party_shares(2))
    message = str(excinfo.value)
    assert "every party stopped" in message
    assert "party-0 (exit 2: enclaverec: error: --threads must be at least 1, got 0" in message
    assert str(tmp_path / "run" / "logs" / "party-1.log") in message


def test_simulate_refuses_values_that_cannot_be_meant_before_starting_a_role(tmp_path):
    out = tmp_path / "run"
    result = simulate(
        "--dataset", "movielens-100k", "--parties", "2", "--model", "logreg",
        "--batch-size", "100000000", "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--batch-size 100,000,000 is larger than the" in " ".join(result.stderr.split())
    assert not out.exists()
    result = simulate(
        "--dataset", "movielens-100k", "--parties", "2", "--rounds", str(10**20),
        "--output", str(out),
    )  # fmt: skip
    assert result.returncode == 2
    assert "--rounds must be between 1 and 10000" in result.stderr


def test_overwrite_replaces_the_previous_run_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    flags = (
        "--dataset", "movielens-100k", "--parties", "2", "--rounds", "1", "--model", "logreg",
        "--tee", "none", "--output", str(out),
    )  # fmt: skip
    assert simulate(*flags).returncode == 0
    (out / "notes.txt").write_text("the user's own notes")
    first = (out / "metrics.json").read_text()
    refused = simulate(*flags)
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    assert (out / "metrics.json").read_text() == first
    result = simulate(*flags, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert (out / "notes.txt").read_text() == "the user's own notes"
    assert json.loads((out / "metrics.json").read_text())["rounds_completed"] == 1
