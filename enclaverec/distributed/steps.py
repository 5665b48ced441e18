"""A worker's training steps against the parameter shards: wait at the barrier, pull the
rows of its part of the step's global batch, compute the gradients, push them; with the
time of each phase and the bytes moved, for the benchmark and the job's metrics.

Synchronous mode reproduces ``train`` step for step: the global batch of step t comes from
the shared :class:`~enclaverec.schedule.StepSchedule`, each worker takes the rows of that
batch it holds (their count varies per step, possibly zero), and the shards combine the
workers' gradients weighted by rows. The worker holds no table and no optimizer state.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from enclaverec.data.schema import Examples
from enclaverec.errors import ConfigError, TrainingError
from enclaverec.gradients import GradientTrainer, PulledBatch, TableBatch, batch_ids
from enclaverec.paramservice.shard_rpc import PulledModel, ShardedClient
from enclaverec.schedule import StepSchedule

DEFAULT_BARRIER_DEADLINE_SECONDS = 300.0


@dataclass(frozen=True)
class WorkerData:
    """A worker's training rows and the position of each in the training split (the
    index ``train`` gives it: the split's rows in the order the data set loads them)."""

    examples: Examples
    positions: np.ndarray

    def __post_init__(self) -> None:
        if len(self.positions) != len(self.examples):
            raise ConfigError("one training position per row")
        if len(self.positions) > 1 and not np.all(np.diff(self.positions) > 0):
            raise ConfigError("training positions must be unique and ascending")

    @classmethod
    def of(cls, examples: Examples, positions: np.ndarray) -> WorkerData:
        """From rows in any order (e.g. a decrypted shard's training rows and their
        positions): sorted by position."""
        order = np.argsort(np.asarray(positions, np.int64), kind="stable")
        return cls(examples.take(order), np.asarray(positions, np.int64)[order])

    def rows_of(self, batch: np.ndarray) -> np.ndarray:
        """Indices into ``examples`` of the rows of ``batch`` (training positions) that
        this worker holds, in the batch's order."""
        if len(self.positions) == 0:
            return np.zeros(0, np.int64)
        found = np.minimum(np.searchsorted(self.positions, batch), len(self.positions) - 1)
        return found[self.positions[found] == batch]


def shard_training_rows(train: Examples, workers: int) -> list[WorkerData]:
    """Split a training split over ``workers``: position p goes to worker p % workers
    (every worker gets about the same share of every batch)."""
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    positions = np.arange(len(train), dtype=np.int64)
    return [
        WorkerData(train.take(positions[w::workers]), positions[w::workers]) for w in range(workers)
    ]


@dataclass(frozen=True)
class StepTiming:
    """One step of one worker: its rows of the batch, seconds in each phase, payload
    bytes pulled and pushed, and the sum of its rows' losses."""

    step: int
    rows: int
    wait_seconds: float
    pull_seconds: float
    compute_seconds: float
    push_seconds: float
    pulled_bytes: int
    pushed_bytes: int
    loss_sum: float

    @property
    def total_seconds(self) -> float:
        return self.wait_seconds + self.pull_seconds + self.compute_seconds + self.push_seconds

    @property
    def wire_bytes(self) -> int:
        return self.pulled_bytes + self.pushed_bytes


@dataclass
class WorkerRun:
    """What a worker's run of steps did."""

    timings: list[StepTiming] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return len(self.timings)

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.timings)

    @property
    def loss_sum(self) -> float:
        return sum(t.loss_sum for t in self.timings)

    def median(self, phase: str) -> float:
        """The median of a StepTiming field over the steps (e.g. ``pull_seconds``)."""
        if not self.timings:
            return 0.0
        return float(np.median([getattr(t, phase) for t in self.timings]))


@dataclass(frozen=True)
class StepLoopConfig:
    """Steps ``first`` to ``last`` (inclusive, 1-based) of ``schedule``; the barrier
    deadline bounds every wait."""

    schedule: StepSchedule
    first: int = 1
    last: int | None = None
    barrier_deadline_seconds: float = DEFAULT_BARRIER_DEADLINE_SECONDS
    first_barrier_deadline_seconds: float | None = None
    """The deadline of the loop's first barrier (the other workers may still be starting:
    attesting, loading TensorFlow); None: ``barrier_deadline_seconds``."""
    barrier_in_pull: bool = False
    """Synchronous mode: the pull waits for the barrier on the shards (one round trip per
    step instead of ``AwaitStep`` then ``PullRows``); ``wait_seconds`` is then the
    shards' own measure of that wait."""

    def __post_init__(self) -> None:
        last = self.schedule.total_steps if self.last is None else self.last
        if not 1 <= self.first <= last <= self.schedule.total_steps:
            raise ConfigError(
                f"steps {self.first}..{last} outside the schedule's 1..{self.schedule.total_steps}"
            )
        if not self.barrier_deadline_seconds > 0:
            raise ConfigError("the barrier deadline must be positive")

    def deadline_of(self, step: int) -> float:
        """How long step ``step`` waits for the barrier of the step before."""
        if step <= self.first + 1 and self.first_barrier_deadline_seconds is not None:
            return max(self.barrier_deadline_seconds, self.first_barrier_deadline_seconds)
        return self.barrier_deadline_seconds

    @property
    def last_step(self) -> int:
        return self.schedule.total_steps if self.last is None else self.last


