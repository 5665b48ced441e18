"""Summaries of data sets for ``data inspect``: counts, label rates, cardinalities, digests.

A summary holds counts and digests only, never a row or a category value: it can be
printed and shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from enclaverec.data.schema import DataSet, Examples, split_sha256
from enclaverec.data.split import SPLIT_NAMES

# Info keys a summary repeats (the rest is source detail, or large).
_INFO_KEYS = (
    "seed",
    "oracle_auc",
    "oracle_logloss",
    "user_feature",
    "bad_lines_skipped",
    "bad_line_examples",
    "files",
    "hashing",
    "partition",
    "global_test_split_sha256",
)


def _rate(examples: Examples) -> float | None:
    return round(float(np.mean(examples.labels)), 6) if len(examples) else None


def describe_dataset(dataset: DataSet) -> dict[str, Any]:
    """Rows and positive rate per split, per-feature cardinality seen (distinct rows used,
    over all splits) and missing rate (row 0), and ``test_split_sha256``."""
    splits = {name: getattr(dataset, name) for name in SPLIT_NAMES}
    categorical = np.concatenate([s.categorical for s in splits.values()])
    total = len(categorical)
    features = []
    for j, (name, size) in enumerate(
        zip(dataset.spec.categorical_names, dataset.spec.table_sizes, strict=True)
    ):
        column = categorical[:, j]
        features.append(
            {
                "name": name,
                "table_size": int(size),
                "distinct_rows_seen": int(len(np.unique(column))),
                "row0_rate": round(float(np.mean(column == 0)), 6) if total else None,
            }
        )
    summary: dict[str, Any] = {
        "dataset": dataset.name,
        "rows": {name: len(s) for name, s in splits.items()} | {"total": total},
        "positive_rate": {name: _rate(s) for name, s in splits.items()},
        "dense_features": list(dataset.spec.dense_names),
        "categorical_features": features,
        "test_split_sha256": split_sha256(dataset.test.row_ids),
    }
    summary.update({key: dataset.info[key] for key in _INFO_KEYS if key in dataset.info})
    return summary


def describe_parties(parties: Sequence[DataSet], partition: dict[str, Any]) -> dict[str, Any]:
    """A partitioned data set: each party's rows and label rate, and whether the parties'
    test rows together are exactly the global test split."""
    union = np.concatenate([p.test.row_ids for p in parties]) if parties else np.zeros(0)
    union_sha = split_sha256(union)
    expected = partition.get("global_test_split_sha256")
    return {
        "dataset": partition.get("dataset"),
        "mode": partition.get("mode"),
        "parties": len(parties),
        "seed": partition.get("seed"),
        "partition_seed": partition.get("partition_seed"),
        "global_test_split_sha256": expected,
        "union_test_split_sha256": union_sha,
        "union_is_global_test_split": union_sha == expected and len(np.unique(union)) == len(union),
        "party": [
            {
                "party": i,
                "rows": {name: len(getattr(p, name)) for name in SPLIT_NAMES},
                "positive_rate": {name: _rate(getattr(p, name)) for name in SPLIT_NAMES},
                "test_split_sha256": split_sha256(p.test.row_ids),
            }
            for i, p in enumerate(parties)
        ],
    }
