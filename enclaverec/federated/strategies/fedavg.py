"""FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
Decentralized Data"): the global model moves by the sample-weighted mean of the deltas."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from enclaverec.arrays import ModelLayout, ModelUpdate
from enclaverec.federated.strategies.base import Strategy


@dataclass(frozen=True)
class FedAvgOptions:
    """FedAvg has no options of its own (clipping and row normalisation are every
    strategy's)."""


class FedAvg(Strategy):
    name = "fedavg"

    def aggregate(
        self,
        updates: Sequence[ModelUpdate],
        layout: ModelLayout,
        contributors: Sequence[str],
        norm_bound: float | None = None,
    ) -> ModelUpdate:
        return self.average(updates, layout, contributors, norm_bound)
