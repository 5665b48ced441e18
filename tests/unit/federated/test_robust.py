"""The robust combinations' math: clipping to the round's median norm, the median and the
trimmed mean (table rows over the parties that sent them), Krum's selection."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import AggregationRefusedError
from enclaverec.federated.robust import (
    agreeing,
    agreement_with_others,
    clip_to_median_norm,
    coordinate_median,
    krum_select,
    trimmed_mean,
    update_norm,
)
from enclaverec.federated.strategies import Clipping, StrategyConfig, make_strategy

ROWS = 6


def layout() -> ModelLayout:
    arrays = {"w": np.zeros(2, np.float32), "table": np.zeros((ROWS, 2), np.float32)}
    return ModelLayout.of(arrays, tables=["table"])


def update(w, rows: dict[int, float], samples: int = 10) -> ModelUpdate:
    ids = np.array(sorted(rows), np.int64)
    values = np.array([[rows[i]] * 2 for i in sorted(rows)], np.float32).reshape(-1, 2)
    return ModelUpdate(
        dense={"w": np.array(w, np.float32)},
        sparse={"table": SparseRows(ids, values)},
        num_samples=samples,
    )


def honest(k: int) -> list[ModelUpdate]:
    return [update([1.0 + 0.1 * i, -1.0], {0: 1.0 + 0.1 * i, 1: 2.0}) for i in range(k)]


def test_a_row_only_one_party_touched_takes_its_value_not_a_zero_vote():
    updates = [*honest(3), update([1.0, -1.0], {5: 4.0})]
    for change in (coordinate_median(updates, layout()), trimmed_mean(updates, layout(), 0.25)):
        rows = change.sparse["table"]
        assert rows.row_ids.tolist() == [0, 1, 5]
        assert rows.values[2].tolist() == [4.0, 4.0]  # the only vote for row 5
        assert rows.values[1].tolist() == [2.0, 2.0]  # three votes of 2.0


def test_median_and_trimmed_mean_ignore_one_huge_update():
    updates = [*honest(3), update([1e6, 1e6], {0: 1e6, 1: -1e6})]
    median = coordinate_median(updates, layout())
    trimmed = trimmed_mean(updates, layout(), 0.25)
    for change in (median, trimmed):
        assert np.all(np.abs(change.dense["w"]) < 2)
        assert np.all(np.abs(change.sparse["table"].values) < 3)
    np.testing.assert_allclose(trimmed.dense["w"], [1.15, -1.0], rtol=1e-6)


def test_trimmed_mean_with_beta_zero_is_the_unweighted_mean():
    updates = honest(4)
    change = trimmed_mean(updates, layout(), 0.0)
    np.testing.assert_allclose(change.dense["w"], [1.15, -1.0], rtol=1e-6)


def test_krum_selects_an_honest_update_and_refuses_too_few():
    updates = [*honest(4), update([50.0, 50.0], {0: -50.0})]
    assert krum_select(updates, layout(), f=1) != [4]
    assert 4 not in krum_select(updates, layout(), f=1, m=3)
    with pytest.raises(AggregationRefusedError, match="needs at least 5 updates, got 4"):
        krum_select(updates[:4], layout(), f=1)


def test_clipping_scales_a_scaled_update_to_the_rounds_median_norm():
    updates = [*honest(3), update([1e4, 1e4], {0: 1e4})]
    clipped, bound = clip_to_median_norm(updates)
    assert update_norm(clipped[3]) == pytest.approx(bound, rel=1e-5)
    assert bound < 10
    for before, after in zip(updates[:3], clipped[:3], strict=True):
        # At or under the bound: untouched; above it (an honest one may be): scaled to it.
        expected = min(update_norm(before), bound)
        assert update_norm(after) == pytest.approx(expected, rel=1e-5)


def test_default_fedavg_bounds_one_scaled_update_with_a_huge_weight():
    """FedAvg with clipping: one party's update scaled 1000x (its weight already capped by
    max_rows upstream) moves the model by at most its share of the median norm."""
    updates = [*honest(3), update([1e3, 1e3], {0: 1e3}, samples=10)]
    plain = make_strategy(StrategyConfig.parse("fedavg", clipping=Clipping.NONE))
    clipped = make_strategy(StrategyConfig())
    assert StrategyConfig().clipping is Clipping.MEDIAN  # the default
    names = ["a", "b", "c", "liar"]
    assert np.max(np.abs(plain.aggregate(updates, layout(), names).dense["w"])) > 200
    assert np.max(np.abs(clipped.aggregate(updates, layout(), names).dense["w"])) < 3


def flat(update: ModelUpdate) -> np.ndarray:
    """An update as one dense vector (its rows in place), for brute-force checks."""
    table = np.zeros((ROWS, 2))
    table[update.sparse["table"].row_ids] = update.sparse["table"].values
    return np.concatenate([update.dense["w"], table.ravel()])


def test_agreement_is_the_cosine_with_the_sum_of_the_others():
    updates = [*honest(3), update([-1.0, 1.0], {0: -1.0, 4: 3.0})]
    cosines = agreement_with_others(updates, layout())
    vectors = [flat(u) for u in updates]
    for i, cosine in enumerate(cosines):
        others = sum(v for j, v in enumerate(vectors) if j != i)
        expected = vectors[i] @ others / (np.linalg.norm(vectors[i]) * np.linalg.norm(others))
        assert cosine == pytest.approx(expected, rel=1e-6)


def test_a_sign_flipped_update_is_left_out_and_honest_ones_kept():
    flipped = update([-1.1, 1.0], {0: -1.1, 1: -2.0})
    kept, cosines = agreeing([*honest(3), flipped], layout(), 0.0)
    assert kept == [0, 1, 2] and cosines[3] < 0 < min(cosines[:3])
    # Two updates cannot tell which one disagrees: both kept.
    assert agreeing([honest(1)[0], flipped], layout(), 0.0)[0] == [0, 1]


def test_default_fedavg_leaves_a_sign_flipped_update_out_and_says_so():
    names = ["a", "b", "c", "liar"]
    flipped = update([-1.1, 1.0], {0: -1.1, 1: -2.0})
    strategy = make_strategy(StrategyConfig())
    change = strategy.aggregate([*honest(3), flipped], layout(), names)
    honest_only = make_strategy(StrategyConfig()).aggregate(honest(3), layout(), names[:3])
    np.testing.assert_allclose(change.dense["w"], honest_only.dense["w"])
    assert list(strategy.excluded) == ["liar"] and strategy.excluded["liar"] < 0
    # Off with fedavg:-1: the flipped update is averaged in.
    plain = make_strategy(StrategyConfig.parse("fedavg:-1"))
    assert not np.allclose(
        plain.aggregate([*honest(3), flipped], layout(), names).dense["w"], honest_only.dense["w"]
    )
    assert plain.excluded == {}


def test_without_a_consensus_nothing_is_left_out():
    """Unrelated updates (late in training, honest parties' updates become nearly
    orthogonal): no majority direction to judge by, every update is averaged."""
    opposed = [update([1.0, 0.0], {}), update([-1.0, 0.0], {}), update([0.0, 0.0], {})]
    strategy = make_strategy(StrategyConfig(clipping=Clipping.NONE))
    change = strategy.aggregate(opposed, layout(), "abc")
    assert strategy.excluded == {} and change.dense["w"].tolist() == [0.0, 0.0]


def test_a_weak_disagreement_is_kept_a_strong_one_left_out():
    """Three updates share a direction (cosines +0.34 with the others); a fourth at -0.11
    is below zero by less than the median is above it, the noise of honest updates, and
    is kept; one at -0.30 (against a median of +0.29) is left out."""
    shared = [update([0.5, 0.0], {row: 0.5}) for row in range(3)]
    weak = [*shared, update([-0.1, 0.0], {3: 0.5})]
    strong = [*shared, update([-0.3, 0.0], {3: 0.5})]
    kept, cosines = agreeing(weak, layout(), 0.0)
    assert kept == [0, 1, 2, 3] and cosines[3] == pytest.approx(-0.1085, abs=1e-4)
    kept, cosines = agreeing(strong, layout(), 0.0)
    assert kept == [0, 1, 2] and cosines[3] == pytest.approx(-0.3025, abs=1e-4)
