"""Which training rows each optimizer step uses: the seeded row order of an epoch and the
batches cut from it, shared by the centralized trainer and distributed training.

Synchronous distributed training reproduces ``train`` step for step because both take
their batches from here: step t of epoch e uses the rows ``order[k*B:(k+1)*B]`` of the
permutation seeded by (seed, e, pass 0), the last batch of an epoch being short. Rows are
positions in the training split (its rows in ascending row-id order). No TensorFlow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from enclaverec.errors import ConfigError


def epoch_order(rows: int, *, seed: int, round_index: int, pass_index: int = 0) -> np.ndarray:
    """The seeded permutation of ``rows`` training positions (int32) for one pass: the
    trainer's ``FitConfig`` (seed, round_index = epoch, pass) picks it."""
    rng = np.random.default_rng([seed, round_index, pass_index])
    return rng.permutation(rows).astype(np.int32)


@dataclass(frozen=True)
class StepSchedule:
    """The global batches of a run of ``epochs`` epochs over ``train_rows`` rows: step t
    (1-based, counted across epochs) is batch ``(t - 1) % steps_per_epoch`` of epoch
    ``(t - 1) // steps_per_epoch``, exactly as ``train`` runs them (one ``fit`` per epoch,
    round_index = epoch index)."""

    train_rows: int
    batch_size: int
    seed: int = 0
    epochs: int = 1
    _orders: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.train_rows < 1:
            raise ConfigError(f"a schedule needs training rows, got {self.train_rows}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be at least 1, got {self.epochs}")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_rows / self.batch_size)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def locate(self, step: int) -> tuple[int, int]:
        """(epoch index, batch index within the epoch) of 1-based ``step``."""
        if not 1 <= step <= self.total_steps:
            raise ConfigError(f"step {step} outside [1, {self.total_steps}]")
        return divmod(step - 1, self.steps_per_epoch)

    def batch_rows(self, step: int) -> int:
        """How many rows step ``step`` uses (the last batch of an epoch may be short)."""
        _, index = self.locate(step)
        return min(self.batch_size, self.train_rows - index * self.batch_size)

    def batch(self, step: int) -> np.ndarray:
        """The training positions of step ``step``, in the order the trainer uses them."""
        epoch, index = self.locate(step)
        order = self._orders.get(epoch)
        if order is None:
            order = epoch_order(self.train_rows, seed=self.seed, round_index=epoch)
            self._orders.clear()  # one epoch at a time: 4 bytes per row
            self._orders[epoch] = order
        return order[index * self.batch_size : (index + 1) * self.batch_size]
