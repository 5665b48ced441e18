"""Server-side optimizers: the trainer's update rules in numpy (checked against the
TensorFlow rules in tests/unit/model/test_server_optimizers_match.py), their state."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, SparseRows
from enclaverec.errors import MalformedInputError
from enclaverec.paramservice.optimizers import (
    ADAGRAD_EPSILON,
    ServerAdagrad,
    ServerOptimizerKind,
    ServerSGD,
    make_server_optimizer,
)


def arrays() -> dict[str, np.ndarray]:
    return {"w": np.ones(3, np.float32), "embedding/C1": np.ones((5, 2), np.float32)}


def layout() -> ModelLayout:
    return ModelLayout.of(arrays(), tables=["embedding/C1"])


def test_sgd_moves_only_the_touched_rows():
    weights = arrays()
    rows = SparseRows(np.array([1, 3], np.int64), np.full((2, 2), 2.0, np.float32))
    ServerSGD(layout()).apply(
        weights, {"w": np.full(3, 1.0, np.float32)}, {"embedding/C1": rows}, 0.5
    )
    np.testing.assert_array_equal(weights["w"], 0.5)
    np.testing.assert_array_equal(weights["embedding/C1"][[1, 3]], 0.0)
    np.testing.assert_array_equal(weights["embedding/C1"][[0, 2, 4]], 1.0)


def test_rowwise_adagrad_by_hand():
    weights = arrays()
    optimizer = ServerAdagrad(layout())
    rows = SparseRows(np.array([2], np.int64), np.array([[3.0, 4.0]], np.float32))
    optimizer.apply(
        weights, {"w": np.array([2.0, 0.0, -1.0], np.float32)}, {"embedding/C1": rows}, 0.1
    )
    # row accumulator: mean(9, 16) = 12.5; step = g * 0.1 / (sqrt(12.5) + eps)
    expected_row = 1.0 - np.array([3.0, 4.0]) * 0.1 / (np.sqrt(12.5) + ADAGRAD_EPSILON)
    np.testing.assert_allclose(weights["embedding/C1"][2], expected_row, rtol=1e-6)
    np.testing.assert_array_equal(weights["embedding/C1"][[0, 1, 3, 4]], 1.0)
    # dense element-wise: w - 0.1 * g / (|g| + eps); a zero gradient leaves w
    np.testing.assert_allclose(weights["w"], [0.9, 1.0, 1.1], rtol=1e-6)
    assert optimizer.row_accumulators["embedding/C1"][2] == pytest.approx(12.5)
    assert optimizer.row_accumulators["embedding/C1"][[0, 1, 3, 4]].tolist() == [0, 0, 0, 0]


def test_state_round_trips_and_refuses_a_misfit():
    optimizer = ServerAdagrad(layout())
    optimizer.apply(
        arrays(),
        {"w": np.ones(3, np.float32)},
        {"embedding/C1": SparseRows(np.array([0], np.int64), np.ones((1, 2), np.float32))},
        0.1,
    )
    state = optimizer.state()
    restored = make_server_optimizer(ServerOptimizerKind.ADAGRAD, layout())
    restored.load_state(state)
    for key, value in restored.state().items():
        np.testing.assert_array_equal(value, state[key])
    bad = dict(state)
    bad["rows/embedding/C1"] = np.full(5, np.nan, np.float32)
    with pytest.raises(MalformedInputError, match="not finite"):
        restored.load_state(bad)
    with pytest.raises(MalformedInputError, match="does not fit"):
        restored.load_state({"rows/embedding/C1": state["rows/embedding/C1"]})
    with pytest.raises(MalformedInputError, match="SGD keeps no state"):
        ServerSGD(layout()).load_state(state)
