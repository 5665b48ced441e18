"""One parameter-server shard of secure distributed training: it serves the rows a
worker's next batch needs, takes each worker's sparse gradients for a step, combines them
by rows and applies its optimizer once per step (synchronous mode), or applies each push
as it comes within a bounded staleness (asynchronous mode), and seals its state every N
steps.

Nothing here scans a whole table per step: a pull gathers the asked rows, a push touches
the rows it carries. No TensorFlow and no I/O but the sealed checkpoint: this runs inside
a parameter server's enclave. Every number a worker sends is checked against the measured
plan (the schedule's batch sizes, the shard's row ranges) before use.

The barrier: synchronous step t is applied when every worker of the job pushed for it (a
worker whose rows of the batch are none pushes an empty contribution); ``await_step(t)``
returns once it is. Asynchronous: each push is applied at once, weighted by its rows over
the global batch's; ``await_step(t)`` returns once the slowest worker has pushed step
``t - staleness`` (stale synchronous parallel, Ho et al. 2013).

The model of an epoch is copied under the lock the moment the epoch's last step passes
its barrier (:meth:`ShardServer.epoch_model`): the server's own thread may run late (a
key-broker restart, a loaded machine) while the workers already train the next epoch.

With several shards, one restarted from its checkpoint at step c is behind the others;
the workers then ask the others to roll back to c (:meth:`ShardServer.roll_back`), from
the last two sealed checkpoints each keeps (every shard checkpoints at the same step
numbers), and replay from c + 1: the gradients of a step need every shard's model of
the step before.
"""

from __future__ import annotations

import enum
import math
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from enclaverec.arrays import ROW_ID_DTYPE, Arrays, ModelLayout, ModelUpdate, SparseRows
from enclaverec.errors import (
    AggregationRefusedError,
    ConfigError,
    MalformedInputError,
    StaleUpdateError,
)
from enclaverec.paramservice import checkpoint as archive
from enclaverec.paramservice.combine import check_update, weighted_mean
from enclaverec.paramservice.optimizers import ServerOptimizerKind, make_server_optimizer
from enclaverec.paramservice.shards import ShardMap
from enclaverec.schedule import StepSchedule

CHECKPOINT_FORMAT = 1
_ROLLED_BACK = "the shard rolled back to step {} while this call waited: replay from there"
SEALING_PURPOSE = "distributed/paramserver-checkpoint"


class SyncMode(enum.Enum):
    """Synchronous (one combined update per step, ``train``'s model) or asynchronous
    (every push applied on arrival, bounded staleness)."""

    SYNC = "sync"
    ASYNC = "async"


@dataclass(frozen=True)
class ShardConfig:
    """What one shard server does, all from the measured job configuration.

    ``schedule`` fixes every step's global batch size (pushes are checked against it);
    ``staleness``: in asynchronous mode, how many steps the fastest worker may run ahead
    of the slowest; ``checkpoint_every``: seal the state every that many steps (0: never);
    ``norm_bound``: refuse a push whose gradients' L2 norm exceeds it.
    """

    shard: int
    shard_map: ShardMap
    workers: tuple[str, ...]
    optimizer: ServerOptimizerKind
    learning_rate: float
    schedule: StepSchedule
    mode: SyncMode = SyncMode.SYNC
    staleness: int = 0
    checkpoint_every: int = 0
    norm_bound: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.shard_map.shards:
            raise ConfigError(f"shard {self.shard} outside [0, {self.shard_map.shards})")
        if not self.workers or len(set(self.workers)) != len(self.workers):
            raise ConfigError("a shard needs its job's workers, each named once")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning rate must be positive, got {self.learning_rate}")
        if self.staleness < 0 or (self.mode is SyncMode.SYNC and self.staleness):
            raise ConfigError(
                f"staleness must be >= 0 (and 0 in synchronous mode), got {self.staleness}"
            )
        if self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        if self.norm_bound is not None and not self.norm_bound > 0:
            raise ConfigError(f"norm_bound must be positive, got {self.norm_bound}")

    @property
    def dense(self) -> bool:
        return self.shard == self.shard_map.dense_shard


