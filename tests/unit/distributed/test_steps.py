"""Workers' step loops against parameter shards over loopback (numpy logistic regression):
synchronous mode equals one process with the global batch, for W workers and P shards;
asynchronous mode with bounded staleness trains; timings and bytes are reported."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from steps_helpers import run_distributed, run_reference

from enclaverec.arrays import ModelLayout
from enclaverec.data.schema import Examples, FeatureSpec
from enclaverec.distributed.steps import StepLoopConfig, WorkerData, shard_training_rows
from enclaverec.errors import ConfigError
from enclaverec.logreg import LogisticRegressionGradients, LogisticRegressionTrainer
from enclaverec.paramservice.optimizers import ServerOptimizerKind
from enclaverec.paramservice.shard import SyncMode
from enclaverec.schedule import StepSchedule

SPEC = FeatureSpec(
    dense_names=("d0", "d1"), categorical_names=("user", "item"), table_sizes=(30, 17)
)


def examples(rows: int = 90, seed: int = 0) -> Examples:
    rng = np.random.default_rng(seed)
    categorical = np.stack([rng.integers(0, 30, rows), rng.integers(0, 17, rows)], axis=1)
    dense = rng.normal(size=(rows, 2)).astype(np.float32)
    logits = dense[:, 0] + (categorical[:, 0] % 3 - 1)
    return Examples(
        dense=dense,
        categorical=categorical.astype(np.int32),
        labels=(rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.float32),
        row_ids=np.arange(rows, dtype=np.int64),
    )


def setup():
    train = examples()
    initial = LogisticRegressionTrainer(SPEC, train, seed=1).initial_arrays()
    initial["embedding/user"] += 0.01  # nonzero tables, so a wrong row shows
    layout = ModelLayout.of(initial, tables=["embedding/user", "embedding/item"])
    return train, initial, layout


@pytest.mark.parametrize("optimizer", list(ServerOptimizerKind))
@pytest.mark.parametrize(("workers", "shards"), [(2, 1), (2, 2), (3, 3)])
@pytest.mark.parametrize("barrier_in_pull", [False, True], ids=["await-step", "push-and-pull"])
def test_sync_equals_one_process_with_the_global_batch(optimizer, workers, shards, barrier_in_pull):
    train, initial, layout = setup()
    schedule = StepSchedule(train_rows=len(train), batch_size=16, seed=4, epochs=2)
    steps = schedule.total_steps  # 12: crosses an epoch and two short last batches
    model, runs = run_distributed(
        train,
        initial,
        layout,
        lambda: LogisticRegressionGradients(SPEC),
        schedule,
        workers=workers,
        shards=shards,
        optimizer=optimizer,
        learning_rate=0.3,
        barrier_in_pull=barrier_in_pull,
    )
    reference = run_reference(
        train,
        initial,
        layout,
        LogisticRegressionGradients(SPEC),
        schedule,
        optimizer=optimizer,
        learning_rate=0.3,
        last=steps,
    )
    for name, value in reference.items():
        np.testing.assert_allclose(model[name], value, rtol=0, atol=1e-6, err_msg=name)
        assert not np.array_equal(value, initial[name]), name  # it did train
    assert sum(run.rows for run in runs) == len(train) * 2
    assert all(run.steps == steps for run in runs)
    timing = runs[0].timings[0]
    assert timing.pulled_bytes > 0 and timing.pushed_bytes > 0
    assert min(t.wait_seconds for run in runs for t in run.timings) >= 0
    # Bytes are counted once per step: each step's pull, whether it travelled alone or
    # with the push of the step before.
    assert all(t.pulled_bytes > 0 for run in runs for t in run.timings if t.rows)


@pytest.mark.parametrize("barrier_in_pull", [False, True], ids=["await-step", "push-and-pull"])
def test_a_worker_with_no_rows_in_some_steps_still_passes_every_barrier(barrier_in_pull):
    train, initial, layout = setup()
    schedule = StepSchedule(train_rows=len(train), batch_size=2, seed=0, epochs=1)
    model, runs = run_distributed(
        train,
        initial,
        layout,
        lambda: LogisticRegressionGradients(SPEC),
        schedule,
        workers=3,
        shards=1,
        optimizer=ServerOptimizerKind.SGD,
        learning_rate=0.1,
        last=10,
        barrier_in_pull=barrier_in_pull,
    )
    assert any(t.rows == 0 for run in runs for t in run.timings)
    assert all(run.steps == 10 for run in runs)
    reference = run_reference(
        train,
        initial,
        layout,
        LogisticRegressionGradients(SPEC),
        schedule,
        optimizer=ServerOptimizerKind.SGD,
        learning_rate=0.1,
        last=10,
    )
    np.testing.assert_allclose(model["linear/kernel"], reference["linear/kernel"], atol=1e-6)


def test_async_with_bounded_staleness_trains():
    train, initial, layout = setup()
    schedule = StepSchedule(train_rows=len(train), batch_size=16, seed=4, epochs=3)
    model, runs = run_distributed(
        train,
        initial,
        layout,
        lambda: LogisticRegressionGradients(SPEC),
        schedule,
        workers=2,
        shards=2,
        optimizer=ServerOptimizerKind.ADAGRAD,
        learning_rate=0.3,
        mode=SyncMode.ASYNC,
        staleness=2,
    )
    first = sum(t.loss_sum for run in runs for t in run.timings if t.step <= 6)
    last = sum(t.loss_sum for run in runs for t in run.timings if t.step > schedule.total_steps - 6)
    assert last < first
    for name in layout.names:
        assert np.all(np.isfinite(model[name]))


def test_worker_data_refusals_and_lookup():
    train = examples(10)
    parts = shard_training_rows(train, 3)
    assert [len(p.examples) for p in parts] == [4, 3, 3]
    assert parts[1].rows_of(np.array([9, 4, 1, 2])).tolist() == [1, 0]  # positions 4, 1
    assert (
        WorkerData(train.take(np.array([], np.int64)), np.array([], np.int64))
        .rows_of(np.array([1]))
        .tolist()
        == []
    )
    with pytest.raises(ConfigError, match="unique and ascending"):
        WorkerData(train.take(np.array([0, 1])), np.array([5, 2]))
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        shard_training_rows(train, 0)
    with pytest.raises(ConfigError, match="outside the schedule"):
        StepLoopConfig(StepSchedule(10, 4), first=2, last=9)


def test_worker_data_of_sorts_rows_by_position():
    train = examples(6)
    data = WorkerData.of(train.take(np.array([4, 0, 2])), np.array([40, 0, 20]))
    assert data.positions.tolist() == [0, 20, 40]
    assert data.examples.row_ids.tolist() == [0, 2, 4]


def test_a_restarted_shard_resumes_from_its_sealed_checkpoint_and_the_run_replays(tmp_path):
    import os

    from enclaverec.distributed.loopback import LoopbackShards
    from enclaverec.distributed.steps import run_worker_steps
    from enclaverec.paramservice.shard import (
        ShardConfig,
        ShardServer,
        resume_sealed,
        sealed_checkpointer,
    )
    from enclaverec.paramservice.shards import ShardMap

    train, initial, layout = setup()
    schedule = StepSchedule(train_rows=len(train), batch_size=16, seed=2, epochs=2)
    kind = ServerOptimizerKind.ADAGRAD
    uninterrupted, _ = run_distributed(
        train,
        initial,
        layout,
        lambda: LogisticRegressionGradients(SPEC),
        schedule,
        workers=2,
        shards=1,
        optimizer=kind,
        learning_rate=0.3,
    )
    names = ("worker-0", "worker-1")
    config = ShardConfig(0, ShardMap(), names, kind, 0.3, schedule, checkpoint_every=4)
    key, path = os.urandom(32), tmp_path / "shard-0.sealed"
    data = shard_training_rows(train, 2)

    def run(server, first, last):
        with LoopbackShards([server]) as shards:
            clients = [shards.client(name, layout) for name in names]
            threads = [
                threading.Thread(
                    target=run_worker_steps,
                    args=(
                        clients[w],
                        LogisticRegressionGradients(SPEC),
                        data[w],
                        StepLoopConfig(
                            schedule, first=first, last=last, barrier_deadline_seconds=30
                        ),
                    ),
                )
                for w in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            model, _ = clients[0].pull_model()
            for client in clients:
                client.close()
        return model

    first = ShardServer(config, layout, initial, checkpointer=sealed_checkpointer(path, key))
    run(first, 1, 6)  # checkpoint sealed after step 4; steps 5 and 6 are lost with it
    assert first.applied_step == 6 and first.checkpoints == 1
    restarted = ShardServer(config, layout, initial, checkpointer=sealed_checkpointer(path, key))
    assert resume_sealed(restarted, path, key) and restarted.applied_step == 4
    model = run(restarted, 5, schedule.total_steps)
    for name, value in uninterrupted.items():
        np.testing.assert_allclose(model[name], value, rtol=0, atol=1e-7, err_msg=name)