StepObserver = Callable[[StepTiming], None]


def run_worker_steps(
    client: ShardedClient,
    trainer: GradientTrainer,
    data: WorkerData,
    config: StepLoopConfig,
    *,
    on_step: StepObserver | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> WorkerRun:
    """Run steps ``config.first``..``config.last_step``: for each, wait for the barrier
    of the previous step, pull, compute, push. Synchronous mode (``barrier_in_pull``):
    a step's push also pulls the next step's rows once the step's barrier passed
    (``ShardedClient.push_and_pull``), so a step is one round trip; its push phase then
    holds that pull. Returns the per-step timings."""
    run = WorkerRun()
    table_names = trainer.table_names()
    # Synchronous mode: a step's push carries the pull of the worker's next step (one
    # round trip per step); ``ahead`` is what it brought: (rows, ids, pulled model).
    ahead: tuple[np.ndarray, dict, PulledModel] | None = None
    for step in range(config.first, config.last_step + 1):
        started = clock()
        deadline = config.deadline_of(step)
        if ahead is not None:
            rows, ids, pulled = ahead
            # The shards' wait at the last step's barrier, inside the last push's round
            # trip, is this step's wait phase.
            started -= pulled.waited_seconds
            ahead = None
        else:
            rows, ids, pulled = data.rows_of(config.schedule.batch(step)), {}, None
        in_pull = config.barrier_in_pull and len(rows) > 0
        if not in_pull:
            client.await_step(step - 1, deadline)
        waited = clock()
        before = client.traffic.pulled
        if len(rows) == 0:
            # Nothing of this batch is ours: an empty contribution passes the barrier.
            pushed = client.push(
                step, rows=0, loss_sum=0.0, pulled_step=step - 1, dense={}, tables={}
            )
            done = clock()
            timing = StepTiming(step, 0, waited - started, 0.0, 0.0, done - waited, 0, pushed, 0.0)
        else:
            examples = data.examples.take(rows)
            if pulled is None:
                ids = batch_ids(examples, table_names)
                pulled = client.pull(
                    step,
                    {name: unique for name, (unique, _) in ids.items()},
                    barrier_deadline_seconds=deadline if in_pull else None,
                )
                pulled_bytes = client.traffic.pulled - before
                fetched = clock()
                if in_pull:  # the shards' wait at the barrier is the wait phase, not the pull
                    waited = min(fetched, waited + pulled.waited_seconds)
            else:  # pulled with the last push, whose phase holds that round trip
                pulled_bytes = pulled.wire_bytes
                fetched = waited
            batch = PulledBatch(
                examples=examples,
                dense=pulled.dense,
                tables=tuple(
                    TableBatch(name, unique, inverse, pulled.rows[name])
                    for name, (unique, inverse) in ids.items()
                ),
            )
            gradients = trainer.gradients(batch)
            if not np.isfinite(gradients.loss_sum):
                raise TrainingError(
                    "training diverged (the loss is not finite); try a smaller learning rate"
                )
            computed = clock()
            contribution = {
                "rows": len(rows),
                "loss_sum": gradients.loss_sum,
                "pulled_step": pulled.applied_step,
                "dense": gradients.dense,
                "tables": gradients.tables,
            }
            next_rows = (
                data.rows_of(config.schedule.batch(step + 1))
                if in_pull and step < config.last_step
                else np.zeros(0, np.int64)
            )
            if len(next_rows):
                next_ids = batch_ids(data.examples.take(next_rows), table_names)
                pushed, next_pulled = client.push_and_pull(
                    step,
                    **contribution,
                    next_rows={name: unique for name, (unique, _) in next_ids.items()},
                    barrier_deadline_seconds=config.deadline_of(step + 1),
                )
                ahead = (next_rows, next_ids, next_pulled)
                done = max(computed, clock() - next_pulled.waited_seconds)  # the next step's wait
            else:
                pushed = client.push(step, **contribution)
                done = clock()
            timing = StepTiming(
                step,
                len(rows),
                waited - started,
                fetched - waited,
                computed - fetched,
                done - computed,
                pulled_bytes,
                pushed,
                gradients.loss_sum,
            )
        run.timings.append(timing)
        if on_step is not None:
            on_step(timing)
    return run
