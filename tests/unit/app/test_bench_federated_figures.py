"""The federated benchmark's library: the figures it assembles and the Criteo file it writes."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from enclaverec.app.bench_federated import (
    BenchFederatedConfig,
    layout_figures,
    overhead_figures,
    predicted_sparse_bytes,
    round_time_figures,
    touched_row_figures,
    write_synthetic_criteo,
)
from enclaverec.arrays import ModelLayout
from enclaverec.data.criteo import iter_criteo_examples
from enclaverec.data.hashing import MISSING_ROW, CategoryHashing
from enclaverec.data.synthetic import generate
from enclaverec.errors import ConfigError, MetricsReportError, TrainingError


def test_the_configuration_checks_values_for_every_caller():
    with pytest.raises(ConfigError, match="--rounds must be at least 2"):
        BenchFederatedConfig(rounds=1)
    with pytest.raises(ConfigError, match="--dataset must be one of synthetic, movielens-100k"):
        BenchFederatedConfig(dataset="imagenet")


# --- result assembly --------------------------------------------------------------------------


def test_round_1_is_kept_apart():
    figures = round_time_figures([9.0, 1.0, 4.0, 1.5])
    assert figures["round_1_seconds"] == 9.0
    assert figures["later_rounds"] == 3
    assert figures["later_mean_seconds"] == pytest.approx(6.5 / 3)
    assert figures["later_median_seconds"] == 1.5


def test_one_round_cannot_be_timed():
    with pytest.raises(TrainingError, match="at least 2"):
        round_time_figures([3.0])


def _run(tee: str, rounds: list[float], wall: float) -> dict:
    return {"tee": tee, "round_seconds": rounds, "wall_seconds": wall}


def test_overhead_pools_later_rounds_of_every_run_per_mode():
    runs = [
        _run("none", [5.0, 1.0, 2.0], 10.0),
        _run("simulated", [8.0, 2.0, 3.0], 14.0),
        _run("none", [7.0, 3.0, 4.0], 12.0),
        _run("simulated", [6.0, 4.0, 9.0], 16.0),
    ]
    figures = overhead_figures(runs)
    none, simulated = figures["by_tee"]["none"], figures["by_tee"]["simulated"]
    assert (none["runs"], none["later_rounds"]) == (2, 4)
    assert none["later_mean_seconds"] == pytest.approx(2.5)
    assert simulated["later_median_seconds"] == pytest.approx(statistics.median([2, 3, 4, 9]))
    assert figures["round_time_ratio_mean"] == pytest.approx(4.5 / 2.5)
    assert figures["round_time_ratio_median"] == pytest.approx(3.5 / 2.5)
    assert figures["round_1_ratio"] == pytest.approx(7.0 / 6.0)
    assert figures["round_1_extra_seconds"] == pytest.approx(1.0)
    assert figures["wall_ratio"] == pytest.approx(15.0 / 11.0)


def test_overhead_needs_both_modes():
    with pytest.raises(TrainingError, match="--tee simulated"):
        overhead_figures([_run("none", [1.0, 1.0], 2.0)])


def test_layout_sizes_and_touched_rows():
    arrays = {
        "bottom/kernel": np.zeros((3, 4), np.float32),
        "embedding/a": np.zeros((10, 4), np.float32),
        "embedding/b": np.zeros((5, 4), np.float32),
    }
    layout = ModelLayout.of(arrays, tables=["embedding/a", "embedding/b"])
    info = layout_figures(layout, {"embedding/a": "a", "embedding/b": "b"})
    assert info["model_bytes"] == (12 + 40 + 20) * 4
    assert info["embedding_bytes"] == 60 * 4
    assert info["dense_layer_bytes"] == 12 * 4
    assert info["row_bytes"] == {"a": 16, "b": 16}

    rows = {"p0": np.array([[1, 0], [1, 2], [3, 2]]), "p1": np.array([[0, 0], [0, 0], [0, 1]])}
    touched = touched_row_figures(rows, ["a", "b"], [10, 5])
    assert touched["embedding_rows"] == 15
    assert touched["parties"]["p0"]["per_feature"] == {"a": 2, "b": 2}
    assert touched["parties"]["p1"]["touched_rows"] == 3
    assert touched["mean_fraction"] == pytest.approx((4 / 15 + 3 / 15) / 2)
    # Numbers alone: the dense layer, then each touched row's values and its 8-byte id.
    assert predicted_sparse_bytes(info, {"a": 2, "b": 2}) == 48 + 4 * (16 + 8)


def test_layout_table_without_a_feature_is_refused():
    layout = ModelLayout.of({"embedding/x": np.zeros((2, 2), np.float32)}, tables=["embedding/x"])
    with pytest.raises(MetricsReportError, match="embedding/x"):
        layout_figures(layout, {})


# --- the Criteo file ---------------------------------------------------------------------------


def test_synthetic_rows_read_back_through_the_criteo_reader(tmp_path):
    rows, size = 500, 1000
    path = write_synthetic_criteo(tmp_path / "rows.tsv", rows)
    original = generate().examples
    hashing = CategoryHashing.uniform(26, size)
    (read,) = list(iter_criteo_examples([path], hashing=hashing, batch_size=rows))
    np.testing.assert_array_equal(read.labels, original.labels[:rows])
    np.testing.assert_allclose(read.dense, original.dense[:rows], rtol=1e-6)
    for feature in range(26):
        ours, theirs = original.categorical[:rows, feature], read.categorical[:, feature]
        # Missing stays missing, and a category always lands on the same row.
        np.testing.assert_array_equal(ours == 0, theirs == MISSING_ROW)
        assert len(set(zip(ours.tolist(), theirs.tolist(), strict=True))) == len(set(ours.tolist()))


# --- end to end ----------------------------------------------------------------------------------
