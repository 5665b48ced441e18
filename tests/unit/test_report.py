from __future__ import annotations

import json

import pytest

from enclaverec.errors import MetricsReportError
from enclaverec.evaluation import BinaryMetrics
from enclaverec.report import (
    COMMON_KEYS,
    Mode,
    build_metrics,
    validate_metrics,
    write_comparison_report,
    write_metrics,
)
from enclaverec.tee.kinds import TEEKind
from enclaverec.trainer import EvalRecord

SHA = "ab" * 32
HISTORY = [
    EvalRecord("epoch", 1, 0.70, 0.52, 1.5, train_loss=0.55),
    EvalRecord("epoch", 2, 0.74, 0.50, 3.0, train_loss=0.50),
]


def centralized(**overrides):
    values = dict(
        mode=Mode.CENTRALIZED,
        tee=TEEKind.NONE,
        dataset="movielens-100k",
        preset="small",
        optimizer="adagrad",
        seed=0,
        test=BinaryMetrics(auc=0.78, logloss=0.55, accuracy=0.72, rows=10_000),
        test_split_sha256=SHA,
        history=HISTORY,
        best_index=2,
        train_samples_per_second=50_000.0,
        wall_seconds=30.0,
    )
    values.update(overrides)
    return build_metrics(**values)


def test_builds_every_key_of_the_contract():
    metrics = centralized()
    assert set(COMMON_KEYS) <= set(metrics)
    assert metrics["mode"] == "centralized" and metrics["tee"] == "none"
    assert metrics["best_epoch"] == 2
    assert metrics["history"][0] == {
        "epoch": 1,
        "val_auc": 0.70,
        "val_logloss": 0.52,
        "wall_seconds": 1.5,
        "train_loss": 0.55,
    }


def test_a_round_history_names_best_round():
    rounds = [EvalRecord("round", 1, 0.7, 0.5, 1.0)]
    metrics = centralized(
        mode=Mode.FEDERATED,
        tee=TEEKind.SIMULATED,
        history=rounds,
        best_index=1,
        extra={"parties": 3, "rounds_completed": 1, "attested_peers": ["party-0", "party-1"]},
    )
    assert metrics["best_round"] == 1 and "best_epoch" not in metrics


@pytest.mark.parametrize("key", sorted(COMMON_KEYS))
def test_refuses_a_report_without_a_common_key(key):
    metrics = centralized()
    del metrics[key]
    with pytest.raises(MetricsReportError, match=key):
        validate_metrics(metrics)


def test_refuses_a_report_without_its_best_key():
    metrics = centralized()
    del metrics["best_epoch"]
    with pytest.raises(MetricsReportError, match="exactly one of best_epoch"):
        validate_metrics(metrics)


def test_synthetic_runs_need_their_reference_aucs():
    with pytest.raises(MetricsReportError, match="oracle_auc"):
        centralized(dataset="synthetic")
    metrics = centralized(
        dataset="synthetic", extra={"oracle_auc": 0.8, "baseline_logreg_auc": 0.7}
    )
    assert metrics["oracle_auc"] == 0.8


@pytest.mark.parametrize(
    ("mode", "missing"),
    [(Mode.FEDERATED, "parties"), (Mode.DISTRIBUTED, "workers")],
)
def test_secure_modes_need_their_own_keys(mode, missing):
    with pytest.raises(MetricsReportError, match=missing):
        centralized(mode=mode, tee=TEEKind.SIMULATED)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("seed", True, "seed must be int"),
        ("test_auc", "0.7", "test_auc must be int or float"),
        ("test_auc", float("nan"), "finite"),
        ("test_auc", 1.5, r"\[0, 1\]"),
        ("mode", "solo", "unknown mode"),
        ("tee", "sev", "unknown tee"),
        ("test_rows", 0, "at least 1"),
        ("test_split_sha256", "abc", "64 hex"),
        ("history", [], "must not be empty"),
        (
            "history",
            [{"val_auc": 0.7, "val_logloss": 0.5, "wall_seconds": 1.0}],
            "exactly one of epoch",
        ),
        ("history", [{"epoch": 1, "val_auc": 0.7, "wall_seconds": 1.0}], "lacks val_logloss"),
        (
            "history",
            [{"epoch": 1.5, "val_auc": 0.7, "val_logloss": 0.5, "wall_seconds": 1.0}],
            "must be int",
        ),
    ],
)
def test_refuses_wrong_values(key, value, message):
    metrics = centralized()
    metrics[key] = value
    with pytest.raises(MetricsReportError, match=message):
        validate_metrics(metrics)


def test_extra_keys_may_not_replace_common_ones():
    with pytest.raises(MetricsReportError, match="replace"):
        centralized(extra={"test_auc": 0.99})


def test_writes_valid_json_and_refuses_to_write_an_invalid_report(tmp_path):
    path = write_metrics(tmp_path / "run", centralized())
    assert json.loads(path.read_text()) == centralized()
    broken = centralized()
    del broken["wall_seconds"]
    with pytest.raises(MetricsReportError):
        write_metrics(tmp_path / "broken", broken)
    assert not (tmp_path / "broken" / "metrics.json").exists()


def test_a_value_json_cannot_hold_leaves_no_file(tmp_path):
    metrics = centralized(extra={"odd": object()})
    with pytest.raises(MetricsReportError, match="serialise"):
        write_metrics(tmp_path, metrics)
    assert list(tmp_path.iterdir()) == []


def test_comparison_report_lists_every_mode(tmp_path):
    runs = [centralized(), centralized(wall_seconds=12.5)]
    markdown, json_path = write_comparison_report(tmp_path, runs, title="demo", notes=["a note"])
    text = markdown.read_text()
    assert "| mode | tee | test AUC |" in text
    assert text.count("| centralized | none | 0.7800 |") == 2
    assert "- a note" in text
    document = json.loads(json_path.read_text())
    assert len(document["runs"]) == 2 and document["test_split_sha256"] == SHA


def test_comparison_refuses_runs_on_different_test_splits(tmp_path):
    with pytest.raises(MetricsReportError, match="different test splits"):
        write_comparison_report(
            tmp_path, [centralized(), centralized(test_split_sha256="cd" * 32)], title="x"
        )
