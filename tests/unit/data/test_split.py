from __future__ import annotations

import numpy as np
import pytest

from enclaverec.data.schema import Examples
from enclaverec.data.split import (
    TEST,
    TRAIN,
    VALIDATION,
    SplitRule,
    assign_splits,
    split_examples,
)
from enclaverec.errors import ConfigError

IDS = np.arange(200_000, dtype=np.int64)


def examples(row_ids: np.ndarray) -> Examples:
    n = len(row_ids)
    return Examples(
        dense=np.zeros((n, 2), np.float32),
        categorical=np.zeros((n, 3), np.int32),
        labels=np.zeros(n, np.float32),
        row_ids=row_ids.astype(np.int64),
    )


def test_split_is_a_pure_function_of_row_id_and_seed():
    np.testing.assert_array_equal(assign_splits(IDS, seed=3), assign_splits(IDS, seed=3))


def test_split_changes_with_the_seed():
    a, b = assign_splits(IDS, seed=0), assign_splits(IDS, seed=1)
    # Independent draws agree on about 0.8^2 + 0.1^2 + 0.1^2 = 66% of rows.
    assert 0.64 < float(np.mean(a == b)) < 0.68


def test_fractions_are_80_10_10():
    assignment = assign_splits(IDS, seed=0)
    fractions = np.bincount(assignment, minlength=3) / len(IDS)
    np.testing.assert_allclose(fractions, [0.8, 0.1, 0.1], atol=0.005)


def test_a_rows_split_does_not_depend_on_the_other_rows_or_their_order():
    full = assign_splits(IDS, seed=5)
    rng = np.random.default_rng(0)
    subset = rng.choice(IDS, 5000, replace=False)
    np.testing.assert_array_equal(assign_splits(subset, seed=5), full[subset])


def test_splits_are_disjoint_cover_every_row_and_keep_order():
    rng = np.random.default_rng(1)
    data = examples(rng.permutation(10_000))
    train, validation, test = split_examples(data, seed=2)
    ids = [s.row_ids for s in (train, validation, test)]
    assert sum(len(i) for i in ids) == len(data)
    assert len(np.unique(np.concatenate(ids))) == len(data)
    assignment = assign_splits(data.row_ids, seed=2)
    for which, part in zip((TRAIN, VALIDATION, TEST), ids, strict=True):
        np.testing.assert_array_equal(part, data.row_ids[assignment == which])


def test_custom_rule_moves_the_boundaries():
    rule = SplitRule(train=0.5, validation=0.25, test=0.25)
    fractions = np.bincount(assign_splits(IDS, seed=0, rule=rule), minlength=3) / len(IDS)
    np.testing.assert_allclose(fractions, [0.5, 0.25, 0.25], atol=0.005)


@pytest.mark.parametrize(
    "fractions", [(0.8, 0.1, 0.2), (1.0, 0.0, 0.0), (0.9, -0.1, 0.2), (0.5, 0.5, 0.0)]
)
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ConfigError, match="split fractions"):
        SplitRule(*fractions)


def test_rule_round_trips_and_refuses_an_unknown_function():
    rule = SplitRule()
    assert SplitRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(ConfigError, match="unknown split rule"):
        SplitRule.from_dict(rule.to_dict() | {"function": "random"})
