"""The strategy interface: a pair of hooks, configure a round and aggregate its replies.

As in Flower's ``Strategy``, the math lives in pure functions (``paramservice.combine``,
``federated.aggregate``, ``federated.robust``); a strategy only chooses which to call.
Strategies never mutate the caller's configuration: ``configure_fit`` returns a new
``FitConfig``. Every strategy first pre-checks the replies and clips them (the plan's
``clipping``), then combines them its own way.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.federated.robust import clip_to_median_norm
from enclaverec.paramservice.combine import RowNormalisation, check_updates, weighted_mean
from enclaverec.training import FitConfig


@dataclass(frozen=True)
class LocalTraining:
    """What each selected party does in a round, from the federation's plan."""

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int = 0


class Clipping(enum.Enum):
    """Norm clipping before the combination. ``MEDIAN``: each update is scaled down to the
    median L2 norm of the round's updates (an adaptive bound, ``robust.clip_to_median_norm``);
    ``NONE``: updates are combined as sent (the plan's ``norm_bound`` may still refuse)."""

    MEDIAN = "median"
    NONE = "none"


class Strategy(abc.ABC):
    """Configure a round's local training; turn the round's updates into the change the
    global model takes."""

    name: ClassVar[str]

    def __init__(
        self,
        *,
        row_normalisation: RowNormalisation = RowNormalisation.ALL_CONTRIBUTORS,
        clipping: Clipping = Clipping.MEDIAN,
    ) -> None:
        self.row_normalisation = row_normalisation
        self.clipping = clipping
        # The contributors the last aggregate left out, with why (for the audit log).
        self.excluded: dict[str, float] = {}

    def configure_fit(self, round_index: int, local: LocalTraining) -> FitConfig:
        return FitConfig(
            batch_size=local.batch_size,
            learning_rate=local.learning_rate,
            epochs=local.epochs,
            seed=local.seed,
            round_index=round_index,
        )

    def prepare(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> list[ModelUpdate]:
        """The pre-check (refuses inconsistent replies), then clipping."""
        check_updates(updates, layout, contributors=contributors, norm_bound=norm_bound)
        if self.clipping is Clipping.MEDIAN and len(updates) > 1:
            return clip_to_median_norm(updates)[0]
        return list(updates)

    def average(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        """:meth:`prepare`, then the sample-weighted mean of the updates (FedAvg)."""
        prepared = self.prepare(updates, layout, contributors, norm_bound)
        return weighted_mean(prepared, layout, row_normalisation=self.row_normalisation)

    @abc.abstractmethod
    def aggregate(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        """The change to add to the global model (dense arrays, and rows of tables)."""

    # Server-side state (for sealed checkpoints); stateless strategies have none.
    def state(self) -> Mapping[str, np.ndarray]:
        return {}

    def load_state(self, state: Mapping[str, np.ndarray]) -> None:
        if state:
            raise ValueError(f"{self.name} keeps no state, got {sorted(state)}")
