"""Named model arrays and updates to them, as plain numpy: the currency of every scheme.

A model is an ordered mapping name -> array (see ``enclaverec.dlrm.weights`` for the
DLRM's names). An update is a delta against a version of that model: dense deltas for
ordinary weights, and sparse row deltas (touched rows only) for embedding tables, so that
a party or worker sends and receives only what changed. Nothing here imports TensorFlow:
the aggregator and parameter servers work on these types inside their enclaves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]

ROW_ID_DTYPE = np.dtype(np.int64)


@dataclass(frozen=True)
class ArraySpec:
    """Shape and dtype of one named array; ``table`` marks an embedding table, whose
    updates travel as sparse rows (axis 0 is the row)."""

    shape: tuple[int, ...]
    dtype: str = "float32"
    table: bool = False


@dataclass(frozen=True)
class ModelLayout:
    """The names, shapes and dtypes of a model's arrays, in order."""

    specs: Mapping[str, ArraySpec]

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray], *, tables: Iterable[str]) -> ModelLayout:
        table_names = set(tables)
        unknown = table_names - set(arrays)
        if unknown:
            raise ValueError(f"tables not among the arrays: {sorted(unknown)}")
        return cls(
            {
                name: ArraySpec(tuple(value.shape), str(value.dtype), name in table_names)
                for name, value in arrays.items()
            }
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.specs)

    @property
    def table_names(self) -> tuple[str, ...]:
        return tuple(name for name, spec in self.specs.items() if spec.table)

    @property
    def dense_names(self) -> tuple[str, ...]:
        return tuple(name for name, spec in self.specs.items() if not spec.table)

    def zeros(self) -> Arrays:
        return {name: np.zeros(spec.shape, spec.dtype) for name, spec in self.specs.items()}

    def to_dict(self) -> dict[str, dict[str, object]]:
        return {
            name: {"shape": list(spec.shape), "dtype": spec.dtype, "table": spec.table}
            for name, spec in self.specs.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, object]]) -> ModelLayout:
        return cls(
            {
                name: ArraySpec(
                    tuple(int(d) for d in entry["shape"]),  # type: ignore[union-attr]
                    str(entry["dtype"]),
                    bool(entry["table"]),
                )
                for name, entry in data.items()
            }
        )


@dataclass(frozen=True)
class SparseRows:
    """Some rows of a table: ``row_ids`` int64 [K] (unique, ascending) and ``values``
    [K, D] (the rows, or the rows' deltas)."""

    row_ids: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.row_ids)

    @property
    def nbytes(self) -> int:
        return int(self.row_ids.nbytes + self.values.nbytes)


@dataclass(frozen=True)
class ModelUpdate:
    """One contributor's delta against the model version it started from, with its weight
    (the number of training samples behind it, for FedAvg).

    Tables may appear in ``sparse`` (touched rows) or in ``dense`` (whole-table deltas);
    a name must not appear in both.
    """

    dense: Mapping[str, np.ndarray]
    sparse: Mapping[str, SparseRows] = field(default_factory=dict)
    num_samples: int = 0

    @property
    def nbytes(self) -> int:
        return int(
            sum(v.nbytes for v in self.dense.values()) + sum(s.nbytes for s in self.sparse.values())
        )


def delta(new: Mapping[str, np.ndarray], old: Mapping[str, np.ndarray]) -> Arrays:
    """``new - old`` for every name (in ``old``'s order)."""
    return {name: new[name] - old[name] for name in old}


def touched_rows(table_delta: np.ndarray) -> np.ndarray:
    """Ids of the rows of a table delta that are not all zero, ascending (int64)."""
    flat = table_delta.reshape(len(table_delta), -1)
    return np.flatnonzero(np.any(flat != 0, axis=1)).astype(ROW_ID_DTYPE)


def sparsify(
    full_delta: Mapping[str, np.ndarray],
    layout: ModelLayout,
    num_samples: int,
    *,
    dense_when_smaller: bool = False,
) -> ModelUpdate:
    """Turn a full delta into an update whose tables carry only the rows that changed.

    A row whose delta is exactly zero was not touched (or its update cancelled out); sending
    it or not gives the same aggregate, since an absent row counts as a zero delta. With
    ``dense_when_smaller``, a table whose touched rows with their 8-byte ids would weigh more
    than the whole table is sent whole instead (a small table that every party touches
    almost entirely); the weighted mean is the same either way.
    """
    dense: Arrays = {}
    sparse: dict[str, SparseRows] = {}
    for name, spec in layout.specs.items():
        value = full_delta[name]
        if spec.table:
            rows = touched_rows(value)
            row_bytes = value[0].nbytes if len(value) else 0
            if (
                dense_when_smaller
                and len(rows) * (ROW_ID_DTYPE.itemsize + row_bytes) >= value.nbytes
            ):
                dense[name] = value
                continue
            sparse[name] = SparseRows(rows, np.ascontiguousarray(value[rows]))
        else:
            dense[name] = value
    return ModelUpdate(dense=dense, sparse=sparse, num_samples=num_samples)


def densify(update: ModelUpdate, layout: ModelLayout) -> Arrays:
    """The full delta an update stands for (untouched rows are zero)."""
    full: Arrays = {}
    for name, spec in layout.specs.items():
        if name in update.sparse:
            table = np.zeros(spec.shape, spec.dtype)
            rows = update.sparse[name]
            table[rows.row_ids] = rows.values
            full[name] = table
        else:
            full[name] = update.dense[name]
    return full