@dataclass(frozen=True)
class Gradients:
    """One worker's contribution to one step on one shard: mean-loss gradients over its
    ``rows`` rows of the global batch (dense arrays on the dense shard; tables as unique
    ascending local rows with gradients summed over repeated ids), and the sum of those
    rows' losses. ``rows`` may be 0 (the worker has no row of this batch): then nothing
    else is sent."""

    step: int
    rows: int
    loss_sum: float
    pulled_step: int
    dense: Mapping[str, np.ndarray] = field(default_factory=dict)
    tables: Mapping[str, SparseRows] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return int(
            sum(v.nbytes for v in self.dense.values()) + sum(r.nbytes for r in self.tables.values())
        )


@dataclass(frozen=True)
class PulledRows:
    """What a pull returns: the steps applied to it, this server's incarnation, the dense
    arrays (dense shard, when asked) and the asked rows in local ids."""

    applied_step: int
    incarnation: str
    dense: Arrays
    tables: dict[str, SparseRows]
    waiting: bool = False
    """The barrier of the step before did not pass within the pull's wait: nothing sent."""
    waited_seconds: float = 0.0


Checkpointer = Callable[[bytes], None]
"""Seals and stores a checkpoint's plaintext (see :func:`sealed_checkpointer`)."""
CheckpointReader = Callable[[int], "bytes | None"]
"""The plaintext of a kept checkpoint of a given step, or None (see
:func:`sealed_checkpoint_reader`)."""


