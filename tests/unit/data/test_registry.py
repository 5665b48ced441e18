"""The data set registry: one table feeds loading, CLI choices and help; adding a data set
is one entry."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.data import registry
from enclaverec.data.schema import BuiltinDataSet, Examples, FeatureSpec, SourceRows
from enclaverec.data.sources import DataSelection, load_dataset
from enclaverec.errors import UsageError


def tiny_rows() -> SourceRows:
    rng = np.random.default_rng(3)
    n = 400
    spec = FeatureSpec(dense_names=("d",), categorical_names=("user",), table_sizes=(10,))
    examples = Examples(
        dense=rng.random((n, 1), dtype=np.float32),
        categorical=rng.integers(0, 10, (n, 1), dtype=np.int32),
        labels=(rng.random(n) < 0.3).astype(np.float32),
        row_ids=np.arange(n, dtype=np.int64),
    )
    return SourceRows(spec=spec, examples=examples, info={"user_feature": "user"})


TINY = BuiltinDataSet(name="tiny", summary="a tiny test set", load=tiny_rows)


def test_names_are_unique_and_every_entry_is_described():
    names = registry.dataset_names()
    assert len(set(names)) == len(names) == len(registry.DATASETS)
    assert all(entry.summary for entry in registry.DATASETS)
    assert all(name in registry.dataset_help() for name in names)


def test_an_unknown_name_lists_the_registry():
    with pytest.raises(UsageError, match="unknown data set 'tiny'; built-in data sets: synthetic"):
        registry.builtin_dataset("tiny")


def test_adding_a_data_set_is_one_entry(monkeypatch, run_cli, tmp_path):
    monkeypatch.setattr(registry, "DATASETS", (*registry.DATASETS, TINY))
    dataset = load_dataset(DataSelection(dataset="tiny"), seed=1)
    assert dataset.name == "tiny" and dataset.info["user_feature"] == "user"
    assert len(dataset.train) + len(dataset.validation) + len(dataset.test) == 400
    assert "oracle_auc" not in dataset.info  # no planted model
    # The CLI takes it too: `data prepare --dataset tiny` writes the prepared folder.
    code, _, err = run_cli("data", "prepare", "--dataset", "tiny", "--output", tmp_path / "p")
    assert code == 0, err
    assert (tmp_path / "p" / "spec.json").is_file()


def test_a_planted_model_gives_the_oracle_scores():
    dataset = load_dataset(DataSelection(dataset="synthetic"), seed=0)
    assert 0.5 < dataset.info["oracle_auc"] < 1.0
    assert dataset.info["user_feature"] == "C1"
