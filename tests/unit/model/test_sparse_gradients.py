"""The DLRM's sparse gradients from pulled rows: one step equals the trainer's step, and
synchronous distributed training (W workers, P shards, loopback) reproduces ``train``'s
model after N steps up to floating-point summation order."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from tiny_model import make_examples

from enclaverec.arrays import ModelLayout
from enclaverec.dlrm.config import OptimizerKind
from enclaverec.dlrm.weights import EMBEDDING_PREFIX
from enclaverec.gradients import PulledBatch, TableBatch, batch_ids
from enclaverec.model.dlrm_trainer import DLRMTrainer, DLRMTrainerConfig
from enclaverec.model.sparse_gradients import DLRMGradients
from enclaverec.paramservice.optimizers import ServerOptimizerKind, make_server_optimizer
from enclaverec.schedule import StepSchedule
from enclaverec.training import CentralizedConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
from steps_helpers import run_distributed  # noqa: E402


def layout_of(arrays) -> ModelLayout:
    return ModelLayout.of(arrays, tables=[n for n in arrays if n.startswith(EMBEDDING_PREFIX)])


@pytest.mark.parametrize("optimizer", list(OptimizerKind))
def test_one_step_equals_the_trainer_step(spec, config, optimizer):
    examples = make_examples(48, seed=2)
    trainer = DLRMTrainer(spec, DLRMTrainerConfig(config, optimizer, init_seed=3), examples)
    initial = trainer.initial_arrays()
    fit = CentralizedConfig(epochs=1, patience=None, batch_size=48, learning_rate=0.1)
    expected, _ = trainer.fit(initial, fit.fit_config(0))

    gradients = DLRMGradients(spec, config)
    ids = batch_ids(examples, gradients.table_names())
    layout = layout_of(initial)
    batch = PulledBatch(
        examples,
        {name: initial[name] for name in layout.dense_names},
        tuple(TableBatch(n, u, inv, initial[n][u]) for n, (u, inv) in ids.items()),
    )
    result = gradients.gradients(batch)
    # The worker holds the MLPs' weights and nothing else: no table, no optimizer slot.
    held = [*gradients.dense_arch.weights, *gradients.over_arch.weights]
    assert sum(int(np.prod(w.shape)) for w in held) == sum(
        initial[name].size for name in layout.dense_names
    )
    assert not gradients.interaction_arch.weights
    assert set(result.tables) == set(layout.table_names)
    for name, rows in result.tables.items():
        assert np.array_equal(rows.row_ids, ids[name][0])  # only the rows the batch used
    arrays = {name: value.copy() for name, value in initial.items()}
    rule = make_server_optimizer(ServerOptimizerKind(optimizer.value), layout)
    rule.apply(arrays, result.dense, result.tables, 0.1)
    for name, value in expected.items():
        np.testing.assert_allclose(arrays[name], value, rtol=0, atol=2e-6, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("barrier_in_pull", [False, True], ids=["await-step", "push-and-pull"])
def test_sync_distributed_reproduces_train_after_n_steps(spec, config, shards, barrier_in_pull):
    train = make_examples(100, seed=5)
    lr, batch, seed, epochs = 0.05, 16, 7, 2
    central = DLRMTrainer(
        spec, DLRMTrainerConfig(config, OptimizerKind.ADAGRAD, init_seed=1), train
    )
    initial = central.initial_arrays()
    plan = CentralizedConfig(
        epochs=epochs, patience=None, batch_size=batch, learning_rate=lr, seed=seed
    )
    arrays = initial
    for epoch in range(epochs):  # what train_centralized runs, without the evaluation
        arrays, _ = central.fit(arrays, plan.fit_config(epoch))
    schedule = StepSchedule(train_rows=len(train), batch_size=batch, seed=seed, epochs=epochs)
    model, runs = run_distributed(
        train,
        initial,
        layout_of(initial),
        lambda: DLRMGradients(spec, config),
        schedule,
        workers=2,
        shards=shards,
        optimizer=ServerOptimizerKind.ADAGRAD,
        learning_rate=lr,
        barrier_in_pull=barrier_in_pull,  # True: the worker role's loop
    )
    diff = max(float(np.max(np.abs(model[n] - arrays[n]))) for n in arrays)
    moved = min(float(np.max(np.abs(arrays[n] - initial[n]))) for n in arrays)
    print(
        f"sync W=2 P={shards} ({'push and pull' if barrier_in_pull else 'await step'}): "
        f"{schedule.total_steps} steps, max |distributed - train| = "
        f"{diff:.3g} (smallest max move of an array {moved:.3g})"
    )
    assert diff < 1e-5
    assert moved > 100 * diff
    assert all(run.steps == schedule.total_steps for run in runs)
