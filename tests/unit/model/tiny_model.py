"""A tiny DLRM's features and random examples for the model's unit tests."""

from __future__ import annotations

import numpy as np

from enclaverec.data.schema import Examples, FeatureSpec
from enclaverec.dlrm.config import DLRMConfig

TABLE_SIZES = (7, 5, 11)
SPEC = FeatureSpec(
    dense_names=("d0", "d1", "d2"),
    categorical_names=("user", "item", "genre"),
    table_sizes=TABLE_SIZES,
)
CONFIG = DLRMConfig(embedding_dim=4, bottom_units=(6, 4), top_units=(5, 1))


def make_examples(rows: int, *, seed: int = 0, id_limit: int | None = None) -> Examples:
    """Random rows; ``id_limit`` keeps every id below it, so higher rows are never used."""
    rng = np.random.default_rng(seed)
    limits = [min(size, id_limit or size) for size in TABLE_SIZES]
    categorical = np.stack([rng.integers(0, limit, rows) for limit in limits], axis=1)
    return Examples(
        dense=rng.normal(size=(rows, 3)).astype(np.float32),
        categorical=categorical.astype(np.int32),
        labels=(rng.random(rows) < 0.4).astype(np.float32),
        row_ids=np.arange(rows, dtype=np.int64),
    )
