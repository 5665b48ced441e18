"""Krum and multi-Krum (Blanchard et al. 2017, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent"): keep the ``multi`` updates closest to their
n - f - 2 nearest neighbours and average them by weight. Tolerates f Byzantine parties of
n >= 2f + 3; with fewer the round's combination is refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.errors import ConfigError
from enclaverec.federated.robust import krum_select
from enclaverec.federated.strategies.base import Strategy
from enclaverec.paramservice.combine import weighted_mean


@dataclass(frozen=True)
class KrumOptions:
    f: int = 1
    multi: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.f, bool) or not isinstance(self.f, int) or self.f < 0:
            raise ConfigError(f"krum needs f >= 0 Byzantine parties, got {self.f}")
        if isinstance(self.multi, bool) or not isinstance(self.multi, int) or self.multi < 1:
            raise ConfigError(f"multi-Krum selects at least one update, got {self.multi}")

    def check_parties(self, parties: int) -> None:
        """Krum is defined for n >= 2f + 3 (and multi-Krum selects at most n - f)."""
        if parties < 2 * self.f + 3:
            raise ConfigError(
                f"krum:{self.f} needs at least {2 * self.f + 3} parties, got {parties}"
            )
        if self.multi > parties - self.f:
            raise ConfigError(f"multi-Krum selects at most {parties - self.f}, got {self.multi}")


class Krum(Strategy):
    name = "krum"

    def __init__(self, f: int = 1, multi: int = 1, **common: Any) -> None:
        super().__init__(**common)
        options = KrumOptions(f, multi)
        self.f, self.multi = options.f, options.multi

    def aggregate(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        prepared = self.prepare(updates, layout, contributors, norm_bound)
        chosen = krum_select(prepared, layout, self.f, self.multi)
        return weighted_mean(
            [prepared[i] for i in chosen], layout, row_normalisation=self.row_normalisation
        )
