"""The shard map: which parameter server holds which embedding rows and the dense arrays.

Row ``r`` of the ``k``-th table (in the layout's order) lives on shard ``(r + k) % P`` at
local row ``r // P``: striping spreads every table evenly over the P servers whatever the
rows' popularity (hashed category ids are uniform, but row 0, the missing category, is hot
in every table, and the offset ``k`` puts the 26 row-0s of a Criteo model on different
shards). The dense arrays (MLPs) live whole on one named shard. The map is part of the
measured job configuration, so every worker and server agrees on it without trusting a
peer's word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from enclaverec.arrays import ROW_ID_DTYPE, Arrays, ArraySpec, ModelLayout, SparseRows
from enclaverec.errors import ConfigError, MalformedInputError

MAX_SHARDS = 1024  # far above any cluster we target; bounds loops over shards


@dataclass(frozen=True)
class ShardMap:
    """P parameter-server shards; the dense arrays on shard ``dense_shard``."""

    shards: int = 1
    dense_shard: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.shards, bool) or not isinstance(self.shards, int):
            raise ConfigError(f"shards must be an integer, got {self.shards!r}")
        if not 1 <= self.shards <= MAX_SHARDS:
            raise ConfigError(f"shards must be in [1, {MAX_SHARDS}], got {self.shards}")
        if isinstance(self.dense_shard, bool) or not isinstance(self.dense_shard, int):
            raise ConfigError(f"dense_shard must be an integer, got {self.dense_shard!r}")
        if not 0 <= self.dense_shard < self.shards:
            raise ConfigError(f"dense_shard must be in [0, {self.shards}), got {self.dense_shard}")

    # --- TOML ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "dense_shard": self.dense_shard, "rows": "striped"}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardMap:
        unknown = set(data) - {"shards", "dense_shard", "rows"}
        if unknown:
            raise ConfigError(f"unknown shard map keys {sorted(unknown)}")
        if data.get("rows", "striped") != "striped":
            raise ConfigError(f"shard map rows must be 'striped', got {data.get('rows')!r}")
        return cls(shards=data.get("shards", 1), dense_shard=data.get("dense_shard", 0))

    # --- rows ----------------------------------------------------------------------------

    def _offset(self, layout: ModelLayout, table: str) -> int:
        return layout.table_names.index(table)

    def shard_of(self, layout: ModelLayout, table: str, rows: np.ndarray) -> np.ndarray:
        """The shard of each global row id of ``table`` (int64 array like ``rows``)."""
        return (np.asarray(rows, ROW_ID_DTYPE) + self._offset(layout, table)) % self.shards

    def local_rows(self, rows: np.ndarray) -> np.ndarray:
        """Global row ids -> row ids within their shard's part of the table."""
        return np.asarray(rows, ROW_ID_DTYPE) // self.shards

    def global_rows(
        self, layout: ModelLayout, table: str, shard: int, local: np.ndarray
    ) -> np.ndarray:
        """Row ids within ``shard``'s part of ``table`` -> global row ids."""
        first = (shard - self._offset(layout, table)) % self.shards
        return np.asarray(local, ROW_ID_DTYPE) * self.shards + first

    def rows_on(self, layout: ModelLayout, table: str, shard: int) -> int:
        """How many rows of ``table`` shard ``shard`` holds."""
        total = layout.specs[table].shape[0]
        first = (shard - self._offset(layout, table)) % self.shards
        return len(range(first, total, self.shards))

    def split_rows(
        self, layout: ModelLayout, table: str, rows: np.ndarray
    ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Group ascending global ``rows`` by shard: shard -> (positions in ``rows``, local
        row ids, still ascending). Shards that hold none of them are left out."""
        if self.shards == 1:  # every row on shard 0, local ids global (per step, per table)
            ids = np.asarray(rows, ROW_ID_DTYPE)
            return {0: (np.arange(len(ids)), ids)} if len(ids) else {}
        shard = self.shard_of(layout, table, rows)
        local = self.local_rows(rows)
        groups: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for index in np.unique(shard):
            positions = np.flatnonzero(shard == index)
            groups[int(index)] = (positions, local[positions])
        return groups

    # --- layouts and whole models ----------------------------------------------------------

    def check_layout(self, layout: ModelLayout) -> None:
        """Refuse a layout that some shard would hold no row of (a table of fewer rows
        than shards): an empty array cannot be served or checkpointed meaningfully."""
        for name in layout.table_names:
            if layout.specs[name].shape[0] < self.shards:
                raise ConfigError(
                    f"{name} has {layout.specs[name].shape[0]} rows, fewer than the "
                    f"{self.shards} shards"
                )

    def shard_layout(self, layout: ModelLayout, shard: int) -> ModelLayout:
        """The layout of what ``shard`` holds: its part of every table (in local row ids)
        and, on the dense shard, the dense arrays."""
        self._check_shard(shard)
        specs: dict[str, ArraySpec] = {}
        for name, spec in layout.specs.items():
            if spec.table:
                rows = self.rows_on(layout, name, shard)
                specs[name] = ArraySpec((rows, *spec.shape[1:]), spec.dtype, True)
            elif shard == self.dense_shard:
                specs[name] = spec
        return ModelLayout(specs)

    def split_model(self, arrays: Mapping[str, np.ndarray], layout: ModelLayout) -> list[Arrays]:
        """A whole model -> each shard's arrays (for the initial model)."""
        self.check_layout(layout)
        parts: list[Arrays] = []
        for shard in range(self.shards):
            part: Arrays = {}
            for name in self.shard_layout(layout, shard).names:
                value = np.asarray(arrays[name])
                if layout.specs[name].table:
                    first = (shard - self._offset(layout, name)) % self.shards
                    part[name] = np.ascontiguousarray(value[first :: self.shards])
                else:
                    part[name] = np.array(value, copy=True)
            parts.append(part)
        return parts

    def join_model(self, parts: list[Mapping[str, np.ndarray]], layout: ModelLayout) -> Arrays:
        """Each shard's arrays -> the whole model (for the final model); refuses parts that
        do not fit the shard layouts."""
        if len(parts) != self.shards:
            raise MalformedInputError(f"{len(parts)} shard parts, expected {self.shards}")
        whole: Arrays = {}
        for name, spec in layout.specs.items():
            if not spec.table:
                whole[name] = np.array(parts[self.dense_shard][name], copy=True)
                continue
            table = np.empty(spec.shape, spec.dtype)
            for shard, part in enumerate(parts):
                first = (shard - self._offset(layout, name)) % self.shards
                table[first :: self.shards] = part[name]
            whole[name] = table
        for name, spec in layout.specs.items():
            if tuple(whole[name].shape) != spec.shape:
                raise MalformedInputError(f"{name}: joined shape does not fit the layout")
        return whole

    def split_sparse(
        self, layout: ModelLayout, table: str, rows: SparseRows
    ) -> dict[int, SparseRows]:
        """Ascending global rows with values -> per-shard rows in local ids."""
        if self.shards == 1:
            return (
                {0: SparseRows(np.asarray(rows.row_ids, ROW_ID_DTYPE), rows.values)}
                if len(rows)
                else {}
            )
        return {
            shard: SparseRows(local, rows.values[positions])
            for shard, (positions, local) in self.split_rows(layout, table, rows.row_ids).items()
        }

    def _check_shard(self, shard: int) -> None:
        if not 0 <= shard < self.shards:
            raise ConfigError(f"shard {shard} outside [0, {self.shards})")
