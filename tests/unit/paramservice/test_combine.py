from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, ModelUpdate, SparseRows, densify, sparsify
from enclaverec.errors import AggregationRefusedError
from enclaverec.paramservice.combine import (
    RowNormalisation,
    apply_update,
    check_update,
    check_updates,
)
from enclaverec.paramservice.combine import weighted_mean as fedavg

ROWS, DIM = 50, 4


@pytest.fixture
def layout() -> ModelLayout:
    arrays = {
        "bottom/0/kernel": np.zeros((3, 2), np.float32),
        "bottom/0/bias": np.zeros((2,), np.float32),
        "embedding/C1": np.zeros((ROWS, DIM), np.float32),
        "embedding/C2": np.zeros((ROWS, DIM), np.float32),
    }
    return ModelLayout.of(arrays, tables=["embedding/C1", "embedding/C2"])


def random_update(layout: ModelLayout, rng: np.random.Generator, samples: int) -> ModelUpdate:
    full = {}
    for name, spec in layout.specs.items():
        value = rng.normal(size=spec.shape).astype(np.float32)
        if spec.table:
            untouched = rng.random(spec.shape[0]) < 0.7
            value[untouched] = 0.0
        full[name] = value
    return sparsify(full, layout, samples)


def test_sparse_fedavg_equals_dense_fedavg_exactly(layout):
    rng = np.random.default_rng(1)
    updates = [random_update(layout, rng, n) for n in (10, 250, 37)]
    dense_updates = [
        ModelUpdate(dense=densify(u, layout), num_samples=u.num_samples) for u in updates
    ]
    sparse_avg = fedavg(updates, layout)
    dense_avg = fedavg(dense_updates, layout)
    assert set(sparse_avg.sparse) == {"embedding/C1", "embedding/C2"}
    assert not dense_avg.sparse
    for name in layout.names:
        assert np.array_equal(densify(sparse_avg, layout)[name], dense_avg.dense[name]), name
    # And both are the sample-weighted mean.
    weights = np.array([u.num_samples for u in updates], np.float64)
    for name in layout.names:
        stacked = np.stack([densify(u, layout)[name].astype(np.float64) for u in updates])
        expected = np.tensordot(weights, stacked, axes=1) / weights.sum()
        np.testing.assert_allclose(dense_avg.dense[name], expected.astype(np.float32), rtol=1e-6)


def test_row_touched_by_one_party_is_scaled_by_all_weights(layout):
    base = {n: np.zeros(s.shape, np.float32) for n, s in layout.specs.items()}
    a = dict(base)
    a["embedding/C1"] = base["embedding/C1"].copy()
    a["embedding/C1"][7] = 1.0
    update_a = sparsify(a, layout, 30)
    update_b = sparsify(base, layout, 10)
    average = fedavg([update_a, update_b], layout)
    assert average.sparse["embedding/C1"].row_ids.tolist() == [7]
    np.testing.assert_allclose(average.sparse["embedding/C1"].values, 0.75)
    touching = fedavg(
        [update_a, update_b], layout, row_normalisation=RowNormalisation.TOUCHING_CONTRIBUTORS
    )
    np.testing.assert_allclose(touching.sparse["embedding/C1"].values, 1.0)


def test_apply_update_touches_only_sent_rows(layout):
    rng = np.random.default_rng(2)
    arrays = {n: rng.normal(size=s.shape).astype(np.float32) for n, s in layout.specs.items()}
    before = {n: a.copy() for n, a in arrays.items()}
    update = random_update(layout, rng, 5)
    apply_update(arrays, update)
    rows = update.sparse["embedding/C1"].row_ids
    untouched = np.setdiff1d(np.arange(ROWS), rows)
    assert np.array_equal(arrays["embedding/C1"][untouched], before["embedding/C1"][untouched])
    np.testing.assert_allclose(
        arrays["embedding/C1"][rows],
        before["embedding/C1"][rows] + update.sparse["embedding/C1"].values,
    )


# --- the pre-check: each refusal with its message ---------------------------------------


def good_update(layout: ModelLayout) -> ModelUpdate:
    return random_update(layout, np.random.default_rng(4), 8)


def test_accepts_a_well_formed_update(layout):
    check_update(good_update(layout), layout)


def test_refuses_unknown_name(layout):
    update = good_update(layout)
    dense = dict(update.dense, **{"extra/kernel": np.zeros(2, np.float32)})
    with pytest.raises(AggregationRefusedError, match="unknown array names"):
        check_update(ModelUpdate(dense, update.sparse, 8), layout)


