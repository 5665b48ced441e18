"""The in-memory form of a data set that every trainer consumes.

Every source (Criteo TSV, synthetic, MovieLens-100K, encrypted files) ends in these types,
so the model, the parties and the workers see one format:

- ``FeatureSpec``: how many dense features, which categorical features and the embedding
  table size of each (a category is already mapped to a row id in ``[0, table_size)``).
- ``Examples``: N rows as numpy arrays. ``row_ids`` are the rows' global indices in the
  data set; the split and ``test_split_sha256`` are computed from them.
- ``DataSet``: the three splits, produced by a pure function of (data set, seed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DENSE_DTYPE = np.float32
SPARSE_DTYPE = np.int32
LABEL_DTYPE = np.float32
ROW_ID_DTYPE = np.int64


@dataclass(frozen=True)
class FeatureSpec:
    """Names and sizes of the features; identical for every party of a federation."""

    dense_names: tuple[str, ...]
    categorical_names: tuple[str, ...]
    table_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.categorical_names) != len(self.table_sizes):
            raise ValueError("one table size per categorical feature is required")
        if any(size <= 0 for size in self.table_sizes):
            raise ValueError("table sizes must be positive")

    @property
    def num_dense(self) -> int:
        return len(self.dense_names)

    @property
    def num_categorical(self) -> int:
        return len(self.categorical_names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dense_names": list(self.dense_names),
            "categorical_names": list(self.categorical_names),
            "table_sizes": list(self.table_sizes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(
            dense_names=tuple(data["dense_names"]),
            categorical_names=tuple(data["categorical_names"]),
            table_sizes=tuple(int(size) for size in data["table_sizes"]),
        )


@dataclass(frozen=True)
class Examples:
    """N rows: ``dense`` float32 [N, num_dense] (already transformed, e.g. log1p),
    ``categorical`` int32 [N, num_categorical] (row ids), ``labels`` float32 [N] in {0, 1},
    ``row_ids`` int64 [N] (global row index in the data set)."""

    dense: np.ndarray
    categorical: np.ndarray
    labels: np.ndarray
    row_ids: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.labels)
        if not (len(self.dense) == len(self.categorical) == len(self.row_ids) == n):
            raise ValueError("dense, categorical, labels and row_ids must have the same length")

    def __len__(self) -> int:
        return len(self.labels)

    def slice(self, start: int, stop: int) -> Examples:
        """Rows ``start:stop`` as views (no copy): for cutting batches."""
        return Examples(
            dense=self.dense[start:stop],
            categorical=self.categorical[start:stop],
            labels=self.labels[start:stop],
            row_ids=self.row_ids[start:stop],
        )

    def take(self, indices: np.ndarray) -> Examples:
        return Examples(
            dense=self.dense[indices],
            categorical=self.categorical[indices],
            labels=self.labels[indices],
            row_ids=self.row_ids[indices],
        )

    def batches(self, batch_size: int, *, shuffle_seed: int | None = None) -> Iterator[Examples]:
        """Consecutive batches (the last one may be short), optionally in a seeded order."""
        order = np.arange(len(self))
        if shuffle_seed is not None:
            order = np.random.default_rng(shuffle_seed).permutation(len(self))
        for start in range(0, len(self), batch_size):
            yield self.take(order[start : start + batch_size])

    @staticmethod
    def concatenate(parts: list[Examples]) -> Examples:
        return Examples(
            dense=np.concatenate([p.dense for p in parts]),
            categorical=np.concatenate([p.categorical for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            row_ids=np.concatenate([p.row_ids for p in parts]),
        )


def split_sha256(row_ids: np.ndarray) -> str:
    """SHA-256 of the sorted row ids (int64, little-endian): ``test_split_sha256`` of §4."""
    ordered = np.sort(np.asarray(row_ids, dtype=ROW_ID_DTYPE)).astype("<i8")
    return hashlib.sha256(ordered.tobytes()).hexdigest()


@dataclass(frozen=True)
class DataSet:
    """A data set's three splits. ``name`` is the §4 ``dataset`` value (``synthetic``,
    ``movielens-100k``, ``criteo:<file name>``); ``info`` carries source-specific facts
    (for ``synthetic``: ``oracle_auc``)."""

    name: str
    spec: FeatureSpec
    train: Examples
    validation: Examples
    test: Examples
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SourceRows:
    """What a built-in data set's loader gives before the split: its features, every row
    (with global row ids), the facts it records in ``DataSet.info``, and, for a data set
    with a planted model, that model's probability of a positive label per row (scored
    on the test split as ``oracle_auc``)."""

    spec: FeatureSpec
    examples: Examples
    info: Mapping[str, Any]
    probabilities: np.ndarray | None = None


@dataclass(frozen=True)
class BuiltinDataSet:
    """One entry of the data set registry (:mod:`enclaverec.data.registry`): the name of
    ``--dataset NAME``, a one-line description for help texts, and the loader (whose
    ``info`` names the ``user_feature`` when the data set has one, for ``by-user``
    partitions)."""

    name: str
    summary: str
    load: Callable[[], SourceRows]
