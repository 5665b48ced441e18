from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from enclaverec.data.baseline import baseline_logreg_auc
from enclaverec.data.schema import DataSet
from enclaverec.data.split import split_examples
from enclaverec.data.synthetic import USER_FEATURE, SyntheticConfig, generate
from enclaverec.errors import ConfigError

SMALL = SyntheticConfig(num_rows=20_000)


@pytest.fixture(scope="module")
def small():
    return generate(SMALL)


def test_is_deterministic(small):
    again = generate(SMALL)
    for name in ("dense", "categorical", "labels", "row_ids"):
        np.testing.assert_array_equal(getattr(small.examples, name), getattr(again.examples, name))
    np.testing.assert_array_equal(small.probabilities, again.probabilities)


def test_generator_seed_changes_the_data(small):
    other = generate(SyntheticConfig(num_rows=20_000, generator_seed=1))
    assert not np.array_equal(other.examples.categorical, small.examples.categorical)


def test_is_criteo_shaped(small):
    spec, ex = small.spec, small.examples
    assert spec.dense_names == tuple(f"I{i}" for i in range(1, 14))
    assert spec.categorical_names == tuple(f"C{i}" for i in range(1, 27))
    assert spec.table_sizes[0] == 10_001 and spec.table_sizes[-1] == 11
    assert ex.dense.shape == (20_000, 13) and ex.categorical.shape == (20_000, 26)
    assert (ex.categorical >= 0).all() and (ex.categorical < np.array(spec.table_sizes)).all()
    assert (ex.dense >= 0).all() and np.isfinite(ex.dense).all()
    np.testing.assert_array_equal(ex.row_ids, np.arange(20_000))
    assert USER_FEATURE == "C1" and (ex.categorical[:, 0] > 0).all()


def test_category_frequencies_follow_a_power_law(small):
    counts = np.sort(np.bincount(small.examples.categorical[:, 5]))[::-1]
    # Zipf(1.1): the most frequent category is far more common than the 100th.
    assert counts[0] > 20 * counts[99]


def test_positive_rate_is_near_the_target(small):
    assert abs(float(small.examples.labels.mean()) - 0.25) < 0.01


def oracle_and_baseline(data) -> tuple[float, float]:
    train, validation, test = split_examples(data.examples, seed=0)
    dataset = DataSet("synthetic", data.spec, train, validation, test)
    oracle = roc_auc_score(test.labels, data.probabilities[test.row_ids])
    return float(oracle), baseline_logreg_auc(dataset, seed=0)


@pytest.fixture(scope="module")
def small_scores(small):
    return oracle_and_baseline(small)


def test_oracle_beats_the_logistic_baseline_by_a_visible_margin(small_scores):
    oracle, baseline = small_scores
    assert 0.6 < baseline < oracle - 0.1, (oracle, baseline)


def test_the_margin_comes_from_the_interactions(small_scores):
    # Without the interaction terms the planted model is linear in the one-hot and dense
    # features: the baseline then comes much closer to the oracle (what remains is the
    # rare categories a linear model cannot estimate from 16k rows either).
    linear = generate(
        SyntheticConfig(num_rows=20_000, interaction_scale=0.0, dense_effect_scale=0.0)
    )
    oracle, baseline = small_scores
    linear_oracle, linear_baseline = oracle_and_baseline(linear)
    assert oracle - baseline > (linear_oracle - linear_baseline) + 0.07


@pytest.mark.parametrize(
    "change",
    [{"num_rows": 5}, {"min_cardinality": 1}, {"positive_rate": 1.0}, {"interacting": (26,)}],
)
def test_bad_configuration_is_refused(change):
    with pytest.raises(ConfigError):
        SyntheticConfig(**change)
