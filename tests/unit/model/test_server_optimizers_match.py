"""The parameter servers' numpy optimizers do what the TensorFlow trainer's rules do."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, SparseRows
from enclaverec.dlrm.config import OptimizerKind
from enclaverec.model import optimizers as tf_rules
from enclaverec.model._tf import tf
from enclaverec.paramservice import optimizers as server


def test_constants_and_choices_agree():
    assert server.ADAGRAD_EPSILON == tf_rules.ADAGRAD_EPSILON
    assert server.ADAGRAD_INITIAL_ACCUMULATOR == tf_rules.ADAGRAD_INITIAL_ACCUMULATOR
    assert [k.value for k in OptimizerKind] == [k.value for k in server.ServerOptimizerKind]


@pytest.mark.parametrize("kind", list(OptimizerKind))
def test_three_steps_match_the_trainer_rules(kind):
    rng = np.random.default_rng(1)
    dense0 = rng.standard_normal((4, 3)).astype(np.float32)
    table0 = rng.standard_normal((20, 8)).astype(np.float32)
    dense_var = tf.Variable(dense0)
    table_var = tf.Variable(table0)
    rule = tf_rules.make_rule(kind, [dense_var], table_var)
    arrays = {"d": dense0.copy(), "t": table0.copy()}
    layout = ModelLayout.of(arrays, tables=["t"])
    optimizer = server.make_server_optimizer(server.ServerOptimizerKind(kind.value), layout)
    for _ in range(3):
        rows = np.unique(rng.integers(0, 20, 6)).astype(np.int64)
        row_grads = rng.standard_normal((len(rows), 8)).astype(np.float32)
        dense_grad = rng.standard_normal((4, 3)).astype(np.float32)
        rule.apply_dense([tf.constant(dense_grad)], tf.constant(0.05))
        rule.apply_rows(
            tf.constant(rows.astype(np.int32)), tf.constant(row_grads), tf.constant(0.05)
        )
        optimizer.apply(arrays, {"d": dense_grad}, {"t": SparseRows(rows, row_grads)}, 0.05)
    np.testing.assert_allclose(arrays["d"], dense_var.numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(arrays["t"], table_var.numpy(), rtol=0, atol=2e-6)
