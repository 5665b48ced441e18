"""The robustness benchmark's harness: what its malicious member sends (and that it stays
in the benchmark), the table's gaps, and the configurations it refuses."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.app.bench_robustness import (
    CLAIMED_ROWS,
    HONEST_ONLY,
    Attack,
    CellResult,
    Defence,
    MaliciousTrainer,
    RobustnessConfig,
    gaps,
)
from enclaverec.data.schema import Examples
from enclaverec.errors import ConfigError
from enclaverec.training import FitConfig, FitMetrics


class Honest:
    """Adds 1 to every weight and reports 10 rows; scores 0.5 everywhere."""

    def initial_arrays(self):
        return {"w": np.zeros(3, np.float32)}

    def fit(self, arrays, config, *, on_steps=None):
        return {n: a + 1 for n, a in arrays.items()}, FitMetrics(10, 1, 0.5, 0.1)

    def predict(self, arrays, examples):
        return np.full(len(examples), 0.5, np.float32)


def examples(labels) -> Examples:
    labels = np.asarray(labels, np.float32)
    return Examples(
        dense=np.zeros((len(labels), 1), np.float32),
        categorical=np.zeros((len(labels), 1), np.int32),
        labels=labels,
        row_ids=np.arange(len(labels), dtype=np.int64),
    )


START = {"w": np.full(3, 2.0, np.float32)}


@pytest.mark.parametrize(("attack", "expected"), [(Attack.SCALED, 102.0), (Attack.SIGN_FLIP, 1.0)])
def test_the_poisoned_update_and_its_claimed_rows(attack, expected):
    trainer = MaliciousTrainer(Honest(), attack, scale=100.0)
    trained, metrics = trainer.fit(START, FitConfig(batch_size=4, learning_rate=0.1, epochs=2))
    assert trained["w"].dtype == np.float32
    np.testing.assert_array_equal(trained["w"], np.full(3, expected))  # start + factor * 1
    assert metrics.samples // 2 == CLAIMED_ROWS  # what the party sends as its rows


def test_the_liar_trains_honestly_and_lies_about_round_one_and_the_rest():
    trainer = MaliciousTrainer(Honest(), Attack.LYING_EVALUATION, scale=100.0)
    labels = [0, 1, 1, 0]
    trained, metrics = trainer.fit(START, FitConfig(4, 0.1, round_index=1))
    assert trained["w"].tolist() == [3.0] * 3 and metrics.samples == 10
    first = trainer.predict(START, examples(labels))
    trainer.fit(START, FitConfig(4, 0.1, round_index=2))
    later = trainer.predict(START, examples(labels))
    assert np.all(first[[1, 2]] > first[[0, 3]])  # "perfect" for round 1
    assert np.all(later[[1, 2]] < later[[0, 3]])  # AUC 0 afterwards
    assert np.all((first > 0) & (first < 1))  # probabilities: the aggregator accepts them


def test_the_other_attacks_score_like_the_honest_trainer():
    trainer = MaliciousTrainer(Honest(), Attack.SCALED, scale=10.0)
    assert trainer.predict(START, examples([0, 1])).tolist() == [0.5, 0.5]


def test_gaps_are_against_the_same_defences_honest_only_run():
    def cell(defence, column, auc):
        return CellResult("d", defence, column, 4, auc, 1, auc, 1.0)

    cells = [
        cell("a", HONEST_ONLY, 0.78),
        cell("a", "scaled", 0.75),
        cell("b", HONEST_ONLY, 0.70),
        cell("b", "scaled", 0.71),
    ]
    assert [(g["defence"], round(g["auc_minus_honest_only"], 4)) for g in gaps(cells)] == [
        ("a", -0.03),
        ("b", 0.01),
    ]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"rounds": 0}, "--rounds"),
        ({"scale": 1.0}, "--scale"),
        ({"scale": float("inf")}, "--scale"),
        # Krum with f = 1 needs 5 parties: 5 with the liar leaves 4 honest, too few.
        ({"defences": (Defence("krum", "krum:1", 5),)}, "krum:1 needs at least 5"),
    ],
)
def test_refused_configurations(config, message):
    with pytest.raises(ConfigError, match=message):
        RobustnessConfig(**config)


def test_the_production_party_has_no_attack_in_it():
    import enclaverec.federated.party as party

    source = open(party.__file__, encoding="utf-8").read()
    assert "Malicious" not in source and "bench_robustness" not in source
