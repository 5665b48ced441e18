"""``enclaverec bench robustness`` end to end, one cell pair: the defaults against a scaled
update claiming 2**62 rows, next to the honest parties alone (MovieLens-100K, one round),
and the exported model scored again by ``enclaverec evaluate``."""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow]


def test_the_defaults_hold_against_a_scaled_update_and_evaluate_agrees(run_cli, tmp_path):
    runs, output = tmp_path / "runs", tmp_path / "robustness.json"
    code, stdout, stderr = run_cli(
        "bench", "robustness", "--dataset", "movielens-100k", "--defence", "fedavg",
        "--attack", "scaled", "--rounds", "1", "--runs", runs, "--output", output,
    )  # fmt: skip
    assert code == 0, stderr
    assert "movielens-100k: test AUC of the model an honest party exports" in stdout
    report = json.loads(output.read_text())
    cells = {cell["column"]: cell for cell in report["cells"]}
    assert set(cells) == {"honest-only", "scaled"}
    assert (cells["honest-only"]["parties"], cells["scaled"]["parties"]) == (3, 4)
    # One round of the DLRM learns (about 0.70); the attacker's 100x update, its claimed
    # weight capped at its rows and its norm clipped to the round's median, cannot undo it.
    assert cells["honest-only"]["test_auc"] > 0.65
    assert cells["scaled"]["test_auc"] > cells["honest-only"]["test_auc"] - 0.02

    # The figure is what `enclaverec evaluate` says of the model the honest party exported.
    model = runs / "movielens-100k" / "fedavg" / "scaled" / "party-0-model"
    code, stdout, stderr = run_cli(
        "evaluate", "--model", model, "--dataset", "movielens-100k", "--output", tmp_path / "e"
    )
    assert code == 0, stderr
    evaluated = json.loads((tmp_path / "e" / "evaluation.json").read_text())
    assert evaluated["test_auc"] == pytest.approx(cells["scaled"]["test_auc"], abs=1e-9)
