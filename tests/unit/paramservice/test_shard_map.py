"""The shard map: every row on exactly one shard, round trips, the dense shard, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, SparseRows
from enclaverec.errors import ConfigError, MalformedInputError
from enclaverec.paramservice.shards import ShardMap


def model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "bottom/0/kernel": rng.standard_normal((3, 4)).astype(np.float32),
        "embedding/C1": rng.standard_normal((11, 4)).astype(np.float32),
        "embedding/C2": rng.standard_normal((7, 4)).astype(np.float32),
        "top/0/bias": rng.standard_normal(1).astype(np.float32),
    }


def layout() -> ModelLayout:
    return ModelLayout.of(model(), tables=["embedding/C1", "embedding/C2"])


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_split_and_join_round_trip_bit_for_bit(shards):
    shard_map = ShardMap(shards=shards, dense_shard=shards - 1)
    parts = shard_map.split_model(model(), layout())
    assert sum(len(p["embedding/C1"]) for p in parts) == 11
    assert [("bottom/0/kernel" in p) for p in parts] == [s == shards - 1 for s in range(shards)]
    for shard, part in enumerate(parts):
        assert list(part) == list(shard_map.shard_layout(layout(), shard).names)
    joined = shard_map.join_model(parts, layout())
    for name, value in model().items():
        assert np.array_equal(joined[name], value)


def test_rows_map_to_local_ids_and_back():
    shard_map = ShardMap(shards=3)
    rows = np.arange(11, dtype=np.int64)
    groups = shard_map.split_rows(layout(), "embedding/C2", rows)
    seen = np.concatenate([positions for positions, _ in groups.values()])
    assert sorted(seen.tolist()) == rows.tolist()
    whole = model()["embedding/C2"]
    parts = shard_map.split_model(model(), layout())
    for shard, (positions, local) in groups.items():
        back = shard_map.global_rows(layout(), "embedding/C2", shard, local)
        assert np.array_equal(back, rows[positions])
        valid = positions[rows[positions] < 7]
        local_valid = shard_map.local_rows(rows[valid])
        assert np.array_equal(parts[shard]["embedding/C2"][local_valid], whole[rows[valid]])


def test_row_zero_of_each_table_lands_on_different_shards():
    shard_map = ShardMap(shards=2)
    zero = np.zeros(1, np.int64)
    assert shard_map.shard_of(layout(), "embedding/C1", zero)[0] == 0
    assert shard_map.shard_of(layout(), "embedding/C2", zero)[0] == 1


def test_split_sparse_keeps_values_with_their_rows():
    shard_map = ShardMap(shards=2)
    rows = SparseRows(np.array([1, 2, 5], np.int64), np.arange(12, dtype=np.float32).reshape(3, 4))
    parts = shard_map.split_sparse(layout(), "embedding/C1", rows)
    assert parts[1].row_ids.tolist() == [0, 2] and parts[1].values[1, 0] == 8
    assert parts[0].row_ids.tolist() == [1] and parts[0].values[0, 0] == 4


def test_one_shard_holds_every_row_under_its_global_id():
    # The one-shard shortcut (no grouping per step) gives what the striping rule gives.
    shard_map = ShardMap(shards=1)
    rows = np.array([0, 3, 6], np.int32)
    ((shard, (positions, local)),) = shard_map.split_rows(layout(), "embedding/C2", rows).items()
    assert shard == 0 and positions.tolist() == [0, 1, 2] and local.dtype == np.int64
    assert np.array_equal(local, shard_map.local_rows(rows))
    assert shard_map.split_rows(layout(), "embedding/C2", np.zeros(0, np.int64)) == {}
    values = np.ones((3, 4), np.float32)
    (part,) = shard_map.split_sparse(layout(), "embedding/C2", SparseRows(rows, values)).values()
    assert part.row_ids.tolist() == [0, 3, 6] and part.row_ids.dtype == np.int64
    assert np.array_equal(part.values, values)


def test_toml_round_trip_and_refusals():
    shard_map = ShardMap(shards=4, dense_shard=2)
    assert ShardMap.from_dict(shard_map.to_dict()) == shard_map
    with pytest.raises(ConfigError, match="dense_shard must be in"):
        ShardMap(shards=2, dense_shard=2)
    with pytest.raises(ConfigError, match="shards must be in"):
        ShardMap(shards=0)
    with pytest.raises(ConfigError, match="shards must be an integer"):
        ShardMap(shards=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown shard map keys"):
        ShardMap.from_dict({"shards": 2, "dense": 0})
    with pytest.raises(ConfigError, match="striped"):
        ShardMap.from_dict({"shards": 2, "rows": "ranges"})
    with pytest.raises(ConfigError, match="fewer than the 8 shards"):
        ShardMap(shards=8).split_model(model(), layout())
    with pytest.raises(MalformedInputError, match="2 shard parts, expected 3"):
        ShardMap(shards=3).join_model([{}, {}], layout())
