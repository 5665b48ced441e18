"""Binary classification metrics of a model on a split: exact ROC AUC, log loss, accuracy.

Computed with numpy (DESIGN.md §5: the one exception to "no hand-rolled metrics"), so that
enclave roles such as the key broker score without scikit-learn or scipy in their trusted
code; the tests check them against scikit-learn. Every mode scores its best weights on the
same held-out test split with these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from enclaverec.data.schema import Examples
from enclaverec.errors import TrainingError

if TYPE_CHECKING:
    from enclaverec.trainer import Trainer

# A click is predicted when its probability reaches one half.
DECISION_THRESHOLD = 0.5


@dataclass(frozen=True)
class BinaryMetrics:
    """Metrics of predicted click probabilities against 0/1 labels on ``rows`` rows."""

    auc: float
    logloss: float
    accuracy: float
    rows: int


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> BinaryMetrics:
    """Exact ROC AUC, log loss and accuracy of ``probabilities`` [N] for ``labels`` [N].

    Raises TrainingError when the metrics are undefined (no rows, one class only) or the
    probabilities are not finite values in [0, 1] (a diverged model).
    """
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    # float64 so that log loss clips at float64's epsilon, not float32's.
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    if labels.shape != probabilities.shape:
        raise TrainingError(
            f"{len(probabilities)} predictions for {len(labels)} labels: they must match"
        )
    if len(labels) == 0:
        raise TrainingError("cannot score an empty split")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise TrainingError("labels must be 0 or 1")
    if len(np.unique(labels)) < 2:
        raise TrainingError("AUC is undefined on a split whose labels are all one class")
    if not np.isfinite(probabilities).all():
        raise TrainingError("the model predicts NaN or infinite values: training diverged")
    if probabilities.min() < 0.0 or probabilities.max() > 1.0:
        raise TrainingError("predictions must be probabilities in [0, 1]")
    return BinaryMetrics(
        auc=exact_auc(labels, probabilities),
        logloss=log_loss(labels, probabilities),
        accuracy=float(np.mean((probabilities >= DECISION_THRESHOLD) == (labels > 0.5))),
        rows=len(labels),
    )


def exact_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC: the Mann-Whitney U statistic over average ranks (ties count one
    half), as scikit-learn's ``roc_auc_score``. ``labels`` are 0/1, both present."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(labels).reshape(-1) > 0.5
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    # Average rank (1-based) of each group of tied scores.
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    group_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps] with float64's
    machine epsilon (scikit-learn's ``log_loss`` clipping)."""
    eps = np.finfo(np.float64).eps
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), eps, 1 - eps)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def evaluate_split(
    trainer: Trainer, arrays: Mapping[str, np.ndarray], examples: Examples
) -> BinaryMetrics:
    """The metrics of the model ``arrays`` on ``examples``, predicted by ``trainer``."""
    return binary_metrics(examples.labels, trainer.predict(arrays, examples))
