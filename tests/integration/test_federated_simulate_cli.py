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
