from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from enclaverec.errors import TrainingError
from enclaverec.evaluation import binary_metrics


def test_hand_computed_example():
    labels = np.array([0, 0, 1, 1])
    probabilities = np.array([0.1, 0.6, 0.4, 0.8])
    metrics = binary_metrics(labels, probabilities)
    # Positive-negative pairs ranked correctly: (0.4 > 0.1), (0.8 > 0.1), (0.8 > 0.6): 3 of 4.
    assert metrics.auc == pytest.approx(0.75)
    expected_logloss = -np.mean(np.log([0.9, 0.4, 0.4, 0.8]))
    assert metrics.logloss == pytest.approx(expected_logloss)
    assert metrics.accuracy == pytest.approx(0.5)  # 0.1 and 0.8 right, 0.6 and 0.4 wrong
    assert metrics.rows == 4


def test_matches_sklearn_on_random_data_with_ties():
    rng = np.random.default_rng(0)
    labels = (rng.random(5000) < 0.3).astype(np.float32)
    probabilities = np.round(rng.random(5000), 2).astype(np.float32)  # many ties
    metrics = binary_metrics(labels, probabilities)
    assert metrics.auc == pytest.approx(roc_auc_score(labels, probabilities), abs=1e-12)
    assert metrics.logloss == pytest.approx(log_loss(labels, probabilities.astype(np.float64)))


def test_certain_wrong_predictions_give_a_large_finite_log_loss():
    metrics = binary_metrics(np.array([0, 1]), np.array([1.0, 0.0]))
    assert np.isfinite(metrics.logloss) and metrics.logloss > 30


@pytest.mark.parametrize(
    ("labels", "probabilities", "message"),
    [
        ([1, 1, 1], [0.2, 0.5, 0.9], "one class"),
        ([], [], "empty"),
        ([0, 1], [0.5], "must match"),
        ([0, 1], [0.5, np.nan], "diverged"),
        ([0, 1], [0.5, 1.5], r"\[0, 1\]"),
        ([0, 2], [0.5, 0.5], "0 or 1"),
    ],
)
def test_refuses_undefined_metrics(labels, probabilities, message):
    with pytest.raises(TrainingError, match=message):
        binary_metrics(np.array(labels, dtype=float), np.array(probabilities, dtype=float))
