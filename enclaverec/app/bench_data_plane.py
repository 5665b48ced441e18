"""The data plane's per-step costs, measured in one process: W workers (threads, the
TensorFlow sparse-gradient trainer) against P parameter shards served over gRPC on
loopback, synchronous steps; prints the median step split into wait, pull, compute and
push, and the payload bytes per step per worker.

The transport is the ``--tee none`` baseline (no TLS, no attestation): these are the
costs of the data plane itself. ``enclaverec bench distributed`` compares whole jobs with
and without the simulated TEE. Run: ``python -m enclaverec.cli.bench_data_plane --shape
small`` (MovieLens-100K, the small preset) or ``--shape kaggle`` (26 tables of 100,000
rows with Zipf ids, as ``bench train``, the kaggle preset).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from enclaverec.errors import ConfigError

SHAPES = ("small", "kaggle")
KAGGLE_ROWS = 20_000


@dataclass(frozen=True)
class DataPlaneBenchConfig:
    shape: str = "small"
    workers: int = 2
    shards: int = 1
    steps: int = 60
    warmup: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ConfigError(f"shape must be one of {SHAPES}, got {self.shape!r}")
        if self.workers < 1 or self.shards < 1 or self.steps < 1 or self.warmup < 0:
            raise ConfigError("workers, shards and steps must be positive, warmup >= 0")


def _data(config: DataPlaneBenchConfig):
    """(feature spec, training rows, preset defaults, data set name)."""
    from enclaverec.dlrm.config import KAGGLE, SMALL

    if config.shape == "small":
        from enclaverec.data.sources import DataSelection, load_dataset

        data = load_dataset(DataSelection(dataset="movielens-100k"), seed=config.seed)
        return data.spec, data.train, SMALL, data.name
    from enclaverec.app.bench_train import NUM_DENSE, NUM_TABLES, TABLE_ROWS, benchmark_rows
    from enclaverec.data.schema import FeatureSpec

    examples, _ = benchmark_rows(KAGGLE_ROWS, config.seed)
    spec = FeatureSpec(
        dense_names=tuple(f"I{i + 1}" for i in range(NUM_DENSE)),
        categorical_names=tuple(f"C{i + 1}" for i in range(NUM_TABLES)),
        table_sizes=(TABLE_ROWS,) * NUM_TABLES,
    )
    return spec, examples, KAGGLE, f"zipf-kaggle-shape ({KAGGLE_ROWS} rows)"


def measure(config: DataPlaneBenchConfig) -> dict[str, Any]:
    from enclaverec.arrays import ModelLayout
    from enclaverec.distributed.loopback import LoopbackShards
    from enclaverec.distributed.steps import StepLoopConfig, run_worker_steps, shard_training_rows
    from enclaverec.dlrm.weights import EMBEDDING_PREFIX, initial_arrays
    from enclaverec.model.sparse_gradients import DLRMGradients
    from enclaverec.paramservice.optimizers import ServerOptimizerKind
    from enclaverec.paramservice.shard import ShardConfig, shard_servers
    from enclaverec.paramservice.shards import ShardMap
    from enclaverec.schedule import StepSchedule

    spec, train, preset, name = _data(config)
    initial = initial_arrays(spec, preset.model, seed=config.seed)
    layout = ModelLayout.of(initial, tables=[n for n in initial if n.startswith(EMBEDDING_PREFIX)])
    schedule = StepSchedule(len(train), preset.batch_size, seed=config.seed, epochs=1)
    last = min(schedule.total_steps, config.warmup + config.steps)
    names = tuple(f"worker-{w}" for w in range(config.workers))
    shard_map = ShardMap(shards=config.shards, dense_shard=config.shards - 1)
    servers = shard_servers(
        [
            ShardConfig(
                shard=s,
                shard_map=shard_map,
                workers=names,
                optimizer=ServerOptimizerKind(preset.optimizer.value),
                learning_rate=preset.learning_rate,
                schedule=schedule,
            )
            for s in range(config.shards)
        ],
        layout,
        initial,
    )
    data = shard_training_rows(train, config.workers)
    loop = StepLoopConfig(schedule, last=last, barrier_deadline_seconds=120)
    runs: list[Any] = [None] * config.workers
    errors: list[BaseException] = []
    with LoopbackShards(servers) as cluster:
        clients = [cluster.client(worker, layout) for worker in names]
        trainers = [DLRMGradients(spec, preset.model) for _ in names]

        def work(index: int) -> None:
            try:
                runs[index] = run_worker_steps(clients[index], trainers[index], data[index], loop)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(config.workers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        for client in clients:
            client.close()
    if errors:
        raise errors[0]
    timed = [t for run in runs for t in run.timings if t.step > config.warmup]
    if not timed:
        raise ConfigError("no timed steps: lower --warmup or raise --steps")

    def median_ms(field: str) -> float:
        return round(1000 * float(np.median([getattr(t, field) for t in timed])), 3)

    return {
        "data": name,
        "preset": preset.preset.value,
        "workers": config.workers,
        "paramservers": config.shards,
        "batch_size": preset.batch_size,
        "steps_timed": last - config.warmup,
        "transport": "loopback gRPC, --tee none (no TLS)",
        "median_step_ms": median_ms("total_seconds"),
        "median_wait_ms": median_ms("wait_seconds"),
        "median_pull_ms": median_ms("pull_seconds"),
        "median_compute_ms": median_ms("compute_seconds"),
        "median_push_ms": median_ms("push_seconds"),
        "pulled_bytes_per_step_per_worker": int(np.mean([t.pulled_bytes for t in timed])),
        "pushed_bytes_per_step_per_worker": int(np.mean([t.pushed_bytes for t in timed])),
        "dense_bytes": int(sum(initial[n].nbytes for n in layout.dense_names)),
        "samples_per_second_incl_warmup": round(sum(run.rows for run in runs) / wall, 1),
    }
