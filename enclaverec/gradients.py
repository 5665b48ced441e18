"""The sparse-gradient interface of distributed training: what a worker computes for one
step from the rows it pulled, without any optimizer or whole table on its side.

A worker pulls, for its rows of a step's global batch, the dense arrays and, per table,
the unique rows the batch uses; a :class:`GradientTrainer` (the TensorFlow DLRM in real
runs, a numpy logistic regression in protocol tests) returns the gradients of the mean
loss over those rows: dense arrays whole, tables as the touched rows with the gradients
of repeated ids summed. No TensorFlow here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from enclaverec.arrays import ROW_ID_DTYPE, Arrays, SparseRows
from enclaverec.data.schema import Examples


@dataclass(frozen=True)
class TableBatch:
    """One table's part of a batch: ``ids`` the unique global rows used (ascending, [U]),
    ``inverse`` each example's position in ``ids`` ([B]), ``rows`` their pulled values
    ([U, E])."""

    name: str
    ids: np.ndarray
    inverse: np.ndarray
    rows: np.ndarray


@dataclass(frozen=True)
class PulledBatch:
    """A worker's rows of one step with the weights they need: the examples, the dense
    arrays, and one :class:`TableBatch` per categorical feature (in the spec's order)."""

    examples: Examples
    dense: Mapping[str, np.ndarray]
    tables: tuple[TableBatch, ...]


@dataclass(frozen=True)
class BatchGradients:
    """Gradients of the mean loss over a batch's rows, and the sum of their losses."""

    loss_sum: float
    dense: Arrays
    tables: dict[str, SparseRows]

    @property
    def nbytes(self) -> int:
        return int(
            sum(v.nbytes for v in self.dense.values()) + sum(r.nbytes for r in self.tables.values())
        )


class GradientTrainer(Protocol):
    """Computes a step's gradients from pulled weights; holds no optimizer state."""

    def table_names(self) -> list[str]:
        """The model's tables, one per categorical feature, in the spec's order."""
        ...

    def gradients(self, batch: PulledBatch) -> BatchGradients: ...


def batch_ids(
    examples: Examples, table_names: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per table: (unique global ids ascending, each example's position among them)."""
    result: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for column, name in enumerate(table_names):
        ids, inverse = np.unique(examples.categorical[:, column], return_inverse=True)
        result[name] = (ids.astype(ROW_ID_DTYPE), inverse.astype(np.int32))
    return result
