from __future__ import annotations

import numpy as np
import pytest

from enclaverec.arrays import ModelLayout, ModelUpdate, sparsify
from enclaverec.federated.aggregate import (
    ServerOptimizerConfig,
    ServerOptimizerKind,
    ServerOptimizerState,
    apply_server_optimizer,
)
from enclaverec.paramservice.combine import weighted_mean as fedavg

ROWS, DIM = 50, 4


@pytest.fixture
def layout() -> ModelLayout:
    arrays = {
        "bottom/0/kernel": np.zeros((3, 2), np.float32),
        "embedding/C2": np.zeros((ROWS, DIM), np.float32),
    }
    return ModelLayout.of(arrays, tables=["embedding/C2"])


def random_update(layout: ModelLayout, rng: np.random.Generator, samples: int) -> ModelUpdate:
    full = {}
    for name, spec in layout.specs.items():
        value = rng.normal(size=spec.shape).astype(np.float32)
        if spec.table:
            value[rng.random(spec.shape[0]) < 0.7] = 0.0
        full[name] = value
    return sparsify(full, layout, samples)


@pytest.mark.parametrize("kind", list(ServerOptimizerKind))
def test_server_optimizer_is_lazy_on_tables(layout, kind):
    rng = np.random.default_rng(3)
    arrays = {n: rng.normal(size=s.shape).astype(np.float32) for n, s in layout.specs.items()}
    config = ServerOptimizerConfig(kind=kind)
    state = ServerOptimizerState.zeros(layout, config)
    before = {n: a.copy() for n, a in arrays.items()}
    v_before = state.v["embedding/C2"].copy()
    average = fedavg([random_update(layout, rng, 4)], layout)
    apply_server_optimizer(arrays, average, state, config)
    rows = average.sparse["embedding/C2"].row_ids
    untouched = np.setdiff1d(np.arange(ROWS), rows)
    assert len(untouched) > 0
    assert np.array_equal(arrays["embedding/C2"][untouched], before["embedding/C2"][untouched])
    assert np.array_equal(state.v["embedding/C2"][untouched], v_before[untouched])
    assert not np.array_equal(arrays["embedding/C2"][rows], before["embedding/C2"][rows])
    assert not np.array_equal(arrays["bottom/0/kernel"], before["bottom/0/kernel"])


def test_fedadam_first_step_matches_the_paper():
    # Reddi et al. 2021, Algorithm 2, one step from m=0, v=tau^2 on a single weight.
    arrays = {"w": np.array([1.0], np.float32)}
    layout = ModelLayout.of(arrays, tables=[])
    config = ServerOptimizerConfig(
        ServerOptimizerKind.FEDADAM, eta=0.1, beta1=0.9, beta2=0.99, tau=1e-3
    )
    state = ServerOptimizerState.zeros(layout, config)
    apply_server_optimizer(
        arrays, ModelUpdate(dense={"w": np.array([0.5], np.float32)}, num_samples=1), state, config
    )
    m = 0.1 * 0.5
    v = 0.99 * 1e-6 + 0.01 * 0.25
    np.testing.assert_allclose(arrays["w"], 1.0 + 0.1 * m / (np.sqrt(v) + 1e-3), rtol=1e-6)


def test_fedyogi_second_moment_moves_additively():
    arrays = {"w": np.zeros(1, np.float32)}
    layout = ModelLayout.of(arrays, tables=[])
    config = ServerOptimizerConfig(ServerOptimizerKind.FEDYOGI, beta2=0.99, tau=1e-3)
    state = ServerOptimizerState.zeros(layout, config)
    apply_server_optimizer(
        arrays, ModelUpdate(dense={"w": np.array([2.0], np.float32)}, num_samples=1), state, config
    )
    # v = v0 - (1 - beta2) * g^2 * sign(v0 - g^2) = 1e-6 + 0.01 * 4
    np.testing.assert_allclose(state.v["w"], 1e-6 + 0.04)
