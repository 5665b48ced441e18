"""The parameter store: a model as named arrays with a version, and the version at which
each dense array and each table row last changed, so a caller that holds version ``v``
can fetch only what changed since.

It lives inside the enclave of the aggregator or a parameter server; nothing here does
I/O. A shard of a model is just a store over some of its names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from enclaverec.arrays import Arrays, ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import AggregationRefusedError, NonFiniteError

NEVER = -1  # "holds nothing": every array and row counts as changed


@dataclass(frozen=True)
class ModelChanges:
    """What changed after ``since``: dense arrays whole, tables as the changed rows."""

    since: int
    version: int
    dense: Arrays
    sparse: dict[str, SparseRows]

    @property
    def nbytes(self) -> int:
        return int(
            sum(v.nbytes for v in self.dense.values()) + sum(r.nbytes for r in self.sparse.values())
        )


class ParameterStore:
    """Named arrays, version-stamped. Version 0 is the initial model; every applied
    change increments it."""

    def __init__(self, arrays: Mapping[str, np.ndarray], layout: ModelLayout, *, version: int = 0):
        if list(arrays) != list(layout.names):
            raise ValueError("arrays must follow the layout's names and order")
        self.layout = layout
        self.version = version
        self._arrays: Arrays = {name: np.array(value, copy=True) for name, value in arrays.items()}
        self._array_version = {name: version for name in layout.dense_names}
        self._row_version = {
            name: np.full(layout.specs[name].shape[0], version, np.int64)
            for name in layout.table_names
        }

    def snapshot(self) -> Arrays:
        """A copy of every array (the caller owns it)."""
        return {name: value.copy() for name, value in self._arrays.items()}

    def changes_since(self, since: int) -> ModelChanges:
        """Dense arrays and table rows changed after version ``since`` (``NEVER``: all)."""
        if since > self.version:
            raise AggregationRefusedError(
                f"caller claims version {since}, but the store is at {self.version}"
            )
        dense = {
            name: self._arrays[name].copy()
            for name, changed in self._array_version.items()
            if changed > since
        }
        sparse: dict[str, SparseRows] = {}
        for name, versions in self._row_version.items():
            rows = np.flatnonzero(versions > since).astype(np.int64)
            sparse[name] = SparseRows(rows, self._arrays[name][rows].copy())
        return ModelChanges(since=since, version=self.version, dense=dense, sparse=sparse)

    def apply(self, update: ModelUpdate, *, scale: float = 1.0) -> int:
        """``arrays += scale * update`` (only the rows it carries, for sparse tables);
        returns the new version."""
        # Overflow is checked below, not warned about.
        with np.errstate(over="ignore", invalid="ignore"):
            new_dense = {
                name: self._arrays[name]
                + (value if scale == 1.0 else scale * value).astype(self._arrays[name].dtype)
                for name, value in update.dense.items()
            }
            new_rows = {}
            for name, rows in update.sparse.items():
                values = rows.values if scale == 1.0 else (scale * rows.values)
                new_rows[name] = SparseRows(
                    rows.row_ids,
                    self._arrays[name][rows.row_ids] + values.astype(self._arrays[name].dtype),
                )
        # Finite updates can still overflow (two of 3e38 in float32): refuse before
        # anything changes, so the store keeps the last model.
        for name, value in [*new_dense.items(), *((n, r.values) for n, r in new_rows.items())]:
            if not np.all(np.isfinite(value)):
                raise NonFiniteError(
                    f"{name} would not be finite after this change; the model is kept at "
                    f"version {self.version}"
                )
        return self._commit(new_dense, new_rows)

    def _commit(self, dense: Mapping[str, np.ndarray], rows: Mapping[str, SparseRows]) -> int:
        version = self.version + 1
        for name, value in dense.items():
            spec = self.layout.specs[name]
            if tuple(value.shape) != spec.shape:
                raise AggregationRefusedError(f"{name}: shape {value.shape}, expected {spec.shape}")
            self._arrays[name] = value.astype(spec.dtype, copy=True)
            if spec.table:
                self._row_version[name][:] = version
            else:
                self._array_version[name] = version
        for name, part in rows.items():
            self._arrays[name][part.row_ids] = part.values
            self._row_version[name][part.row_ids] = version
        self.version = version
        return version

    # --- checkpoints ---------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        """Everything needed to resume, as arrays and ints (sealed by the caller)."""
        return {
            "version": self.version,
            "arrays": self.snapshot(),
            "array_version": dict(self._array_version),
            "row_version": {name: v.copy() for name, v in self._row_version.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, object], layout: ModelLayout) -> ParameterStore:
        store = cls(state["arrays"], layout, version=int(state["version"]))  # type: ignore[arg-type]
        store._array_version = dict(state["array_version"])  # type: ignore[arg-type]
        store._row_version = {
            name: np.array(v, np.int64)
            for name, v in state["row_version"].items()  # type: ignore[union-attr]
        }
        return store
