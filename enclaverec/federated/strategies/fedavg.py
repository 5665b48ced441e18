"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): the global model moves by the sample-weighted mean of the deltas.

Before the mean, an update that points against the others is left out: its cosine with
the sum of the other updates is below ``min_agreement`` (default 0) and below minus the
round's median cosine (``robust.agreeing``). Honest IID updates are kept, so the result is
FedAvg's; a sign-flipped one is left out (docs/federated.md, "What a malicious member can
and cannot do"). ``fedavg:-1`` turns the check off."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.errors import ConfigError
from enclaverec.federated.robust import agreeing
from enclaverec.federated.strategies.base import Strategy
from enclaverec.paramservice.combine import weighted_mean

DEFAULT_MIN_AGREEMENT = 0.0


@dataclass(frozen=True)
class FedAvgOptions:
    """``min_agreement``: an update may be left out only if its cosine with the sum of the
    others is below this (from -1, which keeps every update, to 0)."""

    min_agreement: float = DEFAULT_MIN_AGREEMENT

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_agreement) and -1.0 <= self.min_agreement <= 0.0):
            raise ConfigError(
                f"fedavg's min_agreement must be in [-1, 0], got {self.min_agreement}"
            )


class FedAvg(Strategy):
    name = "fedavg"

    def __init__(self, min_agreement: float | None = None, **common: Any) -> None:
        # None (FedProx, which inherits this class): every update is averaged.
        super().__init__(**common)
        if min_agreement is not None:
            FedAvgOptions(min_agreement)
        self.min_agreement = min_agreement

    def aggregate(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        self.excluded = {}
        if self.min_agreement is None or self.min_agreement <= -1.0:
            return self.average(updates, layout, contributors, norm_bound)
        prepared = self.prepare(updates, layout, contributors, norm_bound)
        kept, cosines = agreeing(prepared, layout, self.min_agreement)
        self.excluded = {
            contributors[i]: cosines[i] for i in range(len(prepared)) if i not in set(kept)
        }
        return weighted_mean(
            [prepared[i] for i in kept], layout, row_normalisation=self.row_normalisation
        )
