"""``federated simulate`` with the TensorFlow DLRM end to end: MovieLens-100K, two parties
attesting to a simulated-TEE aggregator, two rounds; metrics.json keeps the §4 contract and
is scored on the very test rows ``enclaverec train`` uses for the same seed."""

from __future__ import annotations

import json

import pytest

from enclaverec.data.schema import split_sha256
from enclaverec.data.sources import DataSelection, load_dataset
from enclaverec.report import COMMON_KEYS, MODE_KEYS, Mode, validate_metrics

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

SEED = 0


def test_federated_dlrm_on_movielens_keeps_the_metrics_contract(run_cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr = run_cli(
        "federated", "simulate",
        "--parties", "2", "--rounds", "2", "--dataset", "movielens-100k",
        "--seed", str(SEED), "--output", out,
    )  # fmt: skip
    assert code == 0, stderr

    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert set(COMMON_KEYS) | set(MODE_KEYS[Mode.FEDERATED]) | {"best_round"} <= set(metrics)
    assert (metrics["mode"], metrics["tee"], metrics["dataset"], metrics["seed"]) == (
        "federated",
        "simulated",
        "movielens-100k",
        SEED,
    )
    assert metrics["preset"] == "small"  # the DLRM, not the logistic regression
    assert (metrics["parties"], metrics["rounds_completed"]) == (2, 2)
    assert [entry["round"] for entry in metrics["history"]] == [1, 2]
    assert sorted(peer["party_id"] for peer in metrics["attested_peers"]) == ["party-0", "party-1"]

    # Scored on the same test rows as the centralized baseline (`enclaverec train`).
    centralized = load_dataset(DataSelection(dataset="movielens-100k"), seed=SEED)
    assert metrics["test_split_sha256"] == split_sha256(centralized.test.row_ids)
    assert metrics["test_rows"] == len(centralized.test)
    # Two rounds of the DLRM learn: well above chance (centralized reaches about 0.78).
    assert metrics["test_auc"] > 0.7
    assert "test AUC" in stdout
