from __future__ import annotations

import numpy as np
import pytest

from enclaverec.data.baseline import baseline_logreg_auc, design_matrix
from enclaverec.data.partition import partition_dataset
from enclaverec.data.schema import DataSet, Examples, FeatureSpec, split_sha256
from enclaverec.data.split import split_examples
from enclaverec.data.summary import describe_dataset, describe_parties
from enclaverec.errors import TrainingError

SPEC = FeatureSpec(("d",), ("user", "x"), (51, 4))


def make_dataset(n: int = 4000, *, signal: bool = True) -> DataSet:
    rng = np.random.default_rng(2)
    categorical = np.column_stack((rng.integers(1, 51, n), rng.integers(0, 4, n))).astype(np.int32)
    dense = rng.normal(size=(n, 1)).astype(np.float32)
    logit = (categorical[:, 1] - 1.5) + dense[:, 0] if signal else np.zeros(n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    examples = Examples(dense, categorical, labels, np.arange(n, dtype=np.int64))
    train, validation, test = split_examples(examples, seed=0)
    return DataSet("unit", SPEC, train, validation, test, info={"seed": 0, "user_feature": "user"})


def test_design_matrix_is_one_hot_plus_standardised_dense():
    dataset = make_dataset(100)
    x = design_matrix(dataset.train, SPEC, np.zeros(1), np.full(1, 2.0)).toarray()
    assert x.shape == (len(dataset.train), 51 + 4 + 1)
    np.testing.assert_array_equal(x[:, :55].sum(axis=1), 2.0)
    first = dataset.train.categorical[0]
    assert x[0, first[0]] == 1.0 and x[0, 51 + first[1]] == 1.0
    assert x[0, -1] == pytest.approx(dataset.train.dense[0, 0] / 2.0)


def test_baseline_learns_a_linear_signal_and_not_noise():
    assert baseline_logreg_auc(make_dataset(), seed=0) > 0.75
    assert abs(baseline_logreg_auc(make_dataset(signal=False), seed=0) - 0.5) < 0.08


def test_baseline_refuses_a_split_with_one_class():
    dataset = make_dataset()
    test = dataset.test
    one_class = Examples(test.dense, test.categorical, np.zeros_like(test.labels), test.row_ids)
    broken = DataSet("unit", SPEC, dataset.train, dataset.validation, one_class)
    with pytest.raises(TrainingError, match="test split of unit needs both labels"):
        baseline_logreg_auc(broken, seed=0)


def test_describe_dataset_counts_without_values():
    dataset = make_dataset()
    summary = describe_dataset(dataset)
    assert summary["rows"]["total"] == 4000
    assert summary["rows"]["test"] == len(dataset.test)
    assert summary["positive_rate"]["train"] == pytest.approx(dataset.train.labels.mean())
    assert summary["test_split_sha256"] == split_sha256(dataset.test.row_ids)
    user, x = summary["categorical_features"]
    assert (user["name"], user["table_size"], user["distinct_rows_seen"]) == ("user", 51, 50)
    assert user["row0_rate"] == 0.0
    assert x["distinct_rows_seen"] == 4 and 0.2 < x["row0_rate"] < 0.3
    assert summary["seed"] == 0 and summary["user_feature"] == "user"


def test_describe_parties_checks_the_union_of_test_rows():
    dataset = make_dataset()
    parties = partition_dataset(dataset, parties=3, mode="iid", seed=0)
    partition = {"global_test_split_sha256": split_sha256(dataset.test.row_ids), "mode": "iid"}
    summary = describe_parties(parties, partition)
    assert summary["union_is_global_test_split"] is True
    assert sum(p["rows"]["train"] for p in summary["party"]) == len(dataset.train)
    # A party missing: the union no longer is the global test split.
    assert describe_parties(parties[:2], partition)["union_is_global_test_split"] is False
