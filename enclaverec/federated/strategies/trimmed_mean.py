"""Coordinate-wise trimmed mean (Yin et al. 2018): per coordinate, drop the beta fraction of
largest and of smallest values and average the rest; table rows over the parties that sent
them (an untouched row is not a vote for zero)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.errors import ConfigError
from enclaverec.federated.robust import trimmed_mean
from enclaverec.federated.strategies.base import Strategy

# With 4 parties, 0.25 trims one value from each end: one liar is always cut.
DEFAULT_BETA = 0.25


@dataclass(frozen=True)
class TrimmedMeanOptions:
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise ConfigError(f"trimmed-mean needs 0 <= beta < 0.5, got {self.beta}")


class TrimmedMean(Strategy):
    name = "trimmed-mean"

    def __init__(self, beta: float = DEFAULT_BETA, **common: Any) -> None:
        super().__init__(**common)
        self.beta = TrimmedMeanOptions(beta).beta

    def aggregate(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        prepared = self.prepare(updates, layout, contributors, norm_bound)
        return trimmed_mean(prepared, layout, self.beta)