class ShardServer:
    """The state of one shard behind a lock; the gRPC servicer and tests call it."""

    def __init__(
        self,
        config: ShardConfig,
        layout: ModelLayout,
        arrays: Mapping[str, np.ndarray],
        *,
        checkpointer: Checkpointer | None = None,
        checkpoint_reader: CheckpointReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.model_layout = layout
        config.shard_map.check_layout(layout)
        self.layout = config.shard_map.shard_layout(layout, config.shard)
        if list(arrays) != list(self.layout.names):
            raise ConfigError(
                f"shard {config.shard} must hold {list(self.layout.names)}, got {list(arrays)}"
            )
        self.arrays: Arrays = {}
        for name, spec in self.layout.specs.items():
            value = np.array(arrays[name], dtype=spec.dtype, copy=True)
            if tuple(value.shape) != spec.shape:
                raise ConfigError(f"{name}: shape {value.shape}, expected {spec.shape}")
            self.arrays[name] = value
        self.optimizer = make_server_optimizer(config.optimizer, self.layout)
        self.checkpointer = checkpointer
        self.checkpoint_reader = checkpoint_reader
        self.rollbacks = 0
        self.clock = clock
        self.lock = threading.Condition()
        self.incarnation = secrets.token_hex(8)
        self.applied = 0  # synchronous: steps applied
        self.pushed = dict.fromkeys(config.workers, 0)  # last step each worker pushed
        self.pending: dict[str, Gradients] = {}
        self._updates: dict[str, ModelUpdate | None] = {}  # the checked form of pending
        self.failure: str | None = None
        self.loss_sum = 0.0
        self.rows_done = 0
        self.checkpoints = 0
        # The model as each epoch's last step left it, until the server takes it.
        self._epoch_models: dict[int, Arrays] = {}

    # --- the clock ------------------------------------------------------------------------

    @property
    def applied_step(self) -> int:
        """Steps whose barrier has passed: applied (sync), or pushed by every worker
        (async)."""
        if self.config.mode is SyncMode.SYNC:
            return self.applied
        return min(self.pushed.values())

    def _reached(self, step: int) -> bool:
        if self.config.mode is SyncMode.SYNC:
            return self.applied >= step
        return min(self.pushed.values()) >= step - self.config.staleness

    def await_step(self, step: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the barrier of ``step``; whether it passed.
        Raises ``AggregationRefusedError`` once the shard refused a step (e.g. the workers'
        rows did not add up to the batch)."""
        deadline = self.clock() + max(0.0, timeout)
        with self.lock:
            rollbacks = self.rollbacks
            while True:
                if self.failure is not None:
                    raise AggregationRefusedError(self.failure)
                if self.rollbacks != rollbacks:
                    raise StaleUpdateError(_ROLLED_BACK.format(self.applied_step))
                if self._reached(step):
                    return True
                remaining = deadline - self.clock()
                if remaining <= 0:
                    return False
                self.lock.wait(remaining)

    # --- pull -----------------------------------------------------------------------------

    def check_worker(self, caller: str) -> None:
        """Refuse a caller that is not one of the job's workers."""
        if caller not in self.pushed:
            raise AggregationRefusedError(f"{caller} is not a worker of this job")

    def pull(
        self,
        caller: str,
        step: int,
        tables: Mapping[str, np.ndarray],
        dense: bool,
        wait: float = 0.0,
    ) -> PulledRows:
        """The rows ``tables`` asks for (local ids, ascending, unique) and, when ``dense``,
        the dense arrays, for computing step ``step``. Synchronous mode with ``wait`` > 0:
        first wait up to ``wait`` seconds for step ``step - 1``'s barrier (one round trip
        per step less than ``await_step`` then ``pull``); if it did not pass, a
        ``waiting`` reply without arrays."""
        self.check_worker(caller)
        schedule = self.config.schedule
        if not 1 <= step <= schedule.total_steps:
            raise AggregationRefusedError(f"step {step} outside [1, {schedule.total_steps}]")
        if dense and not self.config.dense:
            raise AggregationRefusedError(f"shard {self.config.shard} holds no dense arrays")
        # A batch of B rows touches at most B rows of a table.
        bound = schedule.batch_rows(step)
        for name, ids in tables.items():
            spec = self.layout.specs.get(name)
            if spec is None or not spec.table:
                raise MalformedInputError(f"{name}: not a table of this shard")
            _check_ids(ids, spec.shape[0], name)
            if len(ids) > bound:
                raise AggregationRefusedError(
                    f"{name}: {len(ids)} rows asked for step {step}, at most {bound}"
                )
        with self.lock:
            started = self.clock()
            rollbacks = self.rollbacks
            if self.config.mode is SyncMode.SYNC and wait > 0:
                deadline = started + wait
                while self.failure is None and self.applied < step - 1:
                    if self.rollbacks != rollbacks:
                        raise StaleUpdateError(_ROLLED_BACK.format(self.applied_step))
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        return PulledRows(self.applied_step, self.incarnation, {}, {}, True, wait)
                    self.lock.wait(remaining)
            waited = self.clock() - started
            if self.failure is not None:
                raise AggregationRefusedError(self.failure)
            if self.config.mode is SyncMode.SYNC and self.applied != step - 1:
                raise StaleUpdateError(
                    f"{caller} pulls for step {step}, but step {self.applied} is the last "
                    "applied: wait at the barrier"
                )
            rows = {
                name: SparseRows(
                    np.asarray(ids, ROW_ID_DTYPE), self.arrays[name][np.asarray(ids)].copy()
                )
                for name, ids in tables.items()
            }
            dense_arrays = (
                {name: self.arrays[name].copy() for name in self.layout.dense_names}
                if dense
                else {}
            )
            return PulledRows(
                self.applied_step, self.incarnation, dense_arrays, rows, False, waited
            )

    def snapshot(self) -> Arrays:
        """A copy of every array of the shard (final model, validation)."""
        with self.lock:
            return {name: value.copy() for name, value in self.arrays.items()}

    def epoch_model(self, epoch: int) -> Arrays:
        """The shard as epoch ``epoch``'s last step left it, however many later steps
        were applied since (call after ``await_step`` of that step passed). Copies of
        earlier epochs are dropped: the server takes them in order."""
        with self.lock:
            for done in [e for e in self._epoch_models if e < epoch]:
                del self._epoch_models[done]
            if epoch not in self._epoch_models:
                raise AggregationRefusedError(
                    f"the model of epoch {epoch} was not kept (applied step "
                    f"{self.applied_step}, epochs kept {sorted(self._epoch_models)})"
                )
            return self._epoch_models.pop(epoch)

    def _keep_epoch_model(self) -> None:
        """Under the lock, after the applied step advanced: copy the arrays if it is the
        last step of an epoch."""
        step, per_epoch = self.applied_step, self.config.schedule.steps_per_epoch
        if step and step % per_epoch == 0:
            self._epoch_models[step // per_epoch] = {
                name: value.copy() for name, value in self.arrays.items()
            }

    # --- push -----------------------------------------------------------------------------

    def _check_gradients(self, caller: str, gradients: Gradients) -> ModelUpdate | None:
        """Refuse what does not fit; the contribution as a weighted update (None for an
        empty one)."""
        schedule = self.config.schedule
        step = gradients.step
        if not 1 <= step <= schedule.total_steps:
            raise AggregationRefusedError(f"step {step} outside [1, {schedule.total_steps}]")
        batch = schedule.batch_rows(step)
        if not 0 <= gradients.rows <= batch:
            raise AggregationRefusedError(
                f"{caller}: {gradients.rows} rows for step {step}, whose batch has {batch}"
            )
        if not (math.isfinite(gradients.loss_sum) and gradients.loss_sum >= 0):
            raise AggregationRefusedError(f"{caller}: the loss must be finite and >= 0")
        if gradients.rows == 0:
            if gradients.dense or gradients.tables or gradients.loss_sum:
                raise AggregationRefusedError(f"{caller}: gradients without rows")
            return None
        unknown = set(gradients.tables) - set(self.layout.table_names)
        if unknown:
            raise AggregationRefusedError(f"{caller}: unknown tables {sorted(unknown)}")
        if set(gradients.dense) != set(self.layout.dense_names):
            raise AggregationRefusedError(
                f"{caller}: dense gradients {sorted(gradients.dense)}, expected "
                f"{sorted(self.layout.dense_names)}"
            )
        for name, rows in gradients.tables.items():
            if len(rows) > gradients.rows:
                raise AggregationRefusedError(
                    f"{caller}: {len(rows)} rows of {name} from a batch of {gradients.rows}"
                )
        empty = {
            name: SparseRows(
                np.zeros(0, ROW_ID_DTYPE),
                np.zeros((0, *self.layout.specs[name].shape[1:]), self.layout.specs[name].dtype),
            )
            for name in self.layout.table_names
            if name not in gradients.tables
        }
        update = ModelUpdate(
            dense=dict(gradients.dense),
            sparse={**gradients.tables, **empty},
            num_samples=int(gradients.rows),
        )
        check_update(update, self.layout, contributor=caller, norm_bound=self.config.norm_bound)
        return update

    def push(self, caller: str, gradients: Gradients) -> None:
        """Take ``caller``'s contribution to its step; apply the step when it completes."""
        self.check_worker(caller)
        update = self._check_gradients(caller, gradients)
        with self.lock:
            if self.failure is not None:
                raise AggregationRefusedError(self.failure)
            if self.config.mode is SyncMode.SYNC:
                self._push_sync(caller, gradients, update)
            else:
                self._push_async(caller, gradients, update)
            self.lock.notify_all()

    def _push_sync(self, caller: str, gradients: Gradients, update: ModelUpdate | None) -> None:
        step = gradients.step
        if step != self.applied + 1 or gradients.pulled_step != self.applied:
            raise StaleUpdateError(
                f"{caller}: gradients for step {step} from the model after step "
                f"{gradients.pulled_step}; the shard expects step {self.applied + 1} from "
                f"the model after step {self.applied}"
            )
        # A restarted worker recomputes the same step: its new contribution replaces the
        # old one (it could send anything anyway; counting it twice it cannot).
        self.pending[caller] = gradients
        self._updates[caller] = update
        self.pushed[caller] = step
        if len(self.pending) < len(self.pushed):
            return
        total = sum(g.rows for g in self.pending.values())
        expected = self.config.schedule.batch_rows(step)
        contributions = [u for u in self._updates.values() if u is not None]
        loss = sum(g.loss_sum for g in self.pending.values())
        self.pending.clear()
        self._updates.clear()
        if total != expected:
            self.failure = (
                f"step {step} refused: the workers' rows add up to {total}, the batch has "
                f"{expected}"
            )
            raise AggregationRefusedError(self.failure)
        mean = weighted_mean(contributions, self.layout)
        self._apply(dict(mean.dense), dict(mean.sparse))
        self.applied = step
        self.loss_sum += loss
        self.rows_done += total
        self._keep_epoch_model()
        self._maybe_checkpoint(step)

    def _push_async(self, caller: str, gradients: Gradients, update: ModelUpdate | None) -> None:
        step = gradients.step
        if step != self.pushed[caller] + 1:
            raise StaleUpdateError(
                f"{caller}: gradients for step {step}, expected step {self.pushed[caller] + 1}"
            )
        if gradients.pulled_step + self.config.staleness < step - 1:
            raise StaleUpdateError(
                f"{caller}: gradients for step {step} from the model after step "
                f"{gradients.pulled_step}, staler than {self.config.staleness} steps"
            )
        before = self.applied_step
        self.pushed[caller] = step
        if update is not None:
            # The share of the global batch this worker's rows are: the sum over a step's
            # workers is the synchronous update's gradient.
            share = update.num_samples / self.config.schedule.batch_rows(step)
            self._apply(
                {n: (share * v).astype(v.dtype) for n, v in update.dense.items()},
                {
                    n: SparseRows(r.row_ids, (share * r.values).astype(r.values.dtype))
                    for n, r in update.sparse.items()
                    if len(r)
                },
            )
        self.loss_sum += gradients.loss_sum
        self.rows_done += gradients.rows
        after = self.applied_step
        if after > before:
            self._keep_epoch_model()
            self._maybe_checkpoint(after)

    def _apply(self, dense: Mapping[str, np.ndarray], rows: Mapping[str, SparseRows]) -> None:
        self.optimizer.apply(
            self.arrays,
            dense,
            {name: part for name, part in rows.items() if len(part)},
            self.config.learning_rate,
        )

    # --- checkpoints ------------------------------------------------------------------------

    def roll_back(self, caller: str, step: int) -> int:
        """Return to the model after ``step`` (synchronous mode), from a kept checkpoint of
        that step, because another shard restarted from its checkpoint there; the workers
        replay from ``step + 1``. Nothing to do at ``step`` already; refused for a step
        ahead, a step without a kept checkpoint, or in asynchronous mode. Returns the
        applied step."""
        self.check_worker(caller)
        if self.config.mode is not SyncMode.SYNC:
            raise AggregationRefusedError("only a synchronous shard rolls back")
        with self.lock:
            if self.failure is not None:
                raise AggregationRefusedError(self.failure)
            applied = self.applied
        if step == applied:
            return applied
        if not 0 <= step < applied:
            raise AggregationRefusedError(
                f"{caller} asks to roll back to step {step}; step {applied} is the last applied"
            )
        plaintext = self.checkpoint_reader(step) if self.checkpoint_reader else None
        if plaintext is None:
            raise AggregationRefusedError(f"no checkpoint of step {step} is kept")
        self.restore(plaintext)
        with self.lock:
            # Waiters of a later barrier learn it at once (StaleUpdateError): they replay.
            self.rollbacks += 1
            self.lock.notify_all()
        if self.applied_step != step:  # the reader gave another step's checkpoint
            raise AggregationRefusedError(f"the checkpoint kept for step {step} is another's")
        return step

    def _maybe_checkpoint(self, step: int) -> None:
        every = self.config.checkpoint_every
        if self.checkpointer is not None and every and step % every == 0:
            self.checkpointer(self.encode_state())
            self.checkpoints += 1

    def encode_state(self) -> bytes:
        """The shard's state (arrays, optimizer state, progress) as checkpoint plaintext.
        Called with the lock held, between steps."""
        contents = {f"arrays/{name}": value for name, value in self.arrays.items()}
        contents.update({f"optimizer/{k}": v for k, v in self.optimizer.state().items()})
        meta: dict[str, Any] = {
            "format": CHECKPOINT_FORMAT,
            "shard": self.config.shard,
            "shards": self.config.shard_map.shards,
            "mode": self.config.mode.value,
            "optimizer": self.config.optimizer.value,
            "applied": self.applied_step,
            "pushed": {w: min(s, self.applied_step) for w, s in self.pushed.items()},
            "loss_sum": self.loss_sum,
            "rows_done": self.rows_done,
        }
        return archive.pack(contents, meta)

    def restore(self, plaintext: bytes) -> None:
        """Resume from a checkpoint of this shard (same plan); refuses another shard's,
        another plan's or a malformed one. Contributions after the checkpoint are
        recomputed by the workers, which replay from ``applied_step + 1``."""
        contents, meta = archive.unpack(plaintext)
        expected = {
            "format": CHECKPOINT_FORMAT,
            "shard": self.config.shard,
            "shards": self.config.shard_map.shards,
            "mode": self.config.mode.value,
            "optimizer": self.config.optimizer.value,
        }
        for key, value in expected.items():
            if meta.get(key) != value:
                raise MalformedInputError(
                    f"checkpoint {key} is {meta.get(key)!r}, expected {value!r}"
                )
        arrays = archive.section(contents, "arrays/")
        if set(arrays) != set(self.layout.names):
            raise MalformedInputError("the checkpoint holds another shard layout")
        for name, spec in self.layout.specs.items():
            value = arrays[name]
            if tuple(value.shape) != spec.shape or str(value.dtype) != spec.dtype:
                raise MalformedInputError(f"checkpoint {name}: wrong shape or dtype")
            if not np.all(np.isfinite(value)):
                raise MalformedInputError(f"checkpoint {name}: non-finite values")
        applied = meta.get("applied")
        pushed = meta.get("pushed")
        if not isinstance(applied, int) or not 0 <= applied <= self.config.schedule.total_steps:
            raise MalformedInputError("checkpoint step out of range")
        if not isinstance(pushed, dict) or set(pushed) != set(self.pushed):
            raise MalformedInputError("the checkpoint names other workers")
        self.optimizer.load_state(archive.section(contents, "optimizer/"))
        with self.lock:
            self.arrays = {name: np.array(arrays[name], copy=True) for name in self.layout.names}
            self.applied = applied
            self.pushed = {w: int(pushed[w]) for w in self.pushed}
            self.pending.clear()
            self._updates.clear()
            self.loss_sum = float(meta.get("loss_sum", 0.0))
            self.rows_done = int(meta.get("rows_done", 0))
            # A roll back keeps the copies of epochs that ended at or before the step (the
            # server's thread may not have taken them yet); later ones are replayed.
            per_epoch = self.config.schedule.steps_per_epoch
            for epoch in [e for e in self._epoch_models if e * per_epoch > applied]:
                del self._epoch_models[epoch]
            self._keep_epoch_model()  # a checkpoint at an epoch's end is that epoch's model
            self.lock.notify_all()


def _check_ids(ids: np.ndarray, rows: int, name: str) -> None:
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise MalformedInputError(f"{name}: row ids must be a 1-d integer array")
    if len(ids) and (ids[0] < 0 or ids[-1] >= rows):
        raise MalformedInputError(f"{name}: row ids outside [0, {rows})")
    if len(ids) > 1 and not np.all(ids[1:] > ids[:-1]):
        raise MalformedInputError(f"{name}: row ids must be unique and ascending")


def previous_checkpoint(path: Any) -> Any:
    """Where the checkpoint before the last one is kept (``shard.sealed.prev``)."""
    return path.with_name(path.name + ".prev")


def sealed_checkpointer(path: Any, sealing_key: bytes) -> Checkpointer:
    """A checkpointer that seals to ``sealing_key`` and writes ``path`` atomically, after
    moving the last checkpoint to :func:`previous_checkpoint` (another shard may need to
    roll back to it, see :meth:`ShardServer.roll_back`)."""

    def save(plaintext: bytes) -> None:
        if path.exists():
            os.replace(path, previous_checkpoint(path))
        archive.save_sealed(path, sealing_key, SEALING_PURPOSE, plaintext)

    return save


def sealed_checkpoint_reader(path: Any, sealing_key: bytes) -> CheckpointReader:
    """The kept checkpoint (last or previous) of a step, unsealed; None if neither is."""

    def load(step: int) -> bytes | None:
        for candidate in (path, previous_checkpoint(path)):
            plaintext = archive.load_sealed(candidate, sealing_key, SEALING_PURPOSE)
            if plaintext is not None and archive.unpack(plaintext)[1].get("applied") == step:
                return plaintext
        return None

    return load


def resume_sealed(server: ShardServer, path: Any, sealing_key: bytes) -> bool:
    """Restore ``server`` from its sealed checkpoint at ``path`` (or the previous one, if
    it was killed between moving it and writing the new one) if there is one; whether it
    did. A checkpoint that does not unseal or does not fit is an ``IntegrityError``."""
    plaintext = archive.load_sealed(path, sealing_key, SEALING_PURPOSE)
    if plaintext is None:
        path = previous_checkpoint(path)
        plaintext = archive.load_sealed(path, sealing_key, SEALING_PURPOSE)
    if plaintext is None:
        return False
    try:
        server.restore(plaintext)
    except MalformedInputError as exc:
        raise archive.integrity(path, exc) from exc
    return True


def shard_servers(
    configs: Sequence[ShardConfig], layout: ModelLayout, arrays: Mapping[str, np.ndarray]
) -> list[ShardServer]:
    """One server per shard config over the initial whole model (tests, in-process runs)."""
    parts = configs[0].shard_map.split_model(arrays, layout)
    return [ShardServer(config, layout, parts[config.shard]) for config in configs]
