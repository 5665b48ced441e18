"""Server-side optimizers in numpy: the update rules of ``enclaverec.model.optimizers``
(SGD; element-wise Adagrad on dense arrays and row-wise Adagrad on embedding tables),
applied by a parameter server to the gradient it combined from the workers of a step.

The maths is the trainer's, operation for operation in float32, so that distributed
training reproduces ``train``'s model up to floating-point summation order:

- SGD: ``w -= lr * g``; a table's touched rows likewise.
- Adagrad (Duchi et al. 2011) on dense arrays: ``a += g**2``; ``w -= lr * g / (sqrt(a) + eps)``.
- Row-wise Adagrad on tables (FBGEMM's EXACT_ROWWISE_ADAGRAD): one accumulator per row,
  ``a[r] += mean(g[r]**2)``; ``w[r] -= g[r] * lr / (sqrt(a[r]) + eps)``, for the unique
  rows of the step with their gradients already summed over repeated ids.

eps and the initial accumulator are the trainer's (FBGEMM's defaults). No TensorFlow: this
runs inside the parameter servers' enclaves. The accumulators are the optimizer's state,
sealed in the servers' checkpoints and never sent.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout, SparseRows
from enclaverec.errors import ConfigError, MalformedInputError

# The trainer's constants (enclaverec/model/optimizers.py, which cites FBGEMM); repeated
# here because the model package imports TensorFlow and the enclave side must not. A unit
# test checks both stay equal.
ADAGRAD_EPSILON = 1e-8
ADAGRAD_INITIAL_ACCUMULATOR = 0.0


class ServerOptimizerKind(enum.Enum):
    """The same choices as ``enclaverec.dlrm.config.OptimizerKind`` (values equal)."""

    SGD = "sgd"
    ADAGRAD = "adagrad"


class ServerOptimizer(Protocol):
    """Applies one step's combined gradient to a shard's arrays, in place."""

    kind: ServerOptimizerKind

    def apply(
        self,
        arrays: Arrays,
        dense: Mapping[str, np.ndarray],
        rows: Mapping[str, SparseRows],
        learning_rate: float,
    ) -> None:
        """``dense``: gradients of dense arrays; ``rows``: unique ascending rows of tables
        with their summed gradients."""
        ...

    def state(self) -> Arrays:
        """The optimizer's state as named arrays (for sealed checkpoints)."""
        ...

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`state`; refuses arrays that do not fit the layout."""
        ...


class ServerSGD:
    """Plain SGD: no state."""

    kind = ServerOptimizerKind.SGD

    def __init__(self, layout: ModelLayout) -> None:
        self.layout = layout

    def apply(
        self,
        arrays: Arrays,
        dense: Mapping[str, np.ndarray],
        rows: Mapping[str, SparseRows],
        learning_rate: float,
    ) -> None:
        lr = np.float32(learning_rate)
        for name, gradient in dense.items():
            arrays[name] -= lr * gradient
        for name, part in rows.items():
            arrays[name][part.row_ids] -= lr * part.values

    def state(self) -> Arrays:
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        if state:
            raise MalformedInputError(f"SGD keeps no state, got {sorted(state)}")


class ServerAdagrad:
    """Element-wise Adagrad on dense arrays, row-wise Adagrad on tables."""

    kind = ServerOptimizerKind.ADAGRAD

    def __init__(self, layout: ModelLayout) -> None:
        self.layout = layout
        self.dense_accumulators: Arrays = {
            name: np.full(layout.specs[name].shape, ADAGRAD_INITIAL_ACCUMULATOR, np.float32)
            for name in layout.dense_names
        }
        self.row_accumulators: Arrays = {
            name: np.full(layout.specs[name].shape[0], ADAGRAD_INITIAL_ACCUMULATOR, np.float32)
            for name in layout.table_names
        }

    def apply(
        self,
        arrays: Arrays,
        dense: Mapping[str, np.ndarray],
        rows: Mapping[str, SparseRows],
        learning_rate: float,
    ) -> None:
        lr = np.float32(learning_rate)
        eps = np.float32(ADAGRAD_EPSILON)
        for name, gradient in dense.items():
            total = self.dense_accumulators[name]
            total += np.square(gradient)
            arrays[name] -= lr * gradient / (np.sqrt(total) + eps)
        for name, part in rows.items():
            accumulator = self.row_accumulators[name]
            flat = part.values.reshape(len(part.row_ids), -1)
            accumulator[part.row_ids] += np.mean(np.square(flat), axis=1, dtype=np.float32)
            scale = lr / (np.sqrt(accumulator[part.row_ids]) + eps)  # [U]
            arrays[name][part.row_ids] -= part.values * scale.reshape(
                -1, *[1] * (part.values.ndim - 1)
            )

    def state(self) -> Arrays:
        state = {f"dense/{name}": value.copy() for name, value in self.dense_accumulators.items()}
        state.update(
            {f"rows/{name}": value.copy() for name, value in self.row_accumulators.items()}
        )
        return state

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        expected = {f"dense/{name}": v for name, v in self.dense_accumulators.items()}
        expected.update({f"rows/{name}": v for name, v in self.row_accumulators.items()})
        if set(state) != set(expected):
            raise MalformedInputError("the optimizer state does not fit the shard's layout")
        for key, target in expected.items():
            value = np.asarray(state[key])
            if value.shape != target.shape or value.dtype != target.dtype:
                raise MalformedInputError(f"optimizer state {key}: wrong shape or dtype")
            if not np.all(np.isfinite(value)) or np.any(value < 0):
                raise MalformedInputError(f"optimizer state {key}: not finite and >= 0")
            target[...] = value


def make_server_optimizer(kind: ServerOptimizerKind, layout: ModelLayout) -> ServerOptimizer:
    if kind is ServerOptimizerKind.SGD:
        return ServerSGD(layout)
    if kind is ServerOptimizerKind.ADAGRAD:
        return ServerAdagrad(layout)
    raise ConfigError(f"unknown optimizer {kind!r}")