def test_refuses_missing_name(layout):
    update = good_update(layout)
    dense = {k: v for k, v in update.dense.items() if k != "bottom/0/bias"}
    with pytest.raises(AggregationRefusedError, match="missing array names"):
        check_update(ModelUpdate(dense, update.sparse, 8), layout)


def test_refuses_wrong_shape(layout):
    update = good_update(layout)
    dense = dict(update.dense, **{"bottom/0/bias": np.zeros(3, np.float32)})
    with pytest.raises(
        AggregationRefusedError, match=r"bottom/0/bias: got float32\[3\], expected float32\[2\]"
    ):
        check_update(ModelUpdate(dense, update.sparse, 8), layout)


def test_refuses_wrong_dtype(layout):
    update = good_update(layout)
    dense = dict(update.dense, **{"bottom/0/bias": np.zeros(2, np.float64)})
    with pytest.raises(AggregationRefusedError, match="got float64"):
        check_update(ModelUpdate(dense, update.sparse, 8), layout)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_refuses_non_finite_dense(layout, bad):
    update = good_update(layout)
    value = update.dense["bottom/0/kernel"].copy()
    value[0, 0] = bad
    dense = dict(update.dense, **{"bottom/0/kernel": value})
    with pytest.raises(AggregationRefusedError, match="non-finite"):
        check_update(ModelUpdate(dense, update.sparse, 8), layout)


def test_refuses_non_finite_rows(layout):
    update = good_update(layout)
    rows = update.sparse["embedding/C1"]
    values = rows.values.copy()
    values[0, 0] = np.nan
    sparse = dict(update.sparse, **{"embedding/C1": SparseRows(rows.row_ids, values)})
    with pytest.raises(AggregationRefusedError, match="embedding/C1: non-finite"):
        check_update(ModelUpdate(update.dense, sparse, 8), layout)


@pytest.mark.parametrize(
    "ids, message",
    [
        ([ROWS], "outside"),
        ([-1], "outside"),
        ([3, 3], "unique and ascending"),
        ([5, 2], "unique and ascending"),
    ],
)
def test_refuses_bad_row_ids(layout, ids, message):
    update = good_update(layout)
    rows = SparseRows(np.array(ids, np.int64), np.zeros((len(ids), DIM), np.float32))
    sparse = dict(update.sparse, **{"embedding/C1": rows})
    with pytest.raises(AggregationRefusedError, match=message):
        check_update(ModelUpdate(update.dense, sparse, 8), layout)


def test_refuses_sparse_rows_for_a_dense_array(layout):
    update = good_update(layout)
    dense = {k: v for k, v in update.dense.items() if k != "bottom/0/kernel"}
    sparse = dict(
        update.sparse,
        **{"bottom/0/kernel": SparseRows(np.array([0]), np.zeros((1, 2), np.float32))},
    )
    with pytest.raises(AggregationRefusedError, match="not a table"):
        check_update(ModelUpdate(dense, sparse, 8), layout)


def test_refuses_norm_above_bound(layout):
    update = good_update(layout)
    check_update(update, layout, norm_bound=1e6)
    with pytest.raises(AggregationRefusedError, match="exceeds the bound"):
        check_update(update, layout, norm_bound=1e-3)


@pytest.mark.parametrize("samples", [0, -5])
def test_refuses_non_positive_weight(layout, samples):
    update = good_update(layout)
    with pytest.raises(AggregationRefusedError, match="positive sample count"):
        check_update(ModelUpdate(update.dense, update.sparse, samples), layout)


def test_refuses_empty_round(layout):
    with pytest.raises(AggregationRefusedError, match="zero total weight"):
        check_updates([], layout)


def test_names_the_contributor(layout):
    update = good_update(layout)
    bad = ModelUpdate(update.dense, update.sparse, 0)
    with pytest.raises(AggregationRefusedError, match="party-2"):
        check_updates([update, bad], layout, contributors=["party-1", "party-2"])


def test_a_table_touched_almost_everywhere_travels_whole_and_averages_the_same(layout):
    rng = np.random.default_rng(9)
    full = {n: rng.normal(size=s.shape).astype(np.float32) for n, s in layout.specs.items()}
    full["embedding/C2"][:3] = 0.0  # 47 of 50 rows touched: rows + ids outweigh the table
    mostly_sparse = sparsify(full, layout, 5)
    smallest = sparsify(full, layout, 5, dense_when_smaller=True)
    assert "embedding/C2" in mostly_sparse.sparse and "embedding/C2" in smallest.dense
    assert smallest.nbytes < mostly_sparse.nbytes
    other = random_update(layout, rng, 7)
    a = densify(fedavg([mostly_sparse, other], layout), layout)
    b = densify(fedavg([smallest, other], layout), layout)
    assert all(np.array_equal(a[name], b[name]) for name in a)
