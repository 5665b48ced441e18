"""Running W workers' step loops against P loopback shards in threads, and the
single-process reference they must reproduce."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

import numpy as np

from enclaverec.arrays import ModelLayout
from enclaverec.data.schema import Examples
from enclaverec.distributed.loopback import LoopbackShards
from enclaverec.distributed.steps import (
    StepLoopConfig,
    WorkerRun,
    run_worker_steps,
    shard_training_rows,
)
from enclaverec.gradients import GradientTrainer, PulledBatch, TableBatch, batch_ids
from enclaverec.paramservice.optimizers import ServerOptimizerKind, make_server_optimizer
from enclaverec.paramservice.shard import ShardConfig, SyncMode, shard_servers
from enclaverec.paramservice.shards import ShardMap
from enclaverec.schedule import StepSchedule


def run_distributed(
    train: Examples,
    initial: Mapping[str, np.ndarray],
    layout: ModelLayout,
    make_trainer: Callable[[], GradientTrainer],
    schedule: StepSchedule,
    *,
    workers: int,
    shards: int,
    optimizer: ServerOptimizerKind,
    learning_rate: float,
    mode: SyncMode = SyncMode.SYNC,
    staleness: int = 0,
    last: int | None = None,
    barrier_in_pull: bool = False,
) -> tuple[dict[str, np.ndarray], list[WorkerRun]]:
    """Train ``last`` steps with W workers (threads) and P shards; the final model.
    ``barrier_in_pull``: the worker role's synchronous loop (the barrier in the pull, each
    push carrying the next step's pull)."""
    names = tuple(f"worker-{w}" for w in range(workers))
    shard_map = ShardMap(shards=shards, dense_shard=shards - 1)
    configs = [
        ShardConfig(
            shard=s,
            shard_map=shard_map,
            workers=names,
            optimizer=optimizer,
            learning_rate=learning_rate,
            schedule=schedule,
            mode=mode,
            staleness=staleness,
        )
        for s in range(shards)
    ]
    servers = shard_servers(configs, layout, initial)
    data = shard_training_rows(train, workers)
    loop = StepLoopConfig(
        schedule, last=last, barrier_deadline_seconds=60, barrier_in_pull=barrier_in_pull
    )
    runs: list[WorkerRun | None] = [None] * workers
    errors: list[BaseException] = []
    with LoopbackShards(servers) as cluster:
        clients = [cluster.client(name, layout) for name in names]
        trainers = [make_trainer() for _ in names]

        def work(index: int) -> None:
            try:
                runs[index] = run_worker_steps(clients[index], trainers[index], data[index], loop)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        model, _ = clients[0].pull_model()
        for client in clients:
            client.close()
    return model, [run for run in runs if run is not None]


def run_reference(
    train: Examples,
    initial: Mapping[str, np.ndarray],
    layout: ModelLayout,
    trainer: GradientTrainer,
    schedule: StepSchedule,
    *,
    optimizer: ServerOptimizerKind,
    learning_rate: float,
    last: int,
) -> dict[str, np.ndarray]:
    """One process, whole batches, the servers' optimizer: what sync mode must equal."""
    arrays = {name: np.array(value, copy=True) for name, value in initial.items()}
    rule = make_server_optimizer(optimizer, layout)
    for step in range(1, last + 1):
        examples = train.take(schedule.batch(step))
        ids = batch_ids(examples, trainer.table_names())
        batch = PulledBatch(
            examples,
            {name: arrays[name] for name in layout.dense_names},
            tuple(
                TableBatch(name, unique, inverse, arrays[name][unique])
                for name, (unique, inverse) in ids.items()
            ),
        )
        gradients = trainer.gradients(batch)
        rule.apply(arrays, gradients.dense, gradients.tables, learning_rate)
    return arrays
