"""Which round's global model is best: a statistic of the parties' own validation AUCs that
no single party can move far.

Each party scores the global model on its own validation rows; the aggregator cannot check
those scores. Pooling them lets one party that sends fabricated scores for many rows pick
the "best" round (its poisoned one). The median of the per-party AUCs moves only within
the honest parties' range while fewer than half lie; with two parties the minimum is used
(a liar can only lower it, never make its round win), with one party its own AUC.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from enclaverec.errors import TrainingError
from enclaverec.evaluation import BinaryMetrics, binary_metrics
from enclaverec.federated.wire import Evaluation

MEDIAN_FROM_PARTIES = 3


@dataclass(frozen=True)
class RoundScores:
    """One round's validation scores: per party (None where a party's rows hold one class
    only, so its AUC is undefined), the pooled metrics, and the selection statistic."""

    per_party: Mapping[str, BinaryMetrics | None]
    pooled: BinaryMetrics
    selection_auc: float
    statistic: str


def _per_party(evaluation: Evaluation) -> BinaryMetrics | None:
    try:
        return binary_metrics(evaluation.validation_labels, evaluation.validation_scores)
    except TrainingError:
        return None


def robust_auc(aucs: list[float]) -> tuple[float, str]:
    """The selection statistic of some parties' AUCs, and its name."""
    if not aucs:
        raise TrainingError("no party's validation AUC is defined")
    if len(aucs) >= MEDIAN_FROM_PARTIES:
        return float(statistics.median(aucs)), "median"
    return float(min(aucs)), "min" if len(aucs) == 2 else "single"


def score_round(replies: Mapping[str, Evaluation]) -> RoundScores:
    """Per-party and pooled validation metrics of one round, and the AUC that chooses the
    best round (the pooled AUC only when no party's own AUC is defined)."""
    import numpy as np

    values = list(replies.values())
    pooled = binary_metrics(
        np.concatenate([e.validation_labels for e in values]),
        np.concatenate([e.validation_scores for e in values]),
    )
    per_party = {party: _per_party(evaluation) for party, evaluation in replies.items()}
    defined = [m.auc for m in per_party.values() if m is not None]
    if defined:
        selection, statistic = robust_auc(defined)
    else:
        selection, statistic = pooled.auc, "pooled"
    return RoundScores(per_party, pooled, selection, statistic)
