"""Binary classification metrics of a model on a split: exact ROC AUC, log loss, accuracy.

All three come from scikit-learn (DESIGN.md §5: no hand-rolled metrics). Every mode scores
its best weights on the same held-out test split with these functions.
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
    # Imported here: scikit-learn takes about a second to import, and the command-line
    # parser imports this module's callers.
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

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
        auc=float(roc_auc_score(labels, probabilities)),
        logloss=float(log_loss(labels, probabilities, labels=[0.0, 1.0])),
        accuracy=float(accuracy_score(labels, probabilities >= DECISION_THRESHOLD)),
        rows=len(labels),
    )


def evaluate_split(
    trainer: Trainer, arrays: Mapping[str, np.ndarray], examples: Examples
) -> BinaryMetrics:
    """The metrics of the model ``arrays`` on ``examples``, predicted by ``trainer``."""
    return binary_metrics(examples.labels, trainer.predict(arrays, examples))
