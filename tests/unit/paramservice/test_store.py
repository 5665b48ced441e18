from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import AggregationRefusedError, NonFiniteError
from enclaverec.paramservice.store import NEVER, ParameterStore


@pytest.fixture
def store() -> ParameterStore:
    arrays = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "table": np.zeros((10, 2), np.float32),
    }
    return ParameterStore(arrays, ModelLayout.of(arrays, tables=["table"]))


def row_update(ids, value, samples=1):
    ids = np.array(ids, np.int64)
    return ModelUpdate(
        dense={"w": np.ones((2, 3), np.float32)},
        sparse={"table": SparseRows(ids, np.full((len(ids), 2), value, np.float32))},
        num_samples=samples,
    )


def test_a_new_caller_gets_everything(store):
    changes = store.changes_since(NEVER)
    assert changes.version == 0
    assert set(changes.dense) == {"w"}
    assert changes.sparse["table"].row_ids.tolist() == list(range(10))


def test_changes_since_carries_only_rows_changed_after_that_version(store):
    assert store.apply(row_update([1, 4], 1.0)) == 1
    assert store.apply(row_update([4, 7], 2.0)) == 2
    since_1 = store.changes_since(1)
    assert since_1.sparse["table"].row_ids.tolist() == [4, 7]
    np.testing.assert_array_equal(since_1.sparse["table"].values, [[3, 3], [2, 2]])
    assert "w" in since_1.dense
    assert store.changes_since(2).sparse["table"].row_ids.tolist() == []
    assert store.changes_since(2).dense == {}


def test_a_caller_that_applies_changes_holds_the_same_model(store):
    replica = store.snapshot()
    held = store.version
    for step in range(3):
        store.apply(row_update([step, step + 5], float(step + 1)))
        changes = store.changes_since(held)
        for name, value in changes.dense.items():
            replica[name] = value
        for name, rows in changes.sparse.items():
            replica[name][rows.row_ids] = rows.values
        held = changes.version
    for name, value in store.snapshot().items():
        assert np.array_equal(replica[name], value)


def test_refuses_a_version_from_the_future(store):
    with pytest.raises(AggregationRefusedError, match="claims version 5"):
        store.changes_since(5)


def test_state_round_trip_resumes_versions(store):
    store.apply(row_update([2], 1.0))
    again = ParameterStore.from_state(store.state(), store.layout)
    assert again.version == 1
    assert again.changes_since(0).sparse["table"].row_ids.tolist() == [2]
    for name, value in store.snapshot().items():
        assert np.array_equal(again.snapshot()[name], value)


def test_an_overflowing_change_is_refused_and_the_model_kept(store):
    """Two accepted finite updates of 3e38 used to leave the model at inf."""
    big = row_update([1, 2], 3e38)
    big.dense["w"][:] = 3e38
    store.apply(big)
    before, version = store.snapshot(), store.version
    with pytest.raises(NonFiniteError, match="would not be finite"):
        store.apply(big)
    assert store.version == version
    for name, value in store.snapshot().items():
        assert np.array_equal(value, before[name])
